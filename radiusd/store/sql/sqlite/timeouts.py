"""Time limits on SQLite: how long a writer waits for the database lock (BEGIN IMMEDIATE).

The server's engine sets it on every checkout (radiusd.store.sql.limit_sqlite_waits), so the
accounting writer and admission see "database is locked" after `store_timeout` instead of the
driver's 30 s, and spool / answer code 8 like on a stuck PostgreSQL.
"""
from __future__ import annotations

STATEMENTS = {
    "busy": "PRAGMA busy_timeout = {ms:d}",   # PRAGMA takes no bound parameters: an int, formatted
}
