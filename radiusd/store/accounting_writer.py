"""The accounting writer: group commit to the store, the spool when the store is away, replay.

The RADIUS edge calls `submit(facts, on_done)` from any thread and answers the switch only after
`on_done(True)`; `on_done(False)` means the record is stored nowhere, so the edge must not answer
(the switch retransmits) — RFC 2866 §4.1. One writer thread owns every accounting write:
- **Group commit**: what queued up while the last group was written (up to `batch_max`; when
  idle, what arrives within `linger` of the first) is applied in ONE transaction, each record
  acknowledged after the COMMIT (one fsync for the group). On PostgreSQL two round trips
  (`apply_group`) on a connection the writer keeps; a broken one is replaced once before the
  store counts as away. A group that fails otherwise is redone with a SAVEPOINT per record; a
  record refused for data reasons goes to the spool's dead-letter file (fsync'ed), then is
  acknowledged (not if even that fails).
- **Store away or slow** (connection lost, database locked, past `store_timeout`: lock_timeout/
  statement_timeout, SQLSTATE 55P03/57014, or SQLite's busy_timeout): the group is appended to
  the spool journal (fsync) and acknowledged; new records follow it there, order kept, until the
  replay has emptied it. On PostgreSQL a group's statements together get `store_timeout` too
  (`GroupDeadline`). After a timeout the replay probes with a short lock wait, so that
  arrivals are not held up behind it. Deadlocks (40P01) and serialization failures (40001) are
  retried (`_CONFLICT_RETRIES`, counted `conflicts`), never taken for an outage.
- **Bounded queue**: past `settings.accounting_queue` records `submit` refuses at once (counted
  `queue_full`); once it is half full, a NAS holding its share (`accounting_queue / (n + 1)`, n =
  NAS waiting, itself included) is refused too (`nas_share`): one switch's flood cannot starve
  the others.
  `lag()`: the age of the oldest record not yet acknowledged (/health "degraded" past a bound).
- **Replay**: every `retry_interval` while the spool is not empty its journal, renamed to a work
  file, is applied in order in groups, new arrivals spooled and acknowledged in between. The work
  file is deleted after its last group commits; replayed again after a crash, it duplicates
  nothing (every event is idempotent per leg key). Spools in sub-directories (`worker-<i>`, left
  by a run with more workers) whose flock nobody holds are replayed once ours is empty.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as dt
import itertools
import random
import threading
import time
from pathlib import Path
from typing import Callable

import structlog
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from radiusd.config import Settings
from radiusd.core.facts import AcctFacts
from radiusd.core.round_robin import fair_share
from radiusd.core.snapshot import Snapshot
from radiusd.store import sql
from radiusd.store.accounting import apply, apply_group
from radiusd.store.spool import JOURNAL, WORK, Spool, SpoolBusy

log = structlog.get_logger("radiusd.accounting_writer")

OnDone = Callable[[bool], None]
_CONFLICT_RETRIES = 6
_CONFLICT_PAUSE = 0.02      # seconds; the n-th retry waits a random 0..n times this
_PROBE_LOCK_MS = 200        # lock wait of a replay group after the store was found stuck
SPOOL_RETRY = 0.2           # seconds between two tries to take a spool we do not hold yet


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


def is_timeout(exc: BaseException | None) -> bool:
    """The store was too slow: a lock wait past lock_timeout (55P03) or a statement past
    statement_timeout (57014). The connection itself is fine."""
    return sql.pgcode(exc) in sql.TIMEOUT_CODES


def is_unavailable(exc: BaseException) -> bool:
    """Errors that say the store is away (retry later), not that the record is bad."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError,
                            ConnectionError, sa_exc.DisconnectionError))


class AccountingWriter:
    def __init__(self, sessions: sessionmaker[Session], snapshot_getter: Callable[[], Snapshot],
                 settings: Settings, *, batch_max: int = 200, linger: float = 0.003,
                 retry_interval: float = 1.0, replay_batch: int = 500, replay_pause: float = 0.0,
                 spool_path: str | None = None):
        self.sessions = sessions
        self.snapshot_getter = snapshot_getter
        with sessions() as probe:  # (no connection is made: only the bind is read)
            engine = probe.get_bind()
        self._engine = engine if engine.dialect.name == "postgresql" else None
        sql.limit_sqlite_waits(engine, settings.store_timeout)   # SQLite: "database is locked" after it
        self._connection = None   # PostgreSQL: kept between groups (a pool checkout pings: a round trip)
        self.limits = settings.accounting_limits   # accounting sanity bounds (radiusd.core.sanity)
        self.on_anomaly: Callable[[str], None] | None = None   # the server counts CDR anomalies
        self.timeout_ms = settings.store_timeout_ms
        self._deadline = GroupDeadline(settings.store_timeout) if self._engine is not None else None
        self.queue_max = settings.accounting_queue
        self.batch_max = batch_max
        self.linger = linger
        self.retry_interval = retry_interval
        self.replay_batch = replay_batch
        self.replay_pause = replay_pause  # seconds between replay groups: spares a store just back
        # one spool directory per process (several server processes: give each its own)
        self.spool_path = spool_path or settings.spool_path
        self.spool: Spool | None = None
        self._next_spool_try = 0.0
        # submit() runs on the event loop: a deque append, and a wake-up only when the writer is
        # idle (a queue.Queue would wake the writer thread for every record it is lingering for).
        # Items: (facts, on_done, time.monotonic() at submit). Records of each NAS queued and taken
        # are counted by either side in its own tally, so no lock is needed.
        self._queue: collections.deque = collections.deque()
        self._queued: collections.Counter = collections.Counter()   # NAS id -> queued (submit's thread)
        self._taken: collections.Counter = collections.Counter()    # NAS id -> taken (writer thread)
        self._working_since: float | None = None   # submit time of the oldest record being written
        self._wake = threading.Event()
        self._idle = False
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._next_replay = 0.0
        self._offsets: dict[str, int] = {}  # spool dir -> bytes of its work file already committed
        self._next_orphan_scan = 0.0
        self.store_ok = True
        self._store_stuck = False   # the last failure was a timeout: replay probes with a short lock wait
        self.counters = {"committed": 0, "spooled": 0, "replayed": 0, "dead_lettered": 0, "refused": 0,
                         "groups": 0, "group_retries": 0, "conflicts": 0, "timeouts": 0, "queue_full": 0,
                         "nas_share": 0}
        # on_count(event, amount) for "timeouts", "conflicts", "queue_full", "nas_share" (metrics); any thread
        self.on_count: Callable[[str, int], None] | None = None

    # -- public --------------------------------------------------------------------------------

    def start(self, take_over: bool = False) -> None:
        """Open the spool (SpoolBusy if another process owns it) and start the writer thread.

        `take_over`: this process succeeds one still running on the same spool (a worker replaced
        on a reload starts before its predecessor stops, so that no request finds nobody
        serving): the thread takes the spool once the predecessor lets it go; until then a group
        the store cannot take is not acknowledged (counted as refused; the switch retransmits)."""
        if not self._open_spool(raise_busy=not take_over) and take_over:
            log.info("spool_waiting", path=str(self.spool_path), detail="held by the process this one replaces")
        self._thread = threading.Thread(target=self._run, name="accounting-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Store or spool everything already submitted, then stop. The spool keeps what waits."""
        if self._thread is None:
            return
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)
        self._thread = None
        if self.spool is not None:
            self.spool.close()
            self.spool = None

    def submit(self, facts: AcctFacts, on_done: OnDone) -> None:
        """Queue one record; `on_done(True)` once it is committed or spooled, else `on_done(False)`."""
        if self._stopping or self._thread is None:
            return _call(on_done, False)
        queued = len(self._queue)
        if queued >= self.queue_max or (queued >= self.queue_max // 2 and self._over_share(facts.nas_id)):
            # bounded: the switch retransmits, by then the writer may have caught up; and once the
            # queue is half full one NAS may not fill it for the others
            self._count("queue_full" if queued >= self.queue_max else "nas_share")
            return _call(on_done, False)
        if facts.event_time is None:
            # a replay hours later must still know when the switch told us
            facts = dataclasses.replace(facts, event_time=dt.datetime.now(dt.timezone.utc))
        self._queued[facts.nas_id] += 1
        self._queue.append((facts, on_done, time.monotonic()))
        if self._idle:
            self._wake.set()

    def _over_share(self, nas_id: int) -> bool:
        """The NAS holds its share of the queue already (radiusd.core.round_robin.fair_share)."""
        taken = self._taken
        others = sum(1 for nas, queued in list(self._queued.items()) if queued > taken[nas] and nas != nas_id)
        return self._queued[nas_id] - taken[nas_id] >= fair_share(self.queue_max, others + 1)

    def spool_depth(self) -> int:
        """Records in the spool waiting for the store."""
        return self.spool.depth() if self.spool is not None else 0

    def queue_depth(self) -> int:
        return len(self._queue)

    def lag(self, now: float | None = None) -> float:
        """Seconds the oldest record not yet acknowledged has waited (0 when none waits)."""
        since = [self._working_since]
        with contextlib.suppress(IndexError):   # the writer may take the head meanwhile
            since.append(self._queue[0][2])
        since = [t for t in since if t is not None]
        return max(0.0, (time.monotonic() if now is None else now) - min(since)) if since else 0.0

    def _count(self, event: str) -> None:
        self.counters[event] += 1
        if self.on_count is not None:
            try:
                self.on_count(event, 1)
            except Exception as exc:   # metrics must never cost a record
                log.debug("accounting_count_failed", error=repr(exc))

    # -- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                try:
                    if self._step():
                        return
                except Exception:  # never let the writer die: unanswered records are retransmitted
                    log.exception("accounting_writer_error")
                    time.sleep(0.1)
        finally:
            self._drop_connection()

    def _step(self) -> bool:
        """One round: take a group, commit or spool it, replay if due. True when stopping."""
        stopping = self._stopping   # read first: all that was queued before stop() is taken now
        pending = self.spool is not None and self.spool.has_pending()
        if stopping:
            self._settle(self._pop(len(self._queue)), pending)
            return True
        wait = max(0.0, self._next_replay - time.monotonic()) if pending else 0.5
        self._settle(self._take(wait, self.batch_max * 10 if pending else self.batch_max), pending)
        if self.spool is None and time.monotonic() >= self._next_spool_try:
            self._next_spool_try = time.monotonic() + SPOOL_RETRY
            self._open_spool()   # the predecessor has let it go, or the directory is writable again
        if self.spool is not None and self.spool.has_pending() and time.monotonic() >= self._next_replay:
            if self._replay_spool(self.spool):
                self._adopt_orphans()
        elif self.spool is not None and self.store_ok and time.monotonic() >= self._next_orphan_scan:
            self._adopt_orphans()
        return False

    def _take(self, wait: float, most: int) -> list:
        """Up to `most` queued records, waiting up to `wait` for the first.

        Records that queued up while the last group was being written go at once; when the
        writer was idle it waits `linger` after the first so that a burst shares one commit."""
        if not self._queue and wait > 0:
            self._idle = True  # set before the check: a submit() after it sees _idle and wakes us
            try:
                if not self._queue and not self._stopping:
                    self._wake.wait(wait)
            finally:
                self._idle = False
                self._wake.clear()
            if self._queue and self.linger > 0:
                time.sleep(self.linger)
        return self._pop(most)

    def _pop(self, most: int) -> list:
        batch = [self._queue.popleft() for _ in range(min(most, len(self._queue)))]
        self._taken.update(facts.nas_id for facts, _, _ in batch)
        return batch

    def _settle(self, batch: list, spooling: bool) -> None:
        """Commit or spool records taken from the queue (spooled behind the spool's records waiting)."""
        if not batch:
            return
        self._working_since = batch[0][2]
        try:
            (self._spool if spooling else self._commit_or_spool)(batch)
        finally:
            self._working_since = None

    # -- store ---------------------------------------------------------------------------------

    def _transaction(self, records: list[AcctFacts], savepoints: bool = True,
                     probe: bool = False) -> list[tuple[AcctFacts, str]]:
        """Apply records in one transaction; returns those refused for data reasons.

        Without savepoints (the fast path, `apply_group`) any error fails the whole group; with
        them a record that fails is rolled back alone and returned as refused."""
        try:
            snapshot = self.snapshot_getter()
        except Exception as exc:  # no snapshot yet (store down at startup): not the records' fault
            raise StoreUnavailable(f"no snapshot: {exc!r}") from exc
        args = (snapshot, dt.datetime.now(dt.timezone.utc), self.limits, self.on_anomaly)
        refused: list[tuple[AcctFacts, str]] = []
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
            self._drop_connection()
            connection = self._engine.connect()
            try:
                # its timeouts are set once here instead of once per group; the connection is
                # never given back to the pool (invalidated when dropped), so they never leak
                connection.exec_driver_sql(sql.statement("postgresql", "timeouts", "session"),
                                           {"ms": self.timeout_ms})
                connection.commit()
                sql.driver_connection(connection).autocommit = True   # apply_group spells out BEGIN/COMMIT
            except BaseException:
                connection.close()
                raise
            self._connection = connection
        return Session(bind=self._connection, expire_on_commit=False)

    def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.invalidate()   # closes it: its session timeouts must not reach the pool
                connection.close()
            except Exception as exc:  # already broken: nothing to give back
                log.debug("accounting_connection_close_failed", error=repr(exc))

    def _store(self, records: list[AcctFacts], probe: bool = False) -> list[tuple[AcctFacts, str]]:
        """Commit records: the group in one go; if that fails, again with a savepoint per record.
        Returns the records refused for data reasons; raises StoreUnavailable."""
        reconnected = False
        for attempt in itertools.count(1):
            try:
                return self._transaction(records, savepoints=False, probe=probe)
            except StoreUnavailable as exc:
                # a deadlock / serialization failure with another writer is no outage: try again
                conflict = sql.pgcode(exc.__cause__) in sql.CONFLICT_CODES
                if is_timeout(exc.__cause__):
                    # a lock held by someone else or a stalled server: waiting again would only
                    # hold up every record behind this group; spool, and probe later
                    self._count("timeouts")
                    self._store_stuck = True
                    raise
                if not conflict and self._connection is not None and not reconnected:
                    # our kept connection broke (store restarted, idle timeout): the store is only
                    # away if a new connection (pinged at checkout) fails too
                    self._drop_connection()
                    reconnected = True
                    continue
                if not conflict or attempt >= _CONFLICT_RETRIES:
                    raise
                self._count("conflicts")
                log.info("accounting_group_conflict_retry", attempt=attempt, error=str(exc)[:200])
                time.sleep(random.uniform(0, _CONFLICT_PAUSE * attempt))   # let the other one finish
            except Exception as exc:  # a record the fast path can't take: find it with savepoints
                log.info("accounting_group_retry_with_savepoints", error=repr(exc)[:300], records=len(records))
                self.counters["group_retries"] += 1
                return self._savepoints(records)

    def _savepoints(self, records: list[AcctFacts]) -> list[tuple[AcctFacts, str]]:
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

    def _stored(self, records: list[AcctFacts], probe: bool = False) -> list[tuple[AcctFacts, str]] | None:
        """`_store`, noting whether the store is there: None when it is away (tried again after
        `retry_interval`), else the records refused."""
        try:
            refused = self._store(records, probe)
        except StoreUnavailable as exc:
            if self.store_ok:
                log.error("store_unavailable_spooling", error=str(exc).splitlines()[0][:200] if str(exc) else "",
                          slow=is_timeout(exc.__cause__))
            self.store_ok = False
            self._next_replay = time.monotonic() + self.retry_interval
            return None
        self.store_ok = True
        self._store_stuck = False
        return refused

    def _commit_or_spool(self, batch: list) -> None:
        refused = self._stored([item[0] for item in batch])
        if refused is None:
            return self._spool(batch, try_store=False)
        self.counters["groups"] += 1
        self._answer(batch, refused)

    def _answer(self, batch: list, refused: list[tuple[AcctFacts, str]]) -> None:
        """Acknowledge a committed batch; its refused records once they are in the dead-letter file."""
        bad = {id(facts) for facts, _ in refused}
        kept = self._dead_letter(refused)
        self.counters["committed"] += len(batch) - len(bad)
        for facts, on_done, _ in batch:
            _call(on_done, kept if id(facts) in bad else True)

    def _dead_letter(self, refused: list[tuple[AcctFacts, str]]) -> bool:
        if not refused:
            return True
        for facts, error in refused:
            log.error("accounting_record_refused", leg_key=facts.leg_key, status=facts.status, error=error[:300])
        try:
            if self._open_spool():
                self.spool.dead_letter(refused)
                self.counters["dead_lettered"] += len(refused)
                return True
        except OSError as exc:
            log.error("dead_letter_write_failed", error=repr(exc))
        self.counters["refused"] += len(refused)
        return False

    # -- spool ---------------------------------------------------------------------------------

    def _open_spool(self, raise_busy: bool = False) -> bool:
        if self.spool is None:
            try:
                self.spool = Spool(self.spool_path)
            except SpoolBusy:
                if raise_busy:
                    raise
            except OSError as exc:
                # Run on: the store alone can still take records; we retry the spool when needed.
                log.error("spool_unavailable", path=str(self.spool_path), error=repr(exc))
        return self.spool is not None

    def _spool(self, batch: list, try_store: bool = True) -> None:
        records = [item[0] for item in batch]
        ok = self._open_spool()
        try:
            if ok:
                self.spool.append(records)
        except OSError as exc:
            log.error("spool_write_failed", error=repr(exc), records=len(batch))
            ok = False
        # the spool is full or gone but the store may be back: better out of order than unanswered
        refused = self._stored(records) if not ok and try_store else None
        if refused is not None:
            return self._answer(batch, refused)
        self.counters["spooled" if ok else "refused"] += len(batch)
        for _, on_done, _ in batch:
            _call(on_done, ok)

    def _adopt_orphans(self) -> None:
        """Replay spools left in sub-directories by processes that are gone (fewer workers now).

        A spool directory is owned through its flock: one we can lock has no live owner."""
        self._next_orphan_scan = time.monotonic() + 30
        try:
            candidates = sorted(p for p in Path(self.spool_path).iterdir() if p.is_dir())
        except OSError:
            return
        for path in candidates:
            if not ((path / JOURNAL).exists() or (path / WORK).exists()):
                continue
            try:
                orphan = Spool(path)
            except (SpoolBusy, OSError):
                continue  # its worker is alive: it replays its own
            try:
                log.info("spool_adopted", path=str(path), depth=orphan.depth())
                if not self._replay_spool(orphan):
                    return
            finally:
                orphan.close()

    def _replay_spool(self, spool: Spool) -> bool:
        """Feed a spool to the store, oldest first, until it is empty (True) or the store fails
        again or the writer stops (False)."""
        key = str(spool.path)
        while (path := spool.claim()) is not None:
            group: list[AcctFacts] = []
            end = self._offsets.get(key, 0)
            for offset, _seq, facts, raw in spool.read(path, end):
                if facts is not None:
                    group.append(facts)
                    end = offset
                if group and (facts is None or len(group) >= self.replay_batch):
                    if not self._replay_group(spool, group, end):
                        return False
                    group = []
                if facts is None:   # an unreadable line: kept in the dead-letter file
                    try:
                        spool.dead_letter_raw(raw, "unreadable spool line")
                    except OSError:
                        self._next_replay = time.monotonic() + self.retry_interval
                        return False
                    self.counters["dead_lettered"] += 1
                    spool.replayed(1)
                    self._offsets[key] = offset
            if group and not self._replay_group(spool, group, end):
                return False
            spool.finish(path)
            self._offsets.pop(key, None)
            log.info("spool_replayed", file=str(path))
        return True

    def _replay_group(self, spool: Spool, group: list[AcctFacts], end: int) -> bool:
        refused = self._stored(group, probe=self._store_stuck)
        if refused is None:
            return False
        if refused and not self._dead_letter(refused):
            self._next_replay = time.monotonic() + self.retry_interval
            return False
        self._offsets[str(spool.path)] = end
        spool.replayed(len(group))
        self.counters["replayed"] += len(group) - len(refused)
        if self.replay_pause:
            time.sleep(self.replay_pause)
        if self._stopping:
            return False  # the rest waits for the next start (replaying it again is harmless)
        # keep acknowledging what arrived meanwhile; behind our own spool if it has records waiting
        self._settle(self._pop(self.batch_max * 10), self.spool is not None and self.spool.has_pending())
        return True


def _call(on_done: OnDone, ok: bool) -> None:
    try:
        on_done(ok)
    except Exception as exc:  # the edge's callback must never kill the writer
        log.error("accounting_callback_failed", error=repr(exc))
