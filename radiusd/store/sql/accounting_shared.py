"""Accounting statements (radiusd.store.accounting) both dialects share: typed `text()`, the
models' column types converting values (money as integer micro-units and naive UTC times on
SQLite). `lock`/`client_lock`: PostgreSQL's row locks ('' on SQLite, whose BEGIN IMMEDIATE locks all)."""
from __future__ import annotations

from sqlalchemy import Integer, String, bindparam, text

from radiusd.models import ActiveCall, Cdr, CdrLeg, Client
from radiusd.store.sql.shared import ids

CALLS = ActiveCall.__table__
CDRS = Cdr.__table__
CALL_FIELDS = tuple(c.name for c in CALLS.c)                       # a loaded row, in this order
CDR_FIELDS = tuple(c.name for c in CDRS.c if c.name not in ("id", "created_at"))
# what a Start/Interim changes in a loaded row (a reservation taken over, a call refreshed)
UPDATED = ("leg_key", "state", "acct_session_id", "caller", "expires_at", "started_at", "last_seen_at",
           "session_seconds", "setup_at", "flags")
INSERTED = tuple(n for n in CALL_FIELDS if n != "id")


def _typed(sql: str, table, names):
    return text(sql).bindparams(*[bindparam(n, type_=table.c[n].type) for n in names])


def _select(where: str, lock: str, *params):
    stmt = text(f"SELECT {', '.join(CALL_FIELDS)} FROM active_calls WHERE {where} ORDER BY id{lock}")
    return stmt.bindparams(*params).columns(*CALLS.c)


def loads(lock: str, skip_locked: str, client_lock: str) -> dict:
    """The rare loads (Accounting-On/Off, sweeper, removal by hand) and the plain writes."""
    keys = bindparam("keys", expanding=True, type_=String())
    now = bindparam("now", type_=CALLS.c.expires_at.type)
    return {
        "legs": _select("leg_key IN :keys", lock, keys),
        "nas": _select("nas_id = :nas_id", lock),
        "row": _select("id = :id", lock),
        # calls nobody reported on since :cutoff; another sweeper's rows are skipped, not awaited
        "stale": _select("state = 'active' AND last_seen_at < :cutoff", f" LIMIT :limit{lock}{skip_locked}",
                         bindparam("cutoff", type_=CALLS.c.last_seen_at.type)),
        "closed": text("SELECT leg_key FROM cdr_legs WHERE leg_key IN :keys").bindparams(keys),
        # Access-Accept reservations no Start took over in time: first their clients' rows, in id
        # order (the usage triggers update them; locked in any other order, admission — which
        # locks its clients first — and this DELETE would each hold what the other waits for),
        "expired_clients": text("SELECT id FROM clients WHERE id IN (SELECT client_id FROM active_calls"
                                f" WHERE state = 'reserved' AND expires_at <= :now) ORDER BY id{client_lock}")
        .bindparams(now),
        # then their reservations, only those of the clients locked
        "expired": text("DELETE FROM active_calls WHERE state = 'reserved' AND expires_at <= :now"
                        " AND (client_id IN :clients OR client_id IS NULL)")
        .bindparams(now, ids("clients")),
    }


def writes() -> dict:
    """Row-at-a-time writes (SQLite: statements are local calls, nothing to batch)."""
    return {
        "delete": text("DELETE FROM active_calls WHERE id = :id").bindparams(bindparam("id", type_=Integer())),
        "update": _typed("UPDATE active_calls SET " + ", ".join(f"{n} = :{n}" for n in UPDATED) + " WHERE id = :id",
                         CALLS, UPDATED + ("id",)),
        "insert": _typed(f"INSERT INTO active_calls ({', '.join(INSERTED)}) VALUES "
                         f"({', '.join(':' + n for n in INSERTED)}) ON CONFLICT (leg_key) DO NOTHING", CALLS, INSERTED),
        # claim the leg key first: a claimed key (a repeated Stop) writes nothing
        "claim": _typed("INSERT INTO cdr_legs (leg_key, disconnect_time) VALUES (:leg_key, :disconnect_time) "
                        "ON CONFLICT (leg_key) DO NOTHING", CdrLeg.__table__, ("leg_key", "disconnect_time")),
        "cdr": _typed(f"INSERT INTO cdrs ({', '.join(CDR_FIELDS)}) VALUES ({', '.join(':' + n for n in CDR_FIELDS)})",
                      CDRS, CDR_FIELDS),
        "link": _typed("UPDATE cdr_legs SET cdr_id = :cdr_id WHERE leg_key = :leg_key", CdrLeg.__table__,
                       ("cdr_id", "leg_key")),
        # in SQL, so concurrent debits never lose one
        "debit": text("UPDATE clients SET balance = balance - :cost WHERE id = :client_id").bindparams(
            bindparam("cost", type_=Client.__table__.c.balance.type), bindparam("client_id", type_=Integer())),
    }
