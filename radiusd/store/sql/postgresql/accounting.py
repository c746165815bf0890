"""Accounting (radiusd.store.accounting) on PostgreSQL.

A group of packets costs two round trips whatever its size: `BEGIN; EXECUTE load`, then the
writes and the COMMIT joined by `;` (a failing statement skips the rest, COMMIT included). Each is
PREPAREd once per connection and fed one array per column, so PostgreSQL plans it once. A
multi-statement query returns only its last result: `cdrs_noted` keeps the leg keys it wrote in a
session setting (rolled back with the transaction, kept by its COMMIT), `written` reads them back.
Idempotent against other writers: the leg claim and the active-call insert are ON CONFLICT DO
NOTHING, and only legs whose claim is new get a CDR and a debit.
"""
from __future__ import annotations

from sqlalchemy.dialects import postgresql

from radiusd.store.sql import Prepared, sql_type
from radiusd.store.sql.accounting_shared import CALL_FIELDS, CALLS, CDR_FIELDS, CDRS, INSERTED, UPDATED, loads

_KEY = sql_type(CALLS.c.leg_key, postgresql.dialect()) + "[]"
_CDR_COLS = ", ".join(CDR_FIELDS)

_WRITTEN = "radiusd.acct_written"
# Claim each leg key (ON CONFLICT: claimed before, here or by another writer, claims nothing),
# write the CDR of each new claim, debit the orig legs' costs summed per client; the leg keys
# written as a JSON array in the setting `written` reads.
_CDRS = (
    f"WITH v AS (SELECT * FROM {{unnest}} AS v ({_CDR_COLS})), "
    "claim AS (INSERT INTO cdr_legs (leg_key, disconnect_time, cdr_id) "
    "SELECT leg_key, disconnect_time, nextval(pg_get_serial_sequence('cdrs', 'id')) FROM v "
    "ON CONFLICT (leg_key) DO NOTHING RETURNING leg_key, cdr_id), "
    f"written AS (INSERT INTO cdrs (id, {_CDR_COLS}) SELECT claim.cdr_id, "
    + ", ".join(f"v.{n}" for n in CDR_FIELDS)
    + " FROM v JOIN claim ON claim.leg_key = v.leg_key RETURNING leg_key, leg, client_id, cost), "
    "debit AS (UPDATE clients AS c SET balance = c.balance - owed.amount FROM "
    "(SELECT client_id, sum(cost) AS amount FROM written "
    " WHERE leg = 'orig' AND client_id IS NOT NULL AND cost <> 0 GROUP BY client_id) AS owed "
    "WHERE c.id = owed.client_id) "
    f"SELECT set_config('{_WRITTEN}', (SELECT coalesce(json_agg(leg_key), '[]')::text FROM written), false)")

STATEMENTS = {
    **loads(lock=" FOR UPDATE", skip_locked=" SKIP LOCKED", client_lock=" FOR NO KEY UPDATE"),
    # The group's open calls and reservations ($1), locked in id order, and which of its legs ($2)
    # have a CDR already (repeated on every row; the outer join gives one row when none is open).
    "load": Prepared(
        "radiusd_acct_load", (_KEY, _KEY),
        f"WITH calls AS (SELECT {', '.join(CALL_FIELDS)} FROM active_calls WHERE leg_key = ANY($1) "
        "ORDER BY id FOR UPDATE), done AS (SELECT array_agg(leg_key) AS keys FROM cdr_legs WHERE leg_key = ANY($2)) "
        "SELECT done.keys, " + ", ".join(f"calls.{n}" for n in CALL_FIELDS) + " FROM done LEFT JOIN calls ON true"),
    # the clients the group's writes change, in id order, before any of them (as admission does)
    "lock_clients": Prepared("radiusd_acct_lock_clients", ("int[]",),
                             "SELECT id FROM clients WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE"),
    "delete": Prepared("radiusd_acct_delete", ("BIGINT[]",), "DELETE FROM active_calls WHERE id = ANY($1)"),
    "update": Prepared.from_columns(
        "radiusd_acct_update", CALLS, ("id",) + UPDATED,
        "UPDATE active_calls AS a SET " + ", ".join(f"{n} = v.{n}" for n in UPDATED)
        + " FROM {unnest} AS v (id, " + ", ".join(UPDATED) + ") WHERE a.id = v.id"),
    "insert": Prepared.from_columns(
        "radiusd_acct_insert", CALLS, INSERTED,
        f"INSERT INTO active_calls ({', '.join(INSERTED)}) SELECT * FROM {{unnest}} ON CONFLICT (leg_key) DO NOTHING"),
    # A leg whose Stop another writer committed after our load (duplicates through two servers)
    # must not stay open: run as its own statement, it sees that leg's claim.
    "ended": Prepared("radiusd_acct_ended", (_KEY,),
                      "DELETE FROM active_calls AS a USING cdr_legs AS l WHERE l.leg_key = a.leg_key "
                      "AND a.leg_key = ANY($1)"),
    "cdrs_noted": Prepared.from_columns("radiusd_acct_cdrs_noted", CDRS, CDR_FIELDS, _CDRS),
    "written": f"SELECT current_setting('{_WRITTEN}')",
    "begin": "BEGIN",
    "commit": "COMMIT",
    "rollback": "ROLLBACK",
}
