"""Group commit: a group of accounting records applied in one store transaction.

The accounting writer (radiusd.pipeline.accounting_writer) hands a group to `GroupCommit.commit`
and gets back the records refused for data reasons, or `StoreUnavailable` when the store cannot
take the group now (it then spools). What happens in here:
- **One transaction per group**: on PostgreSQL two round trips (`apply_group`) on a connection
  kept between groups (a pool checkout pings: a round trip); a broken one is replaced once before
  the store counts as away. A group that fails otherwise is redone with a SAVEPOINT per record,
  so that only the records at fault are refused.
- **Store away or slow** (connection lost, database locked, past `store_timeout`: lock_timeout/
  statement_timeout, SQLSTATE 55P03/57014, or SQLite's busy_timeout): `StoreUnavailable`. On
  PostgreSQL a group's statements together get `store_timeout` too (`GroupDeadline`). After a
  timeout (`stuck`) the caller probes with a short lock wait, so that arrivals are not held up
  behind it. Deadlocks (40P01) and serialization failures (40001) are retried
  (`_CONFLICT_RETRIES`, counted `conflicts`), never taken for an outage.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import random
import threading
import time
from typing import Callable

import structlog
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from radiusd.config import Settings
from radiusd.core.facts import AcctFacts
from radiusd.core.snapshot import Snapshot
from radiusd.store import sql
from radiusd.store.accounting import apply, apply_group

log = structlog.get_logger("radiusd.accounting_writer")

_CONFLICT_RETRIES = 6
_CONFLICT_PAUSE = 0.02      # seconds; the n-th retry waits a random 0..n times this
_PROBE_LOCK_MS = 200        # lock wait of a probing group after the store was found stuck
Refused = list[tuple[AcctFacts, str]]   # records refused for data reasons, with the error


class GroupDeadline:
    """Cancels a group's store work that runs past `seconds` in all. PostgreSQL applies
    statement_timeout and lock_timeout to each statement of a query string, and a group sends
    several, so a group meeting two held locks waits twice `store_timeout` (seen in the chaos
    suite's table lock: answers 3 s late, dropped). One thread
    watches the group in hand and sends PostgreSQL's cancel request (which ends with SQLSTATE
    57014, a timeout: the group is spooled)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._armed: tuple | None = None   # (psycopg2 connection, monotonic deadline)
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._sleeping = False   # the watcher waits for a group (not for a deadline)

    @contextlib.contextmanager
    def armed(self, driver_connection):
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="accounting-deadline", daemon=True)
                self._thread.start()
            self._armed = (driver_connection, time.monotonic() + self.seconds)
            if self._sleeping:   # else it wakes at an earlier deadline and finds this one
                self._cond.notify()
        try:
            yield
        finally:
            with self._cond:
                self._armed = None

    def _watch(self) -> None:
        with self._cond:
            while True:
                if self._armed is None:
                    self._sleeping = True
                    self._cond.wait()
                    self._sleeping = False
                    continue
                connection, deadline = self._armed
                left = deadline - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                self._armed = None
                try:
                    connection.cancel()
                except Exception as exc:  # the connection is gone already: its own error ends the group
                    log.debug("accounting_cancel_failed", error=repr(exc))


class StoreUnavailable(Exception):
    """The store could not take the group: spool it."""


def is_unavailable(exc: BaseException) -> bool:
    """Errors that say the store is away (retry later), not that the record is bad."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError,
                            ConnectionError, sa_exc.DisconnectionError))


class GroupCommit:
    """Commits groups of accounting records for one writer thread (not thread-safe).

    `count(event)` is told of "timeouts", "conflicts" and "group_retries"; `on_anomaly(kind)` of
    every anomaly of a CDR written (radiusd.core.sanity)."""

    def __init__(self, sessions: sessionmaker[Session], snapshot_getter: Callable[[], Snapshot],
                 settings: Settings, count: Callable[[str], None]):
        self.sessions = sessions
        self.snapshot_getter = snapshot_getter
        self.count = count
        engine = sql.engine_of(sessions)
        self._engine = engine if engine.dialect.name == "postgresql" else None
        sql.limit_sqlite_waits(engine, settings.store_timeout)   # SQLite: "database is locked" after it
        self._connection = None   # PostgreSQL: kept between groups (a pool checkout pings: a round trip)
        self.limits = settings.accounting_limits   # accounting sanity bounds (radiusd.core.sanity)
        self.on_anomaly: Callable[[str], None] | None = None
        self.timeout_ms = settings.store_timeout_ms
        self._deadline = GroupDeadline(settings.store_timeout) if self._engine is not None else None
        self.stuck = False   # the last failure was a timeout: the next probe waits briefly for locks

    def commit(self, records: list[AcctFacts], probe: bool = False) -> Refused:
        """Commit records: the group in one go; if that fails, again with a savepoint per record.
        Returns the records refused for data reasons; raises StoreUnavailable. `probe`: wait
        only `_PROBE_LOCK_MS` for a lock (PostgreSQL; after the store was found stuck)."""
        reconnected = False
        for attempt in itertools.count(1):
            try:
                refused = self._transaction(records, savepoints=False, probe=probe)
                break
            except StoreUnavailable as exc:
                # a deadlock / serialization failure with another writer is no outage: try again
                conflict = sql.pgcode(exc.__cause__) in sql.CONFLICT_CODES
                if sql.is_timeout(exc.__cause__):
                    # a lock held by someone else or a stalled server: waiting again would only
                    # hold up every record behind this group; spool, and probe later
                    self.count("timeouts")
                    self.stuck = True
                    raise
                if not conflict and self._connection is not None and not reconnected:
                    # our kept connection broke (store restarted, idle timeout): the store is only
                    # away if a new connection (pinged at checkout) fails too
                    self.close()
                    reconnected = True
                    continue
                if not conflict or attempt >= _CONFLICT_RETRIES:
                    raise
                self.count("conflicts")
                log.info("accounting_group_conflict_retry", attempt=attempt, error=str(exc)[:200])
                time.sleep(random.uniform(0, _CONFLICT_PAUSE * attempt))   # let the other one finish
            except Exception as exc:  # a record the fast path can't take: find it with savepoints
                log.info("accounting_group_retry_with_savepoints", error=repr(exc)[:300], records=len(records))
                self.count("group_retries")
                refused = self._savepoints(records)
                break
        self.stuck = False   # the store took the group
        return refused

    def close(self) -> None:
        """Drop the kept connection."""
        connection, self._connection = self._connection, None
        sql.drop_connection(connection)

    def _savepoints(self, records: list[AcctFacts]) -> Refused:
        try:
            return self._transaction(records)
        except StoreUnavailable:
            raise
        except Exception as exc:
            if len(records) == 1:
                return [(records[0], repr(exc))]
            # the group failed at commit: find the record(s) to blame, one by one
            log.warning("accounting_group_failed", error=repr(exc), records=len(records))
            return [bad for facts in records for bad in self._savepoints([facts])]

    def _transaction(self, records: list[AcctFacts], savepoints: bool = True, probe: bool = False) -> Refused:
        """Apply records in one transaction; returns those refused for data reasons.

        Without savepoints (the fast path, `apply_group`) any error fails the whole group; with
        them a record that fails is rolled back alone and returned as refused."""
        try:
            snapshot = self.snapshot_getter()
        except Exception as exc:  # no snapshot yet (store down at startup): not the records' fault
            raise StoreUnavailable(f"no snapshot: {exc!r}") from exc
        args = (snapshot, dt.datetime.now(dt.timezone.utc), self.limits, self.on_anomaly)
        refused: Refused = []
        try:
            if not savepoints and self._engine is not None:
                # PostgreSQL: on the kept connection, the group begins with its load and commits with its write
                with self._session() as session, self._deadline.armed(sql.driver_connection(self._connection)):
                    apply_group(session, records, *args, commit=True, lock_ms=_PROBE_LOCK_MS if probe else None)
                return refused
            with sql.bounded_transaction(self.sessions, self.timeout_ms) as session, self._group_deadline(session):
                if not savepoints:
                    apply_group(session, records, *args)
                for facts in records if savepoints else ():
                    try:
                        with session.begin_nested():
                            apply(session, facts, *args)
                    except Exception as exc:
                        if is_unavailable(exc):
                            raise
                        refused.append((facts, repr(exc)))
        except Exception as exc:
            if is_unavailable(exc):
                raise StoreUnavailable(str(exc)) from exc
            raise
        return refused

    @contextlib.contextmanager
    def _group_deadline(self, session: Session):
        """On a pooled PostgreSQL connection: the whole transaction under the group deadline."""
        if self._engine is None:
            yield
            return
        with self._deadline.armed(sql.driver_connection(session.connection())):
            yield

    def _session(self) -> Session:
        kept = self._connection
        if kept is None or kept.closed or kept.invalidated or kept.in_transaction():
            # (a transaction left open by a failure we did not see end: start clean)
            self.close()
            self._connection = sql.kept_connection(self._engine, self.timeout_ms)
        return Session(bind=self._connection, expire_on_commit=False)
