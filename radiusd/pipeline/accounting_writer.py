"""The accounting writer: a bounded queue, group commit, the spool when the store is away, replay.

The RADIUS edge calls `submit(facts, on_done)` from any thread and answers the switch only after
`on_done(True)`; `on_done(False)` means the record is stored nowhere, so the edge must not answer
(the switch retransmits) — RFC 2866 §4.1. One writer thread owns every accounting write:
- **Group commit**: what queued up while the last group was written (up to `batch_max`; when
  idle, what arrives within `linger` of the first) is committed in ONE transaction
  (radiusd.store.group_commit), each record acknowledged after the COMMIT (one fsync for the
  group). A record refused for data reasons goes to the spool's dead-letter file (fsync'ed),
  then is acknowledged (not if even that fails).
- **Store away or slow** (`StoreUnavailable`): the group is appended to the spool journal
  (fsync) and acknowledged; new records follow it there, order kept, until the replay has
  emptied it. After a timeout the replay probes with a short lock wait.
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
import threading
import time
from pathlib import Path
from typing import Callable

import structlog
from sqlalchemy.orm import Session, sessionmaker

from radiusd.config import Settings
from radiusd.core.facts import AcctFacts
from radiusd.core.round_robin import fair_share
from radiusd.core.snapshot import Snapshot
from radiusd.pipeline.spool import JOURNAL, WORK, Spool, SpoolBusy
from radiusd.store import sql
from radiusd.store.group_commit import GroupCommit, Refused, StoreUnavailable

log = structlog.get_logger("radiusd.accounting_writer")

OnDone = Callable[[bool], None]
SPOOL_RETRY = 0.2           # seconds between two tries to take a spool we do not hold yet


class AccountingWriter:
    def __init__(self, sessions: sessionmaker[Session], snapshot_getter: Callable[[], Snapshot],
                 settings: Settings, *, batch_max: int = 200, linger: float = 0.003,
                 retry_interval: float = 1.0, replay_batch: int = 500, replay_pause: float = 0.0,
                 spool_path: str | None = None):
        self.groups = GroupCommit(sessions, snapshot_getter, settings, self._count)
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
        self.counters = {"committed": 0, "spooled": 0, "replayed": 0, "dead_lettered": 0, "refused": 0,
                         "groups": 0, "group_retries": 0, "conflicts": 0, "timeouts": 0, "queue_full": 0,
                         "nas_share": 0}
        # on_count(event, amount) for every counted event but the acknowledgements (metrics); any thread
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
            self.groups.close()

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

    def _stored(self, records: list[AcctFacts], probe: bool = False) -> Refused | None:
        """`_store`, noting whether the store is there: None when it is away (tried again after
        `retry_interval`), else the records refused."""
        try:
            refused = self.groups.commit(records, probe)
        except StoreUnavailable as exc:
            if self.store_ok:
                log.error("store_unavailable_spooling", error=str(exc).splitlines()[0][:200] if str(exc) else "",
                          slow=sql.is_timeout(exc.__cause__))
            self.store_ok = False
            self._next_replay = time.monotonic() + self.retry_interval
            return None
        self.store_ok = True
        return refused

    def _commit_or_spool(self, batch: list) -> None:
        refused = self._stored([item[0] for item in batch])
        if refused is None:
            return self._spool(batch, try_store=False)
        self.counters["groups"] += 1
        self._answer(batch, refused)

    def _answer(self, batch: list, refused: Refused) -> None:
        """Acknowledge a committed batch; its refused records once they are in the dead-letter file."""
        bad = {id(facts) for facts, _ in refused}
        kept = self._dead_letter(refused)
        self.counters["committed"] += len(batch) - len(bad)
        for facts, on_done, _ in batch:
            _call(on_done, kept if id(facts) in bad else True)

    def _dead_letter(self, refused: Refused) -> bool:
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
        refused = self._stored(group, probe=self.groups.stuck)
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
