"""The accounting writer: group commit to the store, the spool when the store is away, replay.

The RADIUS edge calls `submit(facts, on_done)` from any thread and answers the switch only when
`on_done(True)` comes back; `on_done(False)` means the record is stored nowhere, so the edge must
not answer (the switch retransmits) — RFC 2866 §4.1.

One writer thread owns every accounting write of the process:
- **Group commit**: it takes what queued up while the last group was written (up to
  `batch_max`; when idle, what arrives within `linger` seconds of the first) and applies it in
  ONE transaction; after COMMIT it acknowledges each record. One fsync of the store's log covers
  the whole group.
- **Fast path first**: the group is applied without savepoints by `apply_group`
  (radiusd.store.accounting: load the group's legs, fold its events through the core, write; on
  PostgreSQL two round trips whatever its size: `BEGIN; load`, then the writes with the COMMIT).
  Only if that fails for a reason other than the store being away is the group redone with a
  SAVEPOINT per record, so one bad record doesn't sink the others (then, if the COMMIT itself
  fails, record by record). A deadlock
  with another writer is retried, not spooled.
- The writer keeps its own PostgreSQL connection between groups (no pool checkout and ping per
  group); a broken one is replaced once before the store counts as away.
- A record the store refuses for data reasons (a bug, a value the schema can't hold) is written
  to the spool's dead-letter file (fsync'ed) and then acknowledged: kept, not lost, not retried
  forever. If even that fails it is not acknowledged.
- **Store unreachable** (connection refused/lost, database locked): the group goes to the spool
  journal (append + fsync) and is then acknowledged. From then on new records are appended to the
  spool too — behind the ones waiting, so order is kept — until the replay has emptied it.
- **A slow store is an unavailable store**: on PostgreSQL the writer's connection runs with
  `lock_timeout` and `statement_timeout` = `store_timeout` (set once per connection, no cost per
  group). A group stuck behind a lock held by someone else, or a stalled server, fails within that
  time (SQLSTATE 55P03 / 57014) and is spooled at once — no reconnect-and-wait-again; the replay
  then probes the store with a short lock wait so that arrivals are not held up behind it.
  On SQLite the lock wait is PRAGMA busy_timeout = `store_timeout` ("database is locked": spooled).
- **Deadlocks** (40P01) and serialization failures (40001) are retried up to `_CONFLICT_RETRIES`
  times after a random pause, counted in `counters["conflicts"]`; they never mark the store away.
- **Bounded queue**: at most `settings.accounting_queue` records wait for the writer; past that
  `submit` refuses at once (`on_done(False)`, no answer: the switch retransmits) and counts
  `counters["queue_full"]`. Once the queue is half full, a NAS already holding its share
  (`accounting_queue / (n + 1)`, n = NAS with records waiting) is refused the same way and counted
  `counters["nas_share"]`: one switch's flood cannot fill the queue for the others. `lag()` is
  the age of the oldest record not yet acknowledged: the server's /health turns 503 "degraded"
  when it exceeds `degraded_after`.
- **Replay**: every `retry_interval` seconds while the spool is not empty the thread renames the
  journal to a work file and applies it in order, in groups; between groups it keeps spooling and
  acknowledging new arrivals. The work file is deleted only after its last group commits; a crash
  (kill -9) mid-replay leaves it to be replayed from the start, which duplicates nothing because
  every accounting event is idempotent per leg key.
- **Orphans**: a spool in a sub-directory of ours (`<spool>/worker-<i>`, a worker of a previous
  run with more workers) whose flock nobody holds is replayed too, once ours is empty.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as dt
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
_STOP = object()


class _QueueByNas(collections.deque):
    """The writer's queue, knowing how many records of each NAS wait in it (the NAS's share,
    radiusd.core.round_robin.fair_share). Records are appended by the event loop and taken by the
    writer thread; each side writes only its own tally, so no lock is needed."""

    def __init__(self):
        super().__init__()
        self.added: collections.Counter = collections.Counter()     # NAS id -> appended (submit's thread)
        self.removed: collections.Counter = collections.Counter()   # NAS id -> taken (writer thread)

    def append(self, item) -> None:
        if item is not _STOP:
            self.added[item[0].nas_id] += 1
        super().append(item)

    def appendleft(self, item) -> None:
        if item is not _STOP:
            self.removed[item[0].nas_id] -= 1
        super().appendleft(item)

    def popleft(self):
        item = super().popleft()
        if item is not _STOP:
            self.removed[item[0].nas_id] += 1
        return item

    def waiting(self, nas_id: int) -> int:
        return self.added[nas_id] - self.removed[nas_id]

    def nas_waiting(self) -> int:
        removed = self.removed
        return sum(1 for nas_id, added in list(self.added.items()) if added > removed[nas_id])


class StoreUnavailable(Exception):
    """The store could not take the group: spool it."""


_CONFLICT_RETRIES = 6
_CONFLICT_PAUSE = 0.02      # seconds; the n-th retry waits a random 0..n times this
_PROBE_LOCK_MS = 200        # lock wait of a replay group after the store was found stuck
SPOOL_RETRY = 0.2           # seconds between two tries to take a spool we do not hold yet


def _pgcode(exc: BaseException | None) -> str | None:
    return getattr(getattr(exc, "orig", None), "pgcode", None)


def _is_conflict(exc: BaseException | None) -> bool:
    """PostgreSQL chose this transaction as a deadlock victim (40P01) or serialization failure (40001)."""
    return _pgcode(exc) in ("40P01", "40001")


def is_timeout(exc: BaseException | None) -> bool:
    """The store was too slow: a lock wait past lock_timeout (55P03) or a statement past
    statement_timeout (57014). The connection itself is fine."""
    return _pgcode(exc) in ("55P03", "57014")


def is_unavailable(exc: BaseException) -> bool:
    """Errors that say the store is away (retry later), not that the record is bad."""
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)):
        return True
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, (ConnectionError, sa_exc.DisconnectionError))


class AccountingWriter:
    def __init__(self, sessions: sessionmaker[Session], snapshot_getter: Callable[[], Snapshot],
                 settings: Settings, *, batch_max: int = 200, linger: float = 0.003,
                 retry_interval: float = 1.0, replay_batch: int = 500, replay_pause: float = 0.0,
                 spool_path: str | None = None):
        self.sessions = sessions
        self.snapshot_getter = snapshot_getter
        # PostgreSQL: the writer keeps one connection between groups (a pool checkout would
        # ping it every time: one more round trip per group); it is replaced when it breaks.
        with sessions() as probe:  # (no connection is made: only the bind is read)
            engine = probe.get_bind()
        self._engine = engine if engine.dialect.name == "postgresql" else None
        sql.limit_sqlite_waits(engine, settings.store_timeout)   # SQLite: "database is locked" after it
        self._connection = None
        self.settings = settings
        self.limits = settings.accounting_limits   # accounting sanity bounds (radiusd.core.sanity)
        self.on_anomaly: Callable[[str], None] | None = None   # the server counts CDR anomalies
        self.timeout_ms = max(1, int(settings.store_timeout * 1000))
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
        # idle (a queue.Queue would wake the writer thread for every record it is lingering for)
        # items: (facts, on_done, time.monotonic() at submit)
        self._queue: _QueueByNas = _QueueByNas()
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
        if take_over:
            if not self._open_spool():
                log.info("spool_waiting", path=str(self.spool_path), detail="held by the process this one replaces")
        else:
            self._open_spool(raise_busy=True)
        self._thread = threading.Thread(target=self._run, name="accounting-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Store or spool everything already submitted, then stop. The spool keeps what waits."""
        if self._thread is None:
            return
        self._stopping = True
        self._queue.append(_STOP)
        self._wake.set()
        self._thread.join(timeout)
        self._thread = None
        if self.spool is not None:
            self.spool.close()
            self.spool = None

    def submit(self, facts: AcctFacts, on_done: OnDone) -> None:
        """Queue one record; `on_done(True)` once it is committed or spooled, else `on_done(False)`."""
        if self._stopping or self._thread is None:
            _call(on_done, False)
            return
        if len(self._queue) >= self.queue_max:
            # bounded: the switch retransmits, by then the writer may have caught up
            self._count("queue_full")
            _call(on_done, False)
            return
        if len(self._queue) >= self.queue_max // 2 and self._over_share(facts.nas_id):
            # one NAS may not fill the queue for the others (checked once it is half full)
            self._count("nas_share")
            _call(on_done, False)
            return
        if facts.event_time is None:
            # a replay hours later must still know when the switch told us
            facts = dataclasses.replace(facts, event_time=dt.datetime.now(dt.timezone.utc))
        self._queue.append((facts, on_done, time.monotonic()))
        if self._idle:
            self._wake.set()

    def _over_share(self, nas_id: int) -> bool:
        queued = self._queue
        mine = queued.waiting(nas_id)
        return mine >= fair_share(self.queue_max, queued.nas_waiting() + (0 if mine > 0 else 1))

    def spool_depth(self) -> int:
        """Records in the spool waiting for the store."""
        return self.spool.depth() if self.spool is not None else 0

    def queue_depth(self) -> int:
        return len(self._queue)

    def lag(self, now: float | None = None) -> float:
        """Seconds the oldest record not yet acknowledged has waited (0 when none waits)."""
        now = time.monotonic() if now is None else now
        oldest = self._working_since
        try:
            head = self._queue[0]
        except IndexError:
            head = None
        if head is not None and head is not _STOP and (oldest is None or head[2] < oldest):
            oldest = head[2]
        return 0.0 if oldest is None else max(0.0, now - oldest)

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
        pending = self.spool is not None and self.spool.has_pending()
        wait = max(0.0, self._next_replay - time.monotonic()) if pending else 0.5
        batch, stop = self._take(wait, self.batch_max * 10 if pending else self.batch_max)
        if batch:
            self._working_since = batch[0][2]
            try:
                if pending:
                    self._spool(batch)
                else:
                    self._commit_or_spool(batch)
            finally:
                self._working_since = None
        if stop:
            return True
        if self.spool is None and time.monotonic() >= self._next_spool_try:
            self._next_spool_try = time.monotonic() + SPOOL_RETRY
            self._open_spool()   # the predecessor has let it go, or the directory is writable again
        if self.spool is not None and self.spool.has_pending() and time.monotonic() >= self._next_replay:
            self._replay()
        elif self.spool is not None and self.store_ok and time.monotonic() >= self._next_orphan_scan:
            self._adopt_orphans()
        return False

    def _take(self, wait: float, most: int) -> tuple[list, bool]:
        """Up to `most` queued records, waiting up to `wait` for the first.

        Records that queued up while the last group was being written go at once; when the
        writer was idle it waits `linger` after the first so that a burst shares one commit.
        """
        queued = self._queue
        if not queued:
            if not self._wait_for_work(wait):
                return [], False
            if self.linger > 0:
                time.sleep(self.linger)
        batch = []
        while queued and len(batch) < most:
            item = queued.popleft()
            if item is _STOP:
                return batch + self._drain(), True
            batch.append(item)
        return batch, False

    def _wait_for_work(self, timeout: float) -> bool:
        """Sleep until submit() queues something (or `timeout`); True when something is queued."""
        if timeout <= 0:
            return bool(self._queue)
        self._idle = True  # set before the check: a submit() after it sees _idle and wakes us
        try:
            if not self._queue:
                self._wake.wait(timeout)
        finally:
            self._idle = False
            self._wake.clear()
        return bool(self._queue)

    def _drain(self) -> list:
        items = []
        while self._queue:
            item = self._queue.popleft()
            if item is not _STOP:
                items.append(item)
        return items

    # -- store ---------------------------------------------------------------------------------

    def _apply_in_one_transaction(self, records: list[AcctFacts], savepoints: bool = True,
                                  probe: bool = False) -> list[tuple[AcctFacts, str]]:
        """Apply records in one transaction; returns those refused for data reasons.

        Without savepoints (the fast path, `apply_group`) any error fails the whole group; with
        them a record that fails is rolled back alone and returned as refused.
        """
        refused: list[tuple[AcctFacts, str]] = []
        try:
            snapshot = self.snapshot_getter()
        except Exception as exc:  # no snapshot yet (store down at startup): not the records' fault
            raise StoreUnavailable(f"no snapshot: {exc!r}") from exc
        now = dt.datetime.now(dt.timezone.utc)
        try:
            if not savepoints and self._engine is not None:
                # PostgreSQL: the group begins with its load and commits with its write
                with self._session() as session:
                    apply_group(session, records, snapshot, now, self.limits, self.on_anomaly, commit=True,
                                lock_ms=_PROBE_LOCK_MS if probe else None)
                return refused
            with self._session() as session, self._driver_transactions(), session.begin():
                if probe and self._engine is not None:
                    session.connection().exec_driver_sql(
                        sql.statement("postgresql", "timeouts", "local_lock"), {"ms": _PROBE_LOCK_MS})
                if not savepoints:
                    apply_group(session, records, snapshot, now, self.limits, self.on_anomaly)
                    return refused
                for facts in records:
                    try:
                        with session.begin_nested():
                            apply(session, facts, snapshot, now, self.limits, self.on_anomaly)
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
    def _driver_transactions(self):
        """The kept PostgreSQL connection lives in autocommit mode (the fast path spells out its
        transaction block); the savepoint paths (rare) use SQLAlchemy's, which needs the
        driver's implicit BEGIN. (After _session(), which makes the kept connection.)"""
        kept = self._connection
        driver = sql.driver_connection(kept) if self._engine is not None and kept is not None else None
        if driver is None or not driver.autocommit:
            yield
            return
        driver.autocommit = False
        try:
            yield
        finally:
            with contextlib.suppress(Exception):   # a dropped connection is replaced anyway
                driver.autocommit = True

    def _session(self) -> Session:
        if self._engine is None:
            return self.sessions()
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
                sql.driver_connection(connection).autocommit = True   # see _driver_transactions
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
        """Commit records: the group in one go; if that fails, again with a savepoint per record;
        if that fails at commit, one by one. Raises StoreUnavailable."""
        reconnected = False
        for attempt in range(1, _CONFLICT_RETRIES + 1):
            try:
                return self._apply_in_one_transaction(records, savepoints=False, probe=probe)
            except StoreUnavailable as exc:
                if is_timeout(exc.__cause__):
                    # a lock held by someone else or a stalled server: waiting again would only
                    # hold up every record behind this group; spool, and probe later
                    self._count("timeouts")
                    self._store_stuck = True
                    raise
                if self._connection is not None and not reconnected and not _is_conflict(exc.__cause__):
                    # our kept connection broke (store restarted, idle timeout): the store is only
                    # away if a new connection (pinged at checkout) fails too
                    self._drop_connection()
                    reconnected = True
                    continue
                # a deadlock / serialization failure with another writer is no outage: try again
                if not (_is_conflict(exc.__cause__) and attempt < _CONFLICT_RETRIES):
                    raise
                self._count("conflicts")
                log.info("accounting_group_conflict_retry", attempt=attempt, error=str(exc)[:200])
                time.sleep(random.uniform(0, _CONFLICT_PAUSE * attempt))   # let the other one finish
            except Exception as exc:  # a record the fast path can't take: find it with savepoints
                log.info("accounting_group_retry_with_savepoints", error=repr(exc)[:300], records=len(records))
                self.counters["group_retries"] += 1
                break
        try:
            return self._apply_in_one_transaction(records, savepoints=True)
        except StoreUnavailable:
            raise
        except Exception as exc:  # the group failed at commit: find the record(s) to blame
            log.warning("accounting_group_failed", error=repr(exc), records=len(records))
            refused = []
            for facts in records:
                try:
                    refused += self._apply_in_one_transaction([facts])
                except StoreUnavailable:
                    raise
                except Exception as one:
                    refused.append((facts, repr(one)))
            return refused

    def _commit_or_spool(self, batch: list) -> None:
        records = [item[0] for item in batch]
        try:
            refused = self._store(records)
        except StoreUnavailable as exc:
            if self.store_ok:
                log.error("store_unavailable_spooling", error=str(exc).splitlines()[0][:200] if str(exc) else "",
                          slow=is_timeout(exc.__cause__))
            self.store_ok = False
            self._next_replay = time.monotonic() + self.retry_interval
            self._spool(batch, try_store=False)
            return
        self.store_ok = True
        self._store_stuck = False
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
        if self.spool is None and not self._open_spool():
            self.counters["refused"] += len(refused)
            return False
        try:
            self.spool.dead_letter(refused)
        except OSError as exc:
            log.error("dead_letter_write_failed", error=repr(exc))
            self.counters["refused"] += len(refused)
            return False
        self.counters["dead_lettered"] += len(refused)
        return True

    # -- spool ---------------------------------------------------------------------------------

    def _open_spool(self, raise_busy: bool = False) -> bool:
        if self.spool is not None:
            return True
        try:
            self.spool = Spool(self.spool_path)
            return True
        except SpoolBusy:
            if raise_busy:
                raise
            return False
        except OSError as exc:
            # Run on: the store alone can still take records; we retry the spool when needed.
            log.error("spool_unavailable", path=str(self.spool_path), error=repr(exc))
            return False

    def _spool(self, batch: list, try_store: bool = True) -> None:
        ok = False
        if self.spool is not None or self._open_spool():
            try:
                self.spool.append([item[0] for item in batch])
                ok = True
            except OSError as exc:
                log.error("spool_write_failed", error=repr(exc), records=len(batch))
        if not ok and try_store:
            # the spool is full or gone but the store may be back: better out of order than unanswered
            try:
                refused = self._store([item[0] for item in batch])
            except StoreUnavailable:
                refused = None
            if refused is not None:
                self._answer(batch, refused)
                return
        if ok:
            self.counters["spooled"] += len(batch)
        else:
            self.counters["refused"] += len(batch)
        for _, on_done, _ in batch:
            _call(on_done, ok)

    def _replay(self) -> None:
        """Feed our spool to the store, oldest first, until it is empty or the store fails again."""
        if self._replay_spool(self.spool):
            self._adopt_orphans()

    def _adopt_orphans(self) -> None:
        """Replay spools left in sub-directories by processes that are gone (fewer workers now).

        A spool directory is owned through its flock: one we can lock has no live owner.
        """
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
        """Replay one spool completely. False when interrupted (store away, stopping)."""
        key = str(spool.path)
        while True:
            path = spool.claim()
            if path is None:
                return True
            group: list[AcctFacts] = []
            start = end = self._offsets.get(key, 0)
            for offset, _seq, facts, raw in spool.read(path, start):
                if facts is None:
                    if group and not self._replay_group(spool, group, end):
                        return False
                    group = []
                    try:
                        spool.dead_letter_raw(raw, "unreadable spool line")
                    except OSError:
                        self._next_replay = time.monotonic() + self.retry_interval
                        return False
                    self.counters["dead_lettered"] += 1
                    spool.replayed(1)
                    self._offsets[key] = offset
                    continue
                group.append(facts)
                end = offset
                if len(group) >= self.replay_batch:
                    if not self._replay_group(spool, group, end):
                        return False
                    group = []
            if group and not self._replay_group(spool, group, end):
                return False
            spool.finish(path)
            self._offsets.pop(key, None)
            log.info("spool_replayed", file=str(path))

    def _replay_group(self, spool: Spool, group: list[AcctFacts], end: int) -> bool:
        try:
            refused = self._store(group, probe=self._store_stuck)
        except StoreUnavailable:
            self.store_ok = False
            self._next_replay = time.monotonic() + self.retry_interval
            return False
        if refused and not self._dead_letter(refused):
            self._next_replay = time.monotonic() + self.retry_interval
            return False
        self.store_ok = True
        self._store_stuck = False
        self._offsets[str(spool.path)] = end
        spool.replayed(len(group))
        self.counters["replayed"] += len(group) - len(refused)
        if self.replay_pause:
            time.sleep(self.replay_pause)
        if self._stopping:
            return False  # the rest waits for the next start (replaying it again is harmless)
        # keep acknowledging what arrived meanwhile; behind our own spool if it has records waiting
        arrived = self._drain_nowait()
        if arrived:
            self._working_since = arrived[0][2]
            try:
                if self.spool is not None and self.spool.has_pending():
                    self._spool(arrived)
                else:
                    self._commit_or_spool(arrived)
            finally:
                self._working_since = None
        return True

    def _drain_nowait(self) -> list:
        items = []
        while self._queue and len(items) < self.batch_max * 10:
            item = self._queue.popleft()
            if item is _STOP:
                self._queue.appendleft(_STOP)  # let the main loop see it after the replay
                break
            items.append(item)
        return items


def _call(on_done: OnDone, ok: bool) -> None:
    try:
        on_done(ok)
    except Exception as exc:  # the edge's callback must never kill the writer
        log.error("accounting_callback_failed", error=repr(exc))
