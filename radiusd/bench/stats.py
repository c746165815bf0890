"""Counting and latency percentiles for one benchmark run."""
from __future__ import annotations

import math
from array import array


def percentile(sorted_values, p: float) -> float | None:
    """The p-th percentile (0..100) of already sorted values, linear between closest ranks.

    Same definition as numpy's default: rank = p/100 * (n-1). None when there are no values.
    """
    n = len(sorted_values)
    if n == 0:
        return None
    if not 0 <= p <= 100:
        raise ValueError(f"percentile: {p} is not within 0..100")
    rank = p / 100 * (n - 1)
    lo = math.floor(rank)
    hi = min(lo + 1, n - 1)
    frac = rank - lo
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac


class KindStats:
    """Counters and latencies of one request kind (auth, acct-start, acct-stop)."""

    __slots__ = ("sent", "responses", "accepts", "rejects", "acct_ok", "timeouts", "retransmits", "lost",
                 "bad", "latencies")

    def __init__(self):
        self.sent = self.responses = self.accepts = self.rejects = self.acct_ok = 0
        self.timeouts = self.retransmits = self.lost = self.bad = 0
        self.latencies = array("d")

    def merge(self, other: "KindStats") -> None:
        for name in self.__slots__[:-1]:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.latencies.extend(other.latencies)

    def to_dict(self) -> dict:
        values = sorted(self.latencies)
        ms = lambda v: None if v is None else round(v * 1000, 3)  # noqa: E731
        return {
            "sent": self.sent, "responses": self.responses, "accepts": self.accepts, "rejects": self.rejects,
            "acct_responses": self.acct_ok, "timeouts": self.timeouts, "retransmits": self.retransmits,
            "lost": self.lost, "bad_replies": self.bad,
            "latency_ms": {
                "p50": ms(percentile(values, 50)), "p95": ms(percentile(values, 95)),
                "p99": ms(percentile(values, 99)), "max": ms(values[-1] if values else None),
                "mean": ms(sum(values) / len(values) if values else None),
            },
        }

    def dump(self) -> dict:
        """Raw form for passing between processes."""
        d = {name: getattr(self, name) for name in self.__slots__[:-1]}
        d["latencies"] = self.latencies.tobytes()
        return d

    @classmethod
    def load(cls, d: dict) -> "KindStats":
        k = cls()
        for name in cls.__slots__[:-1]:
            setattr(k, name, d[name])
        k.latencies.frombytes(d["latencies"])
        return k
