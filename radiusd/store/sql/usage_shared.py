"""The sweeper's repair of the usage counters (radiusd.store.sweeper.repair_usage), both dialects
word for word; `lock` is PostgreSQL's row-lock clause ('' on SQLite, whose writers hold the
database lock from BEGIN IMMEDIATE). The counters and what they count: radiusd.core.admission."""
from __future__ import annotations

from sqlalchemy import Integer, String, bindparam, text

from radiusd.models import Money
from radiusd.store.sql.shared import ids

_COUNTED = "leg = 'orig'"


def usage(lock: str) -> dict:
    return {
        # every counter that differs from a recount of the legs (one snapshot: exact at its moment)
        "drifted": text(
            "SELECT 'client' AS kind, c.id FROM clients AS c LEFT JOIN (SELECT client_id, count(*) AS calls,"
            f" sum(max_cost) AS held FROM active_calls WHERE {_COUNTED} GROUP BY client_id) AS l"
            " ON l.client_id = c.id WHERE c.open_calls <> coalesce(l.calls, 0) OR c.money_held <> coalesce(l.held, 0)"
            " UNION ALL SELECT 'account', account_id FROM (SELECT account_id, open_calls AS n FROM account_usage"
            f" UNION ALL SELECT account_id, -count(*) FROM active_calls WHERE {_COUNTED} AND account_id IS NOT NULL"
            " GROUP BY account_id) AS d GROUP BY account_id HAVING sum(n) <> 0")
        .columns(kind=String(), id=Integer()),
        # Lock the clients first (in id order, as the triggers do: a client's lock guards its
        # accounts' counters too); NEW statements then read, under the locks, the counters as
        # stored and as recounted.
        "lock": text("SELECT id FROM clients WHERE id IN :clients OR id IN (SELECT client_id FROM accounts"
                     f" WHERE id IN :accounts) ORDER BY id{lock}")
        .bindparams(ids("clients"), ids("accounts")),
        "clients": text(
            "SELECT c.id, c.open_calls, c.money_held, coalesce(l.calls, 0) AS calls, coalesce(l.held, 0) AS held"
            " FROM clients AS c LEFT JOIN (SELECT client_id, count(*) AS calls, sum(max_cost) AS held"
            f" FROM active_calls WHERE {_COUNTED} AND client_id IN :ids GROUP BY client_id) AS l"
            " ON l.client_id = c.id WHERE c.id IN :ids")
        .bindparams(ids("ids")).columns(id=Integer(), open_calls=Integer(), money_held=Money(), calls=Integer(),
                                    held=Money()),
        "accounts": text(
            "SELECT account_id AS id, sum(stored) AS open_calls, sum(counted) AS calls FROM ("
            "SELECT account_id, open_calls AS stored, 0 AS counted FROM account_usage WHERE account_id IN :ids"
            f" UNION ALL SELECT account_id, 0, count(*) FROM active_calls WHERE {_COUNTED} AND account_id IN :ids"
            " GROUP BY account_id) AS d GROUP BY account_id")
        .bindparams(ids("ids")).columns(id=Integer(), open_calls=Integer(), calls=Integer()),
        "set_client": text("UPDATE clients SET open_calls = :calls, money_held = :held WHERE id = :id")
        .bindparams(bindparam("held", type_=Money())),   # (integers need no conversion)
        "set_account": text("INSERT INTO account_usage (account_id, open_calls) VALUES (:id, :calls)"
                            " ON CONFLICT (account_id) DO UPDATE SET open_calls = excluded.open_calls"),
    }
