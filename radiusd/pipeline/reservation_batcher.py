"""The reservation batcher: Access-Requests waiting for the store, decided a batch at a time.

The edge submits each call plan that needs live numbers (capacity, money); one thread takes
what waits, round robin across NAS, and has the store decide it in one transaction
(radiusd.store.capacity.reserve_batch).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time
from typing import Callable

from radiusd.config import Settings
from radiusd.core.decision import CallPlan
from radiusd.core.round_robin import RoundRobin, fair_share
from radiusd.store import sql
from radiusd.store.capacity import reserve_batch, store_for

MAX_BATCH = 64              # Access-Requests decided in one transaction


class ReservationBatcher:
    """A thread that takes the Access-Requests waiting (up to `max_batch`) and decides them in
    one `reserve_batch` call: while one batch is in the store the next one gathers, so the
    number of transactions adapts to the load (one per request when idle).

    Requests wait in one queue per NAS and batches are formed round robin across them, so a
    request of a quiet NAS waits for at most the batch in the store, then its own, whatever a
    flooding NAS has queued. Refused at once (the edge answers code 8 and counts the reason):
    past `reservation_queue` requests ('queue_full'), past a NAS's `fair_share` of them
    ('nas_share'), while the store is stuck ('store_stuck').

    `submit(plan, now, token)` is called from one thread (the event loop); the results (Accept,
    Reject or the exception) go out through `deliver([(token, result), ...])` once per batch, from
    the batcher thread (default: call each token with its result).
    """

    def __init__(self, sessions, settings: Settings, deliver: Callable[[list], None] | None = None,
                 max_batch: int = MAX_BATCH, name: str = "reserve"):
        self.sessions = sessions
        self.settings = settings
        self.max_batch = max(1, max_batch)
        self._deliver = deliver or _deliver_here
        self._waiting = RoundRobin()               # nas_id -> (plan, now, token), under _ready's lock
        self._ready = threading.Condition(threading.Lock())
        self._idle = False                         # the thread waits on _ready: wake it
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._store = None
        self.queue_max = settings.reservation_queue
        self.stall_after = settings.degraded_after
        self._busy_since: float | None = None      # monotonic start of the batch in the store
        self._slow_until = 0.0                     # monotonic: refuse at once until then
        self.batches = 0
        self.decided = 0
        self.refused = {"queue_full": 0, "store_stuck": 0, "nas_share": 0}

    def start(self) -> "ReservationBatcher":
        self._thread.start()
        return self

    def submit(self, plan: CallPlan, now: dt.datetime, token) -> str | None:
        """Queue one request; returns None, or why it was refused at once (see the class)."""
        waiting = self._waiting
        if len(waiting) >= self.queue_max:
            self.refused["queue_full"] += 1
            return "queue_full"
        if self.stalled():
            self.refused["store_stuck"] += 1
            return "store_stuck"
        with self._ready:
            mine = waiting.waiting(plan.nas_id)
            if mine >= fair_share(self.queue_max, waiting.keys() + (0 if mine else 1)):
                self.refused["nas_share"] += 1
                return "nas_share"
            waiting.put(plan.nas_id, (plan, now, token))
            if self._idle:
                self._idle = False
                self._ready.notify()
        return None

    def queue_depth(self) -> int:
        return len(self._waiting)

    def waiting(self, nas_id: int) -> int:
        """Requests of one NAS waiting for a batch."""
        with self._ready:
            return self._waiting.waiting(nas_id)

    def stall(self) -> float:
        """Seconds the batch now in the store has been there (0 when idle)."""
        since = self._busy_since
        return 0.0 if since is None else max(0.0, time.monotonic() - since)

    def stalled(self) -> bool:
        return self.stall() > self.stall_after or time.monotonic() < self._slow_until

    def stop(self, timeout: float = 10.0) -> None:
        """Decide what is queued, then end the thread."""
        if self._thread.is_alive():
            with self._ready:
                self._stopping = True
                self._ready.notify()
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._waiting and not self._stopping:
                    self._idle = True
                    self._ready.wait()
                self._idle = False
                batch = self._waiting.take_many(self.max_batch)   # round robin across NAS
                if not batch:   # stopping, nothing left
                    break
                self._busy_since = time.monotonic()
            try:
                results = self._decide([(plan, now) for plan, now, _ in batch])
            finally:
                self._busy_since = None
            if any(isinstance(r, BaseException) and sql.is_timeout(r) for r in results):
                self._slow_until = time.monotonic() + self.stall_after
            self.batches += 1
            self.decided += len(batch)
            with contextlib.suppress(Exception):   # the receiver is gone (event loop closed at shutdown)
                self._deliver([(token, result) for (_, _, token), result in zip(batch, results)])
        if self._store is not None:
            self._store.close()

    def _decide(self, requests) -> list:
        """reserve_batch on a store (connection) kept for the next batch: no pool checkout and
        no ping per batch; a dead connection is replaced inside reserve_batch."""
        try:
            if self._store is None:
                self._store = store_for(self.sessions, int(self.settings.store_timeout * 1000))
            return reserve_batch(self.sessions, requests, self.settings, store=self._store)
        except Exception as exc:  # a bug must cost this batch, never the thread
            return [exc] * len(requests)


def _deliver_here(pairs) -> None:
    for done, result in pairs:
        done(result)
