"""Admission (radiusd.store.capacity) on SQLite: the transaction begins with BEGIN IMMEDIATE
(radiusd.db), which serialises writers on the whole database, so no row locks. Usage is read from
the counters the triggers keep (radiusd.store.sql.sqlite.ddl)."""
from __future__ import annotations

from sqlalchemy import Integer, String, bindparam, text

from radiusd.core.admission import RESERVATION_FIELDS, RESERVED
from radiusd.models import ActiveCall, Money, UTCDateTime
from radiusd.store.sql.shared import OPEN_LEG, constant, ids

_COLUMNS = RESERVATION_FIELDS + tuple(RESERVED)


STATEMENTS = {
    # the expired reservations of the limited clients stop counting (the triggers decrement)
    "expire": text("DELETE FROM active_calls WHERE client_id IN :clients AND state = 'reserved'"
                   " AND expires_at <= :now")
    .bindparams(ids("clients"), bindparam("now", type_=UTCDateTime())),
    # the rows of PostgreSQL's `usage`: the limited clients' counters, the batch's accounts'
    # counters (no row: 0), the open legs whose key a call of the batch would take
    "usage": text(
        "SELECT 'client' AS kind, id AS client_id, NULL AS account_id, NULL AS leg_key, open_calls AS calls,"
        " balance AS amount, money_held AS held FROM clients WHERE id IN :clients"
        " UNION ALL SELECT 'account', NULL, account_id, NULL, open_calls, NULL, NULL FROM account_usage"
        " WHERE account_id IN :accounts UNION ALL SELECT 'replaced', client_id, account_id, leg_key, 1,"
        " max_cost, NULL FROM active_calls WHERE leg_key IN :keys AND " + OPEN_LEG.format(now=":now"))
    .bindparams(ids("clients"), ids("accounts"), bindparam("keys", expanding=True, type_=String()),
                bindparam("now", type_=UTCDateTime()))
    .columns(kind=String(), client_id=Integer(), account_id=Integer(), leg_key=String(), calls=Integer(),
             amount=Money(), held=Money()),
    "existing": text("SELECT 'client' AS kind, id FROM clients WHERE id IN :clients"
                     " UNION ALL SELECT 'account', id FROM accounts WHERE id IN :accounts")
    .bindparams(ids("clients"), ids("accounts")),
    "upsert": text(
        "INSERT INTO active_calls (" + ", ".join(_COLUMNS) + ") VALUES ("
        + ", ".join([f":{n}" for n in RESERVATION_FIELDS] + [constant(v) for v in RESERVED.values()]) + ")"
        " ON CONFLICT (leg_key) DO UPDATE SET " + ", ".join(f"{n} = excluded.{n}" for n in _COLUMNS if n != "leg_key"))
    .bindparams(*(bindparam(n, type_=ActiveCall.__table__.c[n].type) for n in RESERVATION_FIELDS)),
}
