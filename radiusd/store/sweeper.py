"""Housekeeping of open calls: expired reservations and calls nobody reports on any more.

- A reservation that no Start took over within `reservation_ttl` is deleted (admission already
  stops counting it: it deletes the expired reservations of the clients it locks).
- An active call with no Interim or Stop for `stale_call_after` seconds is closed the way an
  Accounting-Off closes it: a CDR with cause 'stale', disconnected when last seen, charged for the
  time proven up (radiusd.core.accounting), balance debited.
- A usage counter (radiusd.core.admission) that differs from a recount of the legs (a bug, a hand
  edit of the store) is recomputed under its client's lock, which makes the recount exact, logged
  (`usage_drift`, one line each) and counted (the server's radiusd_usage_drift_total{kind}).
- On PostgreSQL, the CDR partitions of this month and the next `cdr_partitions_ahead` exist.

Several processes may sweep at once: each call is closed once (its leg key is claimed once in
cdr_legs, rows are locked). The transactions lock in the store's one order (radiusd.store.sql)
and, on PostgreSQL, end after `store_timeout`: what a sweep could not do, the next one does.
"""
from __future__ import annotations

import datetime as dt

import structlog
from sqlalchemy.orm import Session, sessionmaker

from radiusd.config import Settings
from radiusd.store import sql
from radiusd.store.accounting import close_stale, expire_reservations
from radiusd.store.partitions import ensure_cdr_partitions

BATCH = 500
log = structlog.get_logger("radiusd.sweeper")


def sweep(sessions: sessionmaker[Session], now: dt.datetime, settings: Settings) -> dict:
    """Delete expired reservations, close stale calls, keep CDR partitions ahead.

    Returns {'expired_reservations', 'stale_calls', 'cdr_partitions_skipped', 'usage_drift'}
    (partitions created are logged; usage_drift: {'client': n, 'account': n} counters corrected).
    """
    skipped = 0
    try:
        skipped = len(ensure_cdr_partitions(sessions, now, settings.cdr_partitions_ahead).skipped)
    except Exception as exc:  # a missing partition only sends CDRs to cdrs_default: keep sweeping
        log.warning("cdr_partitions_failed", error=repr(exc)[:300])
    with sql.bounded_transaction(sessions, settings.store_timeout_ms) as session:
        expired = expire_reservations(session, now)
    cutoff = now - dt.timedelta(seconds=settings.stale_call_after)
    closed, looked_at = 0, BATCH
    while looked_at >= BATCH:
        with sql.bounded_transaction(sessions, settings.store_timeout_ms) as session:
            looked_at, written = close_stale(session, cutoff, BATCH, now, settings.accounting_limits)
        closed += written
    with sql.bounded_transaction(sessions, settings.store_timeout_ms) as session:
        drift = repair_usage(session)
    return {"expired_reservations": expired, "stale_calls": closed, "cdr_partitions_skipped": skipped,
            "usage_drift": drift}


def repair_usage(session: Session) -> dict[str, int]:
    """Recompute the usage counters that differ from the legs, in the caller's transaction;
    returns how many were corrected, by kind ('client', 'account')."""
    st = sql.statements(session.get_bind(), "usage")
    conn = session.connection()
    drifted: dict[str, list[int]] = {"client": [], "account": []}
    for row in conn.execute(st["drifted"]):
        drifted[row.kind].append(row.id)
    fixed = {"client": 0, "account": 0}
    if not (drifted["client"] or drifted["account"]):
        return fixed
    conn.execute(st["lock"], {"clients": drifted["client"], "accounts": drifted["account"]})
    if drifted["client"]:
        for row in conn.execute(st["clients"], {"ids": drifted["client"]}).all():
            if (row.open_calls, row.money_held) != (row.calls, row.held):
                conn.execute(st["set_client"], {"id": row.id, "calls": row.calls, "held": row.held})
                log.warning("usage_drift", client_id=row.id, open_calls=row.calls, was=row.open_calls,
                            money_held=str(row.held), money_held_was=str(row.money_held))
                fixed["client"] += 1
    if drifted["account"]:
        for row in conn.execute(st["accounts"], {"ids": drifted["account"]}).all():
            if row.open_calls != row.calls:
                conn.execute(st["set_account"], {"id": row.id, "calls": row.calls})
                log.warning("usage_drift", account_id=row.id, open_calls=row.calls, was=row.open_calls)
                fixed["account"] += 1
    return fixed
