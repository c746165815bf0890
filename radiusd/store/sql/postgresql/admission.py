"""Admission (radiusd.store.capacity) on PostgreSQL, prepared once per connection.

A batch with limited clients is two round trips: `begin` + `sync_off` [+ `lock_timeout`] +
`lock` + `expire` + `usage`, then `upsert` + COMMIT; a batch without limits is one (`sync_off` +
`upsert`, one implicit transaction). Usage is read from the counters the triggers keep
(radiusd.store.sql.postgresql.ddl): the same few rows whatever the number of calls in progress.
"""
from __future__ import annotations

from sqlalchemy import String
from sqlalchemy.dialects import postgresql

from radiusd.core.admission import RESERVATION_FIELDS, RESERVED
from radiusd.models import ActiveCall
from radiusd.store.sql import Prepared, sql_type
from radiusd.store.sql.shared import OPEN_LEG, constant

# sent as arrays; the times are computed here from the batch's one `now` ($1) and the ttl ($2)
SENT = tuple(n for n in RESERVATION_FIELDS if n not in ("created_at", "expires_at", "last_seen_at"))
_TIMES = {"created_at": "$1", "expires_at": "$1 + make_interval(secs => $2)", "last_seen_at": "$1"}
_COLUMNS = SENT + tuple(_TIMES) + tuple(RESERVED)


def _type(name: str) -> str:
    """The cast of a JSON value for column `name`: text for strings (assigned, never cut)."""
    column = ActiveCall.__table__.c[name]
    return "text" if isinstance(column.type, String) else sql_type(column, postgresql.dialect())

STATEMENTS = {
    "begin": "BEGIN",
    "commit": "COMMIT",
    "rollback": "ROLLBACK",
    # a reservation moves no money and expires: its commit need not wait for the WAL flush
    "sync_off": "SET LOCAL synchronous_commit TO off",
    "lock_timeout": "SET LOCAL lock_timeout = %s",          # milliseconds
    # every client of the batch in id order (the lock order; the upsert's triggers find them locked)
    "lock": Prepared("radiusd_admit_lock", ("int[]",),
                     "SELECT id FROM clients WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE"),
    # The expired reservations of the limited clients ($1) stop counting (the triggers decrement).
    "expire": Prepared("radiusd_admit_expire", ("int[]", "timestamptz"),
                       "DELETE FROM active_calls WHERE client_id = ANY($1) AND state = 'reserved' "
                       "AND expires_at <= $2"),
    # One result set, each row named by `kind`: 'client': balance and counters of a locked client
    # ($1); 'account': the counter of an account of the batch ($2; none = 0); 'replaced': the open
    # legs whose key ($4) a call of the batch would take ($3: now).
    "usage": Prepared(
        "radiusd_admit_usage", ("int[]", "int[]", "timestamptz", "varchar[]"),
        "SELECT 'client' AS kind, id AS client_id, NULL::int AS account_id, NULL::varchar AS leg_key,"
        " open_calls AS calls, balance AS amount, money_held AS held FROM clients WHERE id = ANY($1)"
        " UNION ALL SELECT 'account', NULL, account_id, NULL, open_calls, NULL, NULL FROM account_usage"
        " WHERE account_id = ANY($2)"
        # (the legs by key alone, then the open-leg test: the unique key is the only index the
        # lookup can take, whatever the statistics; see timeouts.py)
        " UNION ALL SELECT 'replaced', client_id, account_id, leg_key, 1, max_cost, NULL FROM ("
        "SELECT leg_key, leg, state, expires_at, client_id, account_id, max_cost FROM active_calls"
        " WHERE leg_key = ANY($4) OFFSET 0) AS keyed WHERE " + OPEN_LEG.format(now="$3")),
    # rare (after a foreign-key failure: deleted since the snapshot): not worth preparing
    "existing": "SELECT 'client' AS kind, id FROM clients WHERE id = ANY(%(clients)s::int[])"
                " UNION ALL SELECT 'account', id FROM accounts WHERE id = ANY(%(accounts)s::int[])",
    # Every reservation of the batch in ONE statement: $1 now, $2 the ttl in seconds, $3 the rows
    # as one JSON array of arrays (values in the order of SENT): psycopg2 adapts one string, not an
    # array per column (≈ 2 µs of Python per reservation instead of ≈ 14). Text goes into varchar
    # columns by assignment, so a value too long fails instead of being cut.
    "upsert": Prepared(
        "radiusd_admit_upsert", ("timestamptz", "int", "json"),
        "INSERT INTO active_calls (" + ", ".join(_COLUMNS) + ") SELECT "
        + ", ".join([f"(r->>{i})::{_type(n)}" for i, n in enumerate(SENT)] + list(_TIMES.values())
                    + [constant(v) for v in RESERVED.values()])
        + " FROM json_array_elements($3) WITH ORDINALITY AS e (r, n) ORDER BY n"
        " ON CONFLICT (leg_key) DO UPDATE SET " + ", ".join(f"{n} = excluded.{n}" for n in _COLUMNS if n != "leg_key"),
        names=SENT),
}
