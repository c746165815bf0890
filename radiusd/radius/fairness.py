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
NAS its share too (radiusd.pipeline.reservation_batcher: per-NAS queues, batches formed round
robin; both: `fair_share` of the queue per NAS).

The queues decide in which order work is done; only the bucket decides how much of a worker one
NAS may use. A NAS that always has a backlog keeps the worker saturated, and a saturated worker
slows every step for every NAS (the admission thread waits for the interpreter lock behind the
busy loop, results wait for the loop's next turn): keeping others' answers fast during a flood
needs a `rate` below what a worker decides. The bucket is also the cap for a switch allowed so
many requests per second.

Because a fixed `rate` high enough for a carrier with one big switch saturates a worker when
that switch floods, the buckets also carry a *ceiling* that adapts to the worker (`adaptive`,
on by default; the README, "Fairness between NAS"): the server reports how busy it is (`observe`), and when another NAS has sent
within CONTENDING_FOR, the worker is busier than BUSY_HIGH (its loop's wall time, its CPU
time or the time the machine's tasks waited for a CPU, whichever is most) and one NAS takes more
than twice what any other does, the ceiling comes down: at once to twice the next NAS's rate,
then halving per window while that lasts; when the worker is less busy than BUSY_LOW it goes up again. It is lifted as soon as
the NAS it came down for sends less than half of it (the flood has stopped: the next busy NAS,
say one whose store stalled, must not inherit it), or when no other NAS has been heard for
CONTENDING_FOR. It only comes down on a window in which another NAS did send: a NAS silent
for a window is no one to protect then, and it is never below twice what any other NAS sends.
It holds every NAS that sent more than it in the last window (max-min fairness): a NAS below it,
or one just begun, never feels it; a NAS alone keeps the whole worker. A NAS it comes down on
loses what it queued beyond one window's worth (`shed`, oldest first, for the caller to count). The workers share what
they hear (radiusd.radius.fairness_board): the kernel may give a flood's flows to one worker
and the NAS it hurts to another, and both share the machine's CPUs.

A datagram refused by the bucket or the queue is dropped at once (counted per NAS by the
caller): that is cheap, so the socket keeps draining and the kernel never has to drop on our
behalf — the kernel's drops would hit every NAS alike.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from radiusd.core.round_robin import RoundRobin

OVER_RATE = "over_rate"      # the NAS's token bucket is empty
QUEUE_FULL = "queue_full"    # the NAS already has `depth` datagrams waiting

ADAPT_WINDOW = 0.1    # seconds between two looks at how busy the worker is (the server's cadence)
BUSY_HIGH = 0.75      # loop busier than this (share of wall time) while NAS contend: ceiling down
BUSY_LOW = 0.5        # loop idler than this: ceiling up
CEILING_DOWN = 0.5    # factor per window
CEILING_UP = 1.25
CONTENDING_FOR = 2.0  # seconds since its last datagram during which a NAS counts as contending:
                      # long enough for a NAS sending a few requests a second, short enough that a
                      # flood that has stopped does not leave the next busy NAS clamped
FLOOR = 50.0          # datagrams/s per NAS the ceiling never goes below
STALE_AFTER = 2 * ADAPT_WINDOW   # another worker's post older than this: its rates no longer count


@dataclass(frozen=True, slots=True)
class FairnessLimits:
    rate: float = 0.0       # datagrams/s per NAS (auth + accounting together); 0 = unlimited
    burst: float = 0.0      # bucket size; 0 = one second's worth of `rate`
    depth: int = 1024       # datagrams waiting per NAS before its new ones are dropped
    in_flight: int = 256    # Access-Requests of one NAS waiting for the store at once (the store
                            # decides them in shared batches: one NAS must not fill every batch)
    adaptive: bool = True   # a ceiling per NAS that follows how busy the worker is (see above)


class FairQueue:
    """Per-key (NAS) token buckets in front of per-key queues served round robin
    (radiusd.core.round_robin, the same serving rule as the store's admission queue).

    Keys are whatever identifies a NAS to the caller (its id; one shared key for unknown
    sources), so the state is bounded by the NAS table, not by the sources heard."""

    __slots__ = ("rate", "burst", "depth", "adaptive", "ceiling", "_rate", "_cap", "_buckets", "_queues",
                 "_last_look", "_cpu", "_stalled", "_offered", "_clamped", "heard", "shed",
                 "_pressing")

    def __init__(self, limits: FairnessLimits = FairnessLimits()):
        if limits.rate < 0 or limits.burst < 0 or limits.depth < 1:
            raise ValueError("fairness: rate and burst must be >= 0, depth >= 1")
        self.rate = float(limits.rate)
        self.burst = float(limits.burst or limits.rate)
        self.depth = int(limits.depth)
        self.adaptive = limits.adaptive
        self.ceiling: float | None = None   # datagrams/s per NAS while the worker is contended
        self._rate, self._cap = self.rate, self.burst   # the bucket of a NAS pressing on the ceiling
        self._buckets: dict = {}    # key -> [tokens, last datagram at, pressing on the ceiling]
        self._queues = RoundRobin()
        self._last_look: float | None = None   # time of the last look
        self._cpu = 0.0                     # process CPU seconds then
        self._stalled = 0.0                 # machine CPU-stall seconds then
        self._offered: dict = {}            # key -> datagrams offered since (admitted or refused)
        self._clamped = None                # the NAS the ceiling last came down for
        self.heard: list = []               # (key, last heard, offered/s) at the last look: the post
        self.shed: list = []                # (key, item) dropped from the queues by the ceiling, for the caller to count
        self._pressing: set = set()         # keys whose bucket runs at the ceiling (their bucket[2])

    def __len__(self) -> int:
        return len(self._queues)

    def offer(self, key, item, now: float) -> str | None:
        """Queue `item` under `key`; None if queued, else why it was refused (OVER_RATE, QUEUE_FULL)."""
        if self.ceiling is not None and now - self._last_look > CONTENDING_FOR:
            # the server looks only while the worker works: a ceiling from before a quiet
            # spell (nobody contends in it) must not meet the first datagrams after it
            self._apply(None, set())
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = [self.burst, now, False]
        if bucket[2]:   # a NAS pressing on the ceiling: its bucket runs at the ceiling
            rate, cap = self._rate, self._cap
        else:
            rate, cap = self.rate, self.burst
        if rate:
            tokens = bucket[0] + (now - bucket[1]) * rate
            bucket[0] = tokens if tokens < cap else cap
        bucket[1] = now
        if self.adaptive:   # what a NAS asks for, refused or not: a ceiling must not feed on itself
            self._offered[key] = self._offered.get(key, 0) + 1
        if rate and bucket[0] < 1.0:
            return OVER_RATE
        if self._queues.waiting(key) >= self.depth:
            return QUEUE_FULL
        if rate:
            bucket[0] -= 1.0
        self._queues.put(key, item)
        return None

    def observe(self, now: float, busy: float, cpu: float = 0.0, stalled: float = 0.0,
                elsewhere: Iterable = ()) -> float | None:
        """One look, which the server takes every ADAPT_WINDOW: since the last one the loop was
        busy `busy` seconds (wall time); `cpu` and `stalled` are running totals in seconds: the
        CPU this process has used (its store threads' work shows here while the loop waits) and
        the time tasks on this machine waited for a CPU (Linux PSI: a worker starved of a core by
        other processes shows here). `elsewhere`: the other workers' last posts of their `heard`,
        (NAS key, last heard, offered/s, posted at) each (radiusd.radius.fairness_board): a
        NAS the kernel gave to another worker contends for the same CPUs. Moves the ceiling
        (see the module's text) and sets `heard` for this worker's post; returns the ceiling
        when it changed (0.0: lifted), else None. The first look only starts the count."""
        if not self.adaptive:
            return None
        if self._last_look is None:
            self._last_look, self._cpu, self._stalled = now, cpu, stalled
            return None
        elapsed = now - self._last_look
        if elapsed <= 0:
            return None
        load = max(busy, cpu - self._cpu, stalled - self._stalled) / elapsed
        here = {key: n / elapsed for key, n in self._offered.items()}
        self._last_look, self._cpu, self._stalled, self._offered = now, cpu, stalled, {}
        heard_at = {key: bucket[1] for key, bucket in self._buckets.items() if now - bucket[1] < CONTENDING_FOR}
        self.heard = sorted(((key, last, here.get(key, 0.0)) for key, last in heard_at.items()),
                            key=lambda entry: (-entry[2], -entry[1]))
        rates = dict(here)   # the whole server's rate per NAS: ours plus the other workers' fresh posts
        for key, last, rate, posted in elsewhere:
            if now - last < CONTENDING_FOR and last > heard_at.get(key, -CONTENDING_FOR):
                heard_at[key] = last
            if now - posted <= STALE_AFTER:
                rates[key] = rates.get(key, 0.0) + rate
        contending = len(heard_at)
        # The NAS this worker can hold down is the one that asks most of it, measured against
        # every other NAS the server hears. Rates are what NAS send, not what they were let
        # through: a ceiling measured on what it let through would never rise again.
        mine = max(here, key=here.__getitem__) if here else None
        top = rates.get(mine, 0.0)
        second = max((rate for key, rate in rates.items() if key != mine), default=0.0)
        clamped = here.get(self._clamped, 0.0)   # what the NAS the ceiling came down for still sends here
        ceiling = self.ceiling
        if contending >= 2 and load > BUSY_HIGH and second > 0 and top > 2 * second:
            # Only on what this window showed: a NAS that sent nothing in it (a flooder that has
            # just stopped) is no one to protect. The first time straight to twice the next
            # NAS's rate (the others wait behind the flood until it is down; halving from the
            # worker's whole rate took half a second), then halving, never below that.
            ceiling = max(FLOOR, 2 * second, CEILING_DOWN * min(here[mine], ceiling) if ceiling else 0.0)
            self._clamped = mine
        elif ceiling is not None and (contending < 2 or clamped < ceiling / 2):
            ceiling = None   # nobody left to protect, or the NAS it was for no longer presses on it
        elif ceiling is not None and load < BUSY_LOW:
            ceiling *= CEILING_UP
        if ceiling is not None and ceiling < 2 * second:
            ceiling = 2 * second   # whatever the load: room for every NAS that does not flood
        # Only a NAS that sent more than the ceiling in this window meets it: one that has only
        # begun (its rate not known yet) or sends less keeps its own bucket.
        pressing = set() if ceiling is None else {key for key, rate in here.items() if rate > ceiling}
        changed = ceiling != self.ceiling
        self._apply(ceiling, pressing)
        return (ceiling or 0.0) if changed else None

    def _apply(self, ceiling: float | None, pressing) -> None:
        self.ceiling = ceiling
        if ceiling is None or (self.rate and ceiling >= self.rate):
            pressing = set()
        else:
            self._rate, self._cap = ceiling, max(1.0, ceiling * ADAPT_WINDOW)
        # a NAS let go refills at its own rate from what it has (no burst as a gift: a ceiling
        # that comes and goes would hand a flooder a whole burst each time)
        for key in self._pressing - pressing:
            self._buckets[key][2] = False
        for key in pressing:
            bucket = self._buckets[key]
            bucket[2] = True
            bucket[0] = min(bucket[0], self._cap)   # tokens saved under its own rate: not a pass
            # and what it has queued beyond one window's worth (at first: what it queued under
            # its old budget), oldest first as they have waited longest: decided, that backlog
            # held the worker for the others' first answers (the first 0.1-0.5 s of a victim's
            # traffic were its slowest)
            self.shed.extend((key, item) for item in self._queues.shed(key, int(self._cap)))
        self._pressing = pressing

    def take(self):
        """The next item to process (one per key per turn), or None when nothing waits."""
        return self._queues.take()

    def waiting(self, key) -> int:
        return self._queues.waiting(key)
