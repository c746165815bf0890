"""Seed loading (radiusd.admin.seeds) on PostgreSQL."""
from __future__ import annotations

STATEMENTS = {
    # after rows with explicit ids: move the table's serial sequence past them. {table} is a
    # table name of the models (never user input); %(table)s the same name as a value.
    "reset_sequence": "SELECT setval(pg_get_serial_sequence(%(table)s, 'id'), "
                      "COALESCE((SELECT max(id) FROM {table}), 0) + 1, false) "
                      "WHERE pg_get_serial_sequence(%(table)s, 'id') IS NOT NULL",
}
