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
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal

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
    """Longest call (seconds) whose cost stays within `available`; `cap` when credit is unlimited.

    The answer is a billed-step boundary: a call of exactly that length costs at most
    `available`, one second more would cross into a step the balance cannot pay. Returns 0 when
    not even the first billing step is affordable.
    """
    if available is None or rate.price_per_minute == 0:
        if available is not None and available < rate.connection_fee:
            return 0
        return cap
    spendable = available - rate.connection_fee
    if spendable < 0:
        return 0
    affordable = int((spendable * _SIXTY / rate.price_per_minute).to_integral_value(rounding=ROUND_FLOOR))
    # rounding of the cost to 6 places may let one more second through: check the boundary exactly
    minimum = rate.minimum_seconds
    interval = max(1, rate.interval_seconds)
    if affordable < max(minimum, 1):
        return 0
    if affordable <= minimum:
        seconds = minimum
    else:
        seconds = minimum + ((affordable - minimum) // interval) * interval
    while seconds > 0 and cost_of_billed(billed_seconds(seconds, rate), rate) > available:
        seconds -= interval
    if seconds <= 0 or seconds < max(1, min(minimum, 1)):
        return 0
    return min(seconds, cap)
