"""The store's operations per request: capacity reservations, accounting, the spool, snapshot loading."""
