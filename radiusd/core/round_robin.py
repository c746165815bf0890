"""Per-NAS queues served round robin: the one serving rule behind fairness between NAS.

Used where requests wait — the event loop's datagrams (radiusd.radius.fairness) and the
Access-Requests waiting for the store's admission batches (radiusd.pipeline.reservation_batcher) — so a NAS
with one request waiting is served within one turn, whatever another NAS has queued.

Deficit round robin with a quantum of one request: every request costs about the same, so one
request per NAS per turn is the fair share. Pure data, no locks, no clock: callers that share it
between threads hold their own lock. State is one deque per key with something waiting, so it is
bounded by what waits, never by the keys ever seen.
"""
from __future__ import annotations

from collections import deque


def fair_share(capacity: int, nas_waiting: int) -> int:
    """How much of a shared queue of `capacity` one NAS may hold while `nas_waiting` NAS
    (itself included) have something in it: capacity / (n + 1). A NAS alone may fill half, so a
    newcomer always finds room; the refused excess is that NAS's, answered or counted by the caller."""
    return max(1, capacity // (nas_waiting + 1))


class RoundRobin:
    """FIFO queues per key (a NAS), taken from one item per key per turn."""

    __slots__ = ("_queues", "_turns", "_length")

    def __init__(self):
        self._queues: dict = {}        # key -> deque of items; only keys with something waiting
        self._turns: deque = deque()   # those keys, in serving order
        self._length = 0

    def __len__(self) -> int:
        return self._length

    def keys(self) -> int:
        """How many keys have something waiting."""
        return len(self._queues)

    def waiting(self, key) -> int:
        queue = self._queues.get(key)
        return len(queue) if queue else 0

    def put(self, key, item) -> None:
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
            self._turns.append(key)
        queue.append(item)
        self._length += 1

    def shed(self, key, keep: int) -> list:
        """Drop the oldest of `key`'s items beyond the newest `keep` (>= 1); returns them."""
        queue = self._queues.get(key)
        dropped = []
        while queue is not None and len(queue) > max(1, keep):
            dropped.append(queue.popleft())
        self._length -= len(dropped)
        return dropped

    def take(self):
        """The next item (one per key per turn), or None when nothing waits."""
        turns = self._turns
        if not turns:
            return None
        key = turns.popleft()
        queue = self._queues[key]
        item = queue.popleft()
        if queue:
            turns.append(key)
        else:
            del self._queues[key]
        self._length -= 1
        return item

    def take_many(self, limit: int) -> list:
        """Up to `limit` items, round robin: with k keys waiting, each key gets limit // k or
        more of them (all it has if less); the turn order carries over to the next call, so with
        more keys than `limit` every key is served within ceil(keys / limit) calls."""
        items = []
        take = self.take
        while len(items) < limit and self._length:
            items.append(take())
        return items
