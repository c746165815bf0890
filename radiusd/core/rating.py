"""Rating: which rate applies, what a call costs, and how long a balance lets it last.

Billing rule (documented in the README):
- a call no longer than the rate's grace seconds is free (no connection fee either);
- otherwise billed = max(duration, minimum), then rounded up to whole intervals past the minimum:
  billed = minimum + ceil((duration - minimum) / interval) * interval  (43 s at 30/6 -> 48 s);
- cost = connection fee + price per minute * billed / 60, rounded half-up to 6 decimal places
  (the store's money precision) once, at the end.
"""
from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal

from radiusd.core.snapshot import Rate, RateTableInfo

MONEY_QUANTUM = Decimal("0.000001")
_SIXTY = Decimal(60)


def find_rate(table: RateTableInfo | None, number: str, at: dt.datetime) -> Rate | None:
    """The rate for the longest prefix of `number` that is effective at `at`."""
    if table is None or not number:
        return None
    for length in range(min(len(number), table.longest_prefix), -1, -1):
        candidates = table.rates_by_prefix.get(number[:length])
        if not candidates:
            continue
        for rate in candidates:  # newest effective_from first
            if rate.effective_from <= at and (rate.effective_until is None or at < rate.effective_until):
                return rate
    return None


def billed_seconds(duration: int, rate: Rate) -> int:
    if duration <= 0 or duration <= rate.grace_seconds:
        return 0
    minimum = rate.minimum_seconds
    if duration <= minimum:
        return minimum
    interval = max(1, rate.interval_seconds)
    steps = -(-(duration - minimum) // interval)
    return minimum + steps * interval


def cost_of_billed(billed: int, rate: Rate) -> Decimal:
    if billed <= 0:
        return Decimal(0).quantize(MONEY_QUANTUM)
    raw = rate.connection_fee + rate.price_per_minute * Decimal(billed) / _SIXTY
    return raw.quantize(MONEY_QUANTUM, rounding=ROUND_HALF_UP)


def call_cost(duration: int, rate: Rate) -> tuple[int, Decimal]:
    """(billed seconds, cost) of a finished call of `duration` seconds."""
    billed = billed_seconds(duration, rate)
    return billed, cost_of_billed(billed, rate)


def min_step_cost(rate: Rate) -> Decimal:
    """What the shortest chargeable call costs: connection fee plus the first billing step."""
    first_step = max(rate.minimum_seconds, max(1, rate.interval_seconds))
    return cost_of_billed(first_step, rate)


def max_duration(available: Decimal | None, rate: Rate, cap: int) -> int:
    """Longest call (seconds, at most `cap`) whose cost stays within `available`; `cap` when unlimited.

    The answer is a billed-step boundary: a call of exactly that length costs at most
    `available`, one second more would cross into a step the balance cannot pay (unless the cap
    stops it first). Returns 0 when not even the first charged second (just past the grace
    period) is affordable: a balance that only covers free grace calls does not admit a call.
    The cost of a call never decreases with its length, so the boundary is found by bisection
    over the exact, rounded cost: no floating point, no off-by-one-step from rounding.
    """
    if cap <= 0:
        return 0
    if available is None:
        return cap

    def affordable(seconds: int) -> bool:
        return cost_of_billed(billed_seconds(seconds, rate), rate) <= available

    first_charged = min(rate.grace_seconds + 1, cap)
    if not affordable(first_charged):
        return 0
    if affordable(cap):
        return cap
    low, high = first_charged, cap  # affordable(low), not affordable(high)
    while high - low > 1:
        middle = (low + high) // 2
        if affordable(middle):
            low = middle
        else:
            high = middle
    return low
