"""The usage triggers every SQLite store has (see radiusd.store.sql.postgresql.ddl), run by
radiusd.db when it creates `active_calls`. Row-level: SQLite has no transition tables, and its
writers are serialised (BEGIN IMMEDIATE), so there are no row locks to order. Money is integer
micro-units (radiusd.models.Money), so the sums stay exact.
"""
from __future__ import annotations

_CHANGED = ("OLD.leg IS NOT NEW.leg OR OLD.client_id IS NOT NEW.client_id"
            " OR OLD.account_id IS NOT NEW.account_id OR OLD.max_cost IS NOT NEW.max_cost")


def _add(row: str, sign: str) -> str:
    return (f"UPDATE clients SET open_calls = open_calls {sign} 1, money_held = money_held {sign} {row}.max_cost"
            f" WHERE id = {row}.client_id AND {row}.leg = 'orig';\n"
            f"    INSERT OR IGNORE INTO account_usage (account_id, open_calls) SELECT {row}.account_id, 0"
            f" WHERE {row}.account_id IS NOT NULL AND {row}.leg = 'orig';\n"
            f"    UPDATE account_usage SET open_calls = open_calls {sign} 1"
            f" WHERE account_id = {row}.account_id AND {row}.leg = 'orig';\n")


STATEMENTS = {
    # one statement each (sqlite3 runs one at a time)
    "usage_triggers": [
        "CREATE TRIGGER IF NOT EXISTS radiusd_usage_insert AFTER INSERT ON active_calls WHEN NEW.leg = 'orig' BEGIN\n"
        f"    {_add('NEW', '+')}END;",
        "CREATE TRIGGER IF NOT EXISTS radiusd_usage_delete AFTER DELETE ON active_calls WHEN OLD.leg = 'orig' BEGIN\n"
        f"    {_add('OLD', '-')}END;",
        "CREATE TRIGGER IF NOT EXISTS radiusd_usage_update AFTER UPDATE ON active_calls"
        f" WHEN (OLD.leg = 'orig' OR NEW.leg = 'orig') AND ({_CHANGED}) BEGIN\n"
        f"    {_add('OLD', '-')}    {_add('NEW', '+')}END;",
    ],
}
