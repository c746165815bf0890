"""Housekeeping of open calls: expired reservations and calls nobody reports on any more.

- A reservation made at Access-Accept that no Start took over within `reservation_ttl` stops
  counting at once (the capacity query ignores it) and is deleted here.
- An active call with no Interim or Stop for `stale_call_after` seconds is closed the way an
  Accounting-Off closes it: a CDR with cause 'stale', disconnect time = the last time it was seen,
  charged for the time proven up (radiusd.core.accounting), balance debited.
- On PostgreSQL, the monthly CDR partitions of this month and the next
  `cdr_partitions_ahead` (default 2) exist (radiusd.store.partitions.ensure_cdr_partitions; a
  catalog query when none is missing; a month whose CDRs sit in the default partition is skipped
  and counted, never moved here).

The server runs `sweep` every few seconds; running it in several processes at once is safe (each
call is closed once: its leg key is claimed once in cdr_legs and rows are locked). Its
transactions lock in the store's one order (radiusd.store.sql) and, on PostgreSQL, run under
`lock_timeout`/`statement_timeout` = `store_timeout` (SET LOCAL, once per transaction): a sweep
never holds a lock queue behind a stuck store; what it could not do is done by the next sweep.
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

    Returns {'expired_reservations', 'stale_calls', 'cdr_partitions_skipped'} (partitions created
    are logged).
    """
    skipped = 0
    try:
        skipped = len(ensure_cdr_partitions(sessions, now, settings.cdr_partitions_ahead).skipped)
    except Exception as exc:  # a missing partition only sends CDRs to cdrs_default: keep sweeping
        log.warning("cdr_partitions_failed", error=repr(exc)[:300])
    with sessions() as session, session.begin():
        _bounded(session, settings)
        expired = expire_reservations(session, now)
    cutoff = now - dt.timedelta(seconds=settings.stale_call_after)
    closed = 0
    while True:
        with sessions() as session, session.begin():
            _bounded(session, settings)
            looked_at, written = close_stale(session, cutoff, BATCH, now, settings.accounting_limits)
        closed += written
        if looked_at < BATCH:
            break
    return {"expired_reservations": expired, "stale_calls": closed, "cdr_partitions_skipped": skipped}


def _bounded(session: Session, settings: Settings) -> None:
    """This transaction's lock waits and statements end after `store_timeout` (PostgreSQL)."""
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(sql.statement("postgresql", "timeouts", "local"),
                             {"ms": max(1, int(settings.store_timeout * 1000))})
