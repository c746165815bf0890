"""How long a SQLite writer waits for the database lock, set on every checkout
(radiusd.store.sql.limit_sqlite_waits): "database is locked" after `store_timeout` instead of the
driver's 30 s, so the writer spools and admission answers code 8 as on a stuck PostgreSQL."""
from __future__ import annotations

STATEMENTS = {
    "busy": "PRAGMA busy_timeout = {ms:d}",   # PRAGMA takes no bound parameters: an int, formatted
}
