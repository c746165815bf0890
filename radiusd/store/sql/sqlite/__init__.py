"""SQLite statements, one module per area (see radiusd.store.sql)."""
