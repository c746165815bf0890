"""The sweeper's repair of the usage counters (radiusd.store.sweeper.repair_usage), both dialects
word for word; `lock` is PostgreSQL's row-lock clause ('' on SQLite, whose writers hold the
database lock from BEGIN IMMEDIATE). The counters and what they count: radiusd.core.admission."""
from __future__ import annotations

from sqlalchemy import Integer, String, bindparam, text

from radiusd.models import Money

_COUNTED = "leg = 'orig'"


def _ids():
    return bindparam("ids", expanding=True, type_=Integer())


def usage(lock: str) -> dict:
    return {
        # every counter that differs from a recount of the legs (one snapshot: exact at its moment)
        "drifted": text(
            "SELECT 'client' AS kind, c.id FROM clients AS c LEFT JOIN (SELECT client_id, count(*) AS calls,"
            f" sum(max_cost) AS held FROM active_calls WHERE {_COUNTED} GROUP BY client_id) AS l"
            " ON l.client_id = c.id WHERE c.open_calls <> coalesce(l.calls, 0) OR c.money_held <> coalesce(l.held, 0)"
            " UNION ALL SELECT 'account', a.id FROM accounts AS a LEFT JOIN (SELECT account_id, count(*) AS calls"
            f" FROM active_calls WHERE {_COUNTED} GROUP BY account_id) AS l"
            " ON l.account_id = a.id WHERE a.open_calls <> coalesce(l.calls, 0)")
        .columns(kind=String(), id=Integer()),
        # lock the rows first (clients, then accounts, each in id order, as the triggers take them);
        # a NEW statement then reads, under the locks, the counters as stored and as recounted
        "lock_clients": text(f"SELECT id FROM clients WHERE id IN :ids ORDER BY id{lock}").bindparams(_ids()),
        "lock_accounts": text(f"SELECT id FROM accounts WHERE id IN :ids ORDER BY id{lock}").bindparams(_ids()),
        "clients": text(
            "SELECT c.id, c.open_calls, c.money_held, coalesce(l.calls, 0) AS calls, coalesce(l.held, 0) AS held"
            " FROM clients AS c LEFT JOIN (SELECT client_id, count(*) AS calls, sum(max_cost) AS held"
            f" FROM active_calls WHERE {_COUNTED} AND client_id IN :ids GROUP BY client_id) AS l"
            " ON l.client_id = c.id WHERE c.id IN :ids")
        .bindparams(_ids()).columns(id=Integer(), open_calls=Integer(), money_held=Money(), calls=Integer(),
                                    held=Money()),
        "accounts": text(
            "SELECT a.id, a.open_calls, coalesce(l.calls, 0) AS calls FROM accounts AS a LEFT JOIN"
            f" (SELECT account_id, count(*) AS calls FROM active_calls WHERE {_COUNTED} AND account_id IN :ids"
            " GROUP BY account_id) AS l ON l.account_id = a.id"
            " WHERE a.id IN :ids")
        .bindparams(_ids()).columns(id=Integer(), open_calls=Integer(), calls=Integer()),
        "set_client": text("UPDATE clients SET open_calls = :calls, money_held = :held WHERE id = :id")
        .bindparams(bindparam("calls", type_=Integer()), bindparam("held", type_=Money()),
                    bindparam("id", type_=Integer())),
        "set_account": text("UPDATE accounts SET open_calls = :calls WHERE id = :id")
        .bindparams(bindparam("calls", type_=Integer()), bindparam("id", type_=Integer())),
    }
