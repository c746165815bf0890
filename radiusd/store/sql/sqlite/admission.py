"""Admission (radiusd.store.capacity) on SQLite: the transaction begins with BEGIN IMMEDIATE
(radiusd.db), which serialises writers on the whole database, so no row locks."""
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
    "balances": text("SELECT id AS client_id, balance FROM clients WHERE id IN :clients ORDER BY id")
    .bindparams(_ids("clients")).columns(client_id=Integer(), balance=Money()),
    # open legs per (client, account) that no call of the batch replaces
    "open": text("SELECT client_id, account_id, count(*) AS calls, coalesce(sum(max_cost), 0) AS exposure"
                 " FROM active_calls WHERE client_id IN :clients AND leg_key NOT IN :keys AND " + _OPEN
                 + " GROUP BY client_id, account_id")
    .bindparams(_ids("clients"), _keys(), bindparam("now", type_=UTCDateTime()))
    .columns(client_id=Integer(), account_id=Integer(), calls=Integer(), exposure=Money()),
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
