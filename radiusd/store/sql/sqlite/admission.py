"""Admission (radiusd.store.capacity) on SQLite: the transaction begins with BEGIN IMMEDIATE
(radiusd.db), which serialises writers on the whole database, so no row locks. Usage is read from
the counters the triggers keep (radiusd.store.sql.sqlite.ddl)."""
from __future__ import annotations

from sqlalchemy import Integer, String, bindparam, text

from radiusd.core.admission import RESERVATION_FIELDS, RESERVED
from radiusd.models import ActiveCall, Money, UTCDateTime
from radiusd.store.sql.shared import OPEN_LEG, constant

_OPEN = OPEN_LEG.format(now=":now")
_CONSTANT = tuple(RESERVED)
_UPDATED = [n for n in RESERVATION_FIELDS + _CONSTANT if n != "leg_key"]
_COLUMNS = ActiveCall.__table__.c


def _ids(name: str):
    return bindparam(name, expanding=True, type_=Integer())


def _keys():
    return bindparam("keys", expanding=True, type_=String())


STATEMENTS = {
    # the limited clients' balances and usage counters (radiusd.store.sql.sqlite.ddl)
    "clients": text("SELECT id AS client_id, balance, open_calls, money_held FROM clients WHERE id IN :clients"
                    " ORDER BY id")
    .bindparams(_ids("clients")).columns(client_id=Integer(), balance=Money(), open_calls=Integer(),
                                         money_held=Money()),
    # the counters of the batch's accounts (no row: 0)
    "accounts": text("SELECT account_id, open_calls FROM account_usage WHERE account_id IN :accounts")
    .bindparams(_ids("accounts")).columns(account_id=Integer(), open_calls=Integer()),
    # the expired reservations of the limited clients stop counting (the triggers decrement)
    "expire": text("DELETE FROM active_calls WHERE client_id IN :clients AND state = 'reserved'"
                   " AND expires_at <= :now")
    .bindparams(_ids("clients"), bindparam("now", type_=UTCDateTime())),
    # open legs whose key a call of the batch would take
    "replaced": text("SELECT leg_key, client_id, account_id, max_cost FROM active_calls"
                     " WHERE leg_key IN :keys AND " + _OPEN)
    .bindparams(_keys(), bindparam("now", type_=UTCDateTime()))
    .columns(leg_key=String(), client_id=Integer(), account_id=Integer(), max_cost=Money()),
    "existing_clients": text("SELECT id FROM clients WHERE id IN :ids").bindparams(_ids("ids")),
    "existing_accounts": text("SELECT id FROM accounts WHERE id IN :ids").bindparams(_ids("ids")),
    "upsert": text(
        "INSERT INTO active_calls (" + ", ".join(RESERVATION_FIELDS + _CONSTANT) + ") VALUES ("
        + ", ".join([f":{n}" for n in RESERVATION_FIELDS] + [constant(RESERVED[n]) for n in _CONSTANT]) + ")"
        " ON CONFLICT (leg_key) DO UPDATE SET " + ", ".join(f"{n} = excluded.{n}" for n in _UPDATED))
    .bindparams(*(bindparam(n, type_=_COLUMNS[n].type) for n in RESERVATION_FIELDS)),
}
