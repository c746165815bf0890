"""Admission (radiusd.store.capacity) on PostgreSQL: prepared once per connection, fed arrays.

A batch with limited clients is two round trips: `begin` + `sync_off` [+ `lock_timeout`] +
`lock` + `usage`, then `upsert` + COMMIT; a batch without limits is one (`sync_off` + `upsert`,
one implicit transaction).
"""
from __future__ import annotations

from radiusd.core.admission import RESERVATION_FIELDS, RESERVED
from radiusd.models import ActiveCall
from radiusd.store.sql import Prepared
from radiusd.store.sql.shared import OPEN_LEG, constant

_OPEN = OPEN_LEG.format(now="$3")
_CONSTANT = tuple(RESERVED)
_UPDATED = [n for n in RESERVATION_FIELDS + _CONSTANT if n != "leg_key"]

STATEMENTS = {
    "begin": "BEGIN",
    "commit": "COMMIT",
    "rollback": "ROLLBACK",
    # a reservation moves no money and expires: its commit need not wait for the WAL flush
    "sync_off": "SET LOCAL synchronous_commit TO off",
    "lock_timeout": "SET LOCAL lock_timeout = %s",          # milliseconds
    # always in id order: two batches lock in the same order and cannot deadlock each other
    "lock": Prepared("radiusd_admit_lock", ("int[]",),
                     "SELECT id FROM clients WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE"),
    # One result set (one round trip), each row named by `kind`: 'balance' of a locked client;
    # 'open' legs per (client, account) that no call of the batch replaces; 'replaced': the open
    # legs whose key ($2) a call of the batch would take.
    "usage": Prepared(
        "radiusd_admit_usage", ("int[]", "varchar[]", "timestamptz"),
        "SELECT 'balance' AS kind, id AS client_id, NULL::int AS account_id, NULL::varchar AS leg_key,"
        " 0::bigint AS calls, balance AS amount FROM clients WHERE id = ANY($1)"
        " UNION ALL SELECT 'open', client_id, account_id, NULL, count(*), coalesce(sum(max_cost), 0)"
        " FROM active_calls WHERE client_id = ANY($1) AND NOT (leg_key = ANY($2)) AND " + _OPEN
        + " GROUP BY client_id, account_id"
        " UNION ALL SELECT 'replaced', client_id, account_id, leg_key, 1, max_cost FROM active_calls"
        " WHERE leg_key = ANY($2) AND " + _OPEN),
    # rare (after a foreign-key failure: deleted since the snapshot): not worth preparing
    "existing": "SELECT 'client' AS kind, id FROM clients WHERE id = ANY(%(clients)s::int[])"
                " UNION ALL SELECT 'account', id FROM accounts WHERE id = ANY(%(accounts)s::int[])",
    # every reservation of the batch in ONE statement, one array per column
    "upsert": Prepared.from_columns(
        "radiusd_admit_upsert", ActiveCall.__table__, RESERVATION_FIELDS,
        "INSERT INTO active_calls (" + ", ".join(RESERVATION_FIELDS + _CONSTANT) + ") "
        "SELECT v.*, " + ", ".join(constant(RESERVED[n]) for n in _CONSTANT)
        + " FROM {unnest} AS v (" + ", ".join(RESERVATION_FIELDS) + ")"
        " ON CONFLICT (leg_key) DO UPDATE SET " + ", ".join(f"{n} = excluded.{n}" for n in _UPDATED)),
}
