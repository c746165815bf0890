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

Because a fixed `rate` high enough for a carrier with one big switch saturates a worker when
that switch floods, the buckets can also carry a *ceiling* that adapts to the worker (`adaptive`,
off by default: see the README, "Fairness between NAS"): the server reports how busy it is (`observe`), and when another NAS has sent
within CONTENDING_FOR, the worker is busier than BUSY_HIGH (its loop's wall time, its CPU
time or the time the machine's tasks waited for a CPU, whichever is most) and one NAS takes more
than twice what any other does, the ceiling comes down below that NAS's rate (multiplicatively,
per window); when the worker is less busy than BUSY_LOW it goes up again, and it is lifted when
nobody presses on it or no other NAS has been heard for CONTENDING_FOR. A NAS silent for
longer never gets the busiest one clamped. The ceiling applies to every NAS alike, so a NAS below it never feels it
(max-min fairness); a NAS alone keeps the whole worker.

A datagram refused by the bucket or the queue is dropped at once (counted per NAS by the
caller): that is cheap, so the socket keeps draining and the kernel never has to drop on our
behalf — the kernel's drops would hit every NAS alike.
"""
from __future__ import annotations

from dataclasses import dataclass

from radiusd.core.round_robin import RoundRobin

OVER_RATE = "over_rate"      # the NAS's token bucket is empty
QUEUE_FULL = "queue_full"    # the NAS already has `depth` datagrams waiting

ADAPT_WINDOW = 0.2    # seconds between two looks at how busy the worker is (the server's cadence)
BUSY_HIGH = 0.75      # loop busier than this (share of wall time) while NAS contend: ceiling down
BUSY_LOW = 0.5        # loop idler than this: ceiling up
CEILING_DOWN = 0.5    # factor per window
CEILING_UP = 1.25
CONTENDING_FOR = 2.0  # seconds since its last datagram during which a NAS counts as contending:
                      # long enough for a NAS sending a few requests a second, short enough that a
                      # flood that has stopped does not leave the next busy NAS clamped
FLOOR = 50.0          # datagrams/s per NAS the ceiling never goes below


@dataclass(frozen=True, slots=True)
class FairnessLimits:
    rate: float = 0.0       # datagrams/s per NAS (auth + accounting together); 0 = unlimited
    burst: float = 0.0      # bucket size; 0 = one second's worth of `rate`
    depth: int = 1024       # datagrams waiting per NAS before its new ones are dropped
    in_flight: int = 256    # Access-Requests of one NAS waiting for the store at once (the store
                            # decides them in shared batches: one NAS must not fill every batch)
    adaptive: bool = False  # a ceiling per NAS that follows how busy the worker is (see above)


class FairQueue:
    """Per-key (NAS) token buckets in front of per-key queues served round robin
    (radiusd.core.round_robin, the same serving rule as the store's admission queue).

    Keys are whatever identifies a NAS to the caller (its id; one shared key for unknown
    sources), so the state is bounded by the NAS table, not by the sources heard."""

    __slots__ = ("rate", "burst", "depth", "adaptive", "ceiling", "_rate", "_cap", "_buckets", "_queues",
                 "_last_look", "_cpu", "_stalled", "_admitted")

    def __init__(self, limits: FairnessLimits = FairnessLimits()):
        if limits.rate < 0 or limits.burst < 0 or limits.depth < 1:
            raise ValueError("fairness: rate and burst must be >= 0, depth >= 1")
        self.rate = float(limits.rate)
        self.burst = float(limits.burst or limits.rate)
        self.depth = int(limits.depth)
        self.adaptive = limits.adaptive
        self.ceiling: float | None = None   # datagrams/s per NAS while the worker is contended
        self._rate, self._cap = self.rate, self.burst   # the bucket in force: the rate, or the ceiling below it
        self._buckets: dict = {}    # key -> [tokens, last datagram at]
        self._queues = RoundRobin()
        self._last_look: float | None = None   # time of the last look
        self._cpu = 0.0                     # process CPU seconds then
        self._stalled = 0.0                 # machine CPU-stall seconds then
        self._admitted: dict = {}           # key -> datagrams admitted since

    def __len__(self) -> int:
        return len(self._queues)

    def offer(self, key, item, now: float) -> str | None:
        """Queue `item` under `key`; None if queued, else why it was refused (OVER_RATE, QUEUE_FULL)."""
        rate = self._rate
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = [self._cap, now]
        elif rate:
            tokens = bucket[0] + (now - bucket[1]) * rate
            bucket[0] = tokens if tokens < self._cap else self._cap
        bucket[1] = now
        if rate and bucket[0] < 1.0:
            return OVER_RATE
        if self._queues.waiting(key) >= self.depth:
            return QUEUE_FULL
        if rate:
            bucket[0] -= 1.0
        if self.adaptive:
            self._admitted[key] = self._admitted.get(key, 0) + 1
        self._queues.put(key, item)
        return None

    def observe(self, now: float, busy: float, cpu: float = 0.0, stalled: float = 0.0) -> float | None:
        """One look, which the server takes every ADAPT_WINDOW: since the last one the loop was
        busy `busy` seconds (wall time); `cpu` and `stalled` are running totals in seconds: the
        CPU this process has used (its store threads' work shows here while the loop waits) and
        the time tasks on this machine waited for a CPU (Linux PSI: a worker starved of a core by
        other processes shows here). Moves the ceiling (see the module's text); returns it when
        it changed (0.0: lifted), else None. The first look only starts the count."""
        if not self.adaptive:
            return None
        if self._last_look is None:
            self._last_look, self._cpu, self._stalled = now, cpu, stalled
            return None
        elapsed = now - self._last_look
        if elapsed <= 0:
            return None
        load = max(busy, cpu - self._cpu, stalled - self._stalled) / elapsed
        rates = sorted((n / elapsed for n in self._admitted.values()), reverse=True)
        self._last_look, self._cpu, self._stalled, self._admitted = now, cpu, stalled, {}
        top, second = (rates + [0.0, 0.0])[:2]
        contending = sum(1 for bucket in self._buckets.values() if now - bucket[1] < CONTENDING_FOR)
        ceiling = self.ceiling
        if contending >= 2 and load > BUSY_HIGH and top > 2 * second:
            # never below twice the next NAS's rate: the ceiling is for the one that floods
            ceiling = max(FLOOR, 2 * second, CEILING_DOWN * min(top, ceiling or top))
        elif ceiling is not None and (contending < 2 or (load < BUSY_LOW and top < ceiling / 2)):
            ceiling = None   # nobody presses on it, or nobody left to protect
        elif ceiling is not None and load < BUSY_LOW:
            ceiling *= CEILING_UP
        if ceiling == self.ceiling:
            return None
        self.ceiling = ceiling
        if ceiling is None or (self.rate and ceiling >= self.rate):
            self._rate, self._cap = self.rate, self.burst
            for bucket in self._buckets.values():   # as if there had been no ceiling: each its burst
                bucket[0] = self.burst
        else:
            self._rate, self._cap = ceiling, max(1.0, ceiling * ADAPT_WINDOW)
            for bucket in self._buckets.values():   # tokens saved under the old rate: not a pass
                bucket[0] = min(bucket[0], self._cap)
        return ceiling or 0.0

    def take(self):
        """The next item to process (one per key per turn), or None when nothing waits."""
        return self._queues.take()

    def waiting(self, key) -> int:
        return self._queues.waiting(key)
