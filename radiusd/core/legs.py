"""Pure arithmetic of one call leg: its duration, its times, its rate and its cost.

radiusd.core.accounting decides *which* leg and account a packet is about and what happens to
it; this module turns what is known about a leg into the numbers its row and CDR carry.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from radiusd.core.rating import MONEY_QUANTUM, call_cost, find_rate
from radiusd.core.snapshot import Rate, RateTableInfo

ZERO = Decimal(0).quantize(MONEY_QUANTUM)


def _seconds(later: dt.datetime | None, earlier: dt.datetime | None) -> int | None:
    if later is None or earlier is None:
        return None
    return max(0, int((later - earlier).total_seconds()))


def leg_duration(
    session_time: int | None,
    connect_time: dt.datetime | None,
    disconnect_time: dt.datetime | None,
    started_at: dt.datetime | None,
    stop_time: dt.datetime | None,
) -> int:
    """Seconds the leg was connected.

    Acct-Session-Time when the switch sends it; else disconnect - connect time (Cisco h323-*
    times); else the Stop's event time - the Start's (Kamailio sends no Acct-Session-Time).
    """
    if session_time is not None and session_time >= 0:
        return int(session_time)
    by_times = _seconds(disconnect_time, connect_time)
    if by_times is not None:
        return by_times
    by_events = _seconds(stop_time, started_at)
    return by_events if by_events is not None else 0


def strip_tech_prefix(number: str | None, tech_prefix: str) -> tuple[str, str]:
    """(number without the tech prefix, the prefix actually stripped)."""
    number = number or ""
    if tech_prefix and number.startswith(tech_prefix):
        return number[len(tech_prefix):], tech_prefix
    return number, ""


@dataclass(frozen=True, slots=True)
class LegCharge:
    rate_table: RateTableInfo | None
    rate: Rate | None
    billed_seconds: int
    cost: Decimal
    currency: str

    @property
    def rated(self) -> bool:
        """False when no rate applied: the CDR then has no price and a zero cost (flagged)."""
        return self.rate is not None


def charge_leg(
    table: RateTableInfo | None,
    called: str,
    at: dt.datetime,
    duration: int,
    fallback_currency: str = "USD",
    chargeable: bool = True,
) -> LegCharge:
    """Rate a finished leg with `table` (the rate effective at `at`, the connect time).

    `chargeable=False` (Failed status) records the rate but bills nothing.
    """
    currency = table.currency if table is not None else fallback_currency
    rate = find_rate(table, called, at)
    if rate is None:
        return LegCharge(table, None, 0, ZERO, currency)
    if not chargeable:
        return LegCharge(table, rate, 0, ZERO, currency)
    billed, cost = call_cost(duration, rate)
    return LegCharge(table, rate, billed, cost, currency)


# --- how Start and Interim-Update move an open leg (shared by the per-record and the group path)

def start_times(facts, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """(started_at, last_seen_at) of a leg opened by its Start."""
    started = facts.connect_time or facts.event_time or now
    return started, facts.event_time or started


def interim_progress(facts, now: dt.datetime, started_at: dt.datetime | None,
                     last_seen_at: dt.datetime, session_seconds: int | None) -> tuple[dt.datetime, int]:
    """(last_seen_at, session_seconds) of an open leg after an Interim-Update.

    max(): a late (replayed, reordered) Interim never moves a call backwards.
    """
    seen = facts.event_time or now
    seconds = facts.session_time
    if seconds is None and started_at is not None:
        seconds = max(0, int((seen - started_at).total_seconds()))
    return max(last_seen_at, seen), max(session_seconds or 0, seconds or 0)


def interim_opening(facts, now: dt.datetime) -> tuple[dt.datetime, dt.datetime, int]:
    """(started_at, last_seen_at, session_seconds) of a leg first seen by an Interim (its Start was lost)."""
    seen = facts.event_time or now
    seconds = max(0, facts.session_time or 0)
    return facts.connect_time or (seen - dt.timedelta(seconds=seconds)), seen, seconds
