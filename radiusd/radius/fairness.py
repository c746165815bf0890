"""Fairness between NAS: one switch's flood costs that switch, never the others.

Pure policy over plain data, time passed in (monotonic seconds). The listeners drain their
sockets as fast as the kernel hands datagrams over and `offer` each one under its NAS (found by
source address, before any decoding); the event loop then `take`s them for processing:

- a token bucket per NAS (`rate` datagrams/s, `burst` at once; rate 0 = no bucket) caps what a
  NAS may spend of the server at all, however idle the others are;
- a bounded queue per NAS (`depth`), served round robin one datagram per NAS per turn
  (radiusd.core.round_robin), so a NAS with one request waiting is served within one turn,
  whatever another NAS has queued.

Past the loop, a NAS may have at most `in_flight` Access-Requests waiting for the store (the
endpoint counts them), and the store's admission queue and the accounting writer's queue give each
NAS its share too (radiusd.store.capacity.ReservationBatcher: per-NAS queues, batches formed round
robin; both: `fair_share` of the queue per NAS).

The queues decide in which order work is done; only the bucket decides how much of a worker one
NAS may use. A NAS that always has a backlog keeps the worker saturated, and a saturated worker
slows every step for every NAS (the admission thread waits for the interpreter lock behind the
busy loop, results wait for the loop's next turn): keeping others' answers fast during a flood
needs a `rate` below what a worker decides. The bucket is also the cap for a switch allowed so
many requests per second.

A datagram refused by the bucket or the queue is dropped at once (counted per NAS by the
caller): that is cheap, so the socket keeps draining and the kernel never has to drop on our
behalf — the kernel's drops would hit every NAS alike.
"""
from __future__ import annotations

from dataclasses import dataclass

from radiusd.core.round_robin import RoundRobin

OVER_RATE = "over_rate"      # the NAS's token bucket is empty
QUEUE_FULL = "queue_full"    # the NAS already has `depth` datagrams waiting


@dataclass(frozen=True, slots=True)
class FairnessLimits:
    rate: float = 0.0       # datagrams/s per NAS (auth + accounting together); 0 = unlimited
    burst: float = 0.0      # bucket size; 0 = one second's worth of `rate`
    depth: int = 1024       # datagrams waiting per NAS before its new ones are dropped
    in_flight: int = 256    # Access-Requests of one NAS waiting for the store at once (the store
                            # decides them in shared batches: one NAS must not fill every batch)


class FairQueue:
    """Per-key (NAS) token buckets in front of per-key queues served round robin
    (radiusd.core.round_robin, the same serving rule as the store's admission queue).

    Keys are whatever identifies a NAS to the caller (its id; one shared key for unknown
    sources), so the state is bounded by the NAS table, not by the sources heard."""

    __slots__ = ("rate", "burst", "depth", "_buckets", "_queues")

    def __init__(self, limits: FairnessLimits = FairnessLimits()):
        if limits.rate < 0 or limits.burst < 0 or limits.depth < 1:
            raise ValueError("fairness: rate and burst must be >= 0, depth >= 1")
        self.rate = float(limits.rate)
        self.burst = float(limits.burst or limits.rate)
        self.depth = int(limits.depth)
        self._buckets: dict = {}    # key -> [tokens, refilled at]
        self._queues = RoundRobin()

    def __len__(self) -> int:
        return len(self._queues)

    def offer(self, key, item, now: float) -> str | None:
        """Queue `item` under `key`; None if queued, else why it was refused (OVER_RATE, QUEUE_FULL)."""
        if self.rate:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = [self.burst, now]
            else:
                tokens = bucket[0] + (now - bucket[1]) * self.rate
                bucket[0] = tokens if tokens < self.burst else self.burst
                bucket[1] = now
            if bucket[0] < 1.0:
                return OVER_RATE
        if self._queues.waiting(key) >= self.depth:
            return QUEUE_FULL
        if self.rate:
            bucket[0] -= 1.0
        self._queues.put(key, item)
        return None

    def take(self):
        """The next item to process (one per key per turn), or None when nothing waits."""
        return self._queues.take()

    def waiting(self, key) -> int:
        return self._queues.waiting(key)
