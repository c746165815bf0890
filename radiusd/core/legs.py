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

def start_times(facts, now: dt.datetime) -> tuple[dt.datetime | None, dt.datetime]:
    """(started_at, last_seen_at) of a leg opened by its Start; started_at None: not connected yet.

    A Start with h323-connect-time is connected then. One with a setup time and no connect time
    was sent at call setup (Yate does): the leg is ringing, its billable start comes from a later
    Interim (or the Stop). A Start with neither (Kamailio: sent on the 200 OK) is the connect.
    """
    seen = facts.event_time or now
    if facts.connect_time is not None:
        return facts.connect_time, seen
    if facts.setup_time is not None and not facts.session_time:
        return None, seen
    return seen, seen


def connected_at(facts, seen: dt.datetime, started_at: dt.datetime | None) -> dt.datetime | None:
    """The billable start of an open leg after an Interim-Update.

    An h323-connect-time in the Interim is the connect time. Else Acct-Session-Time counts the
    seconds since the connect: it sets the start of a leg not connected yet, and moves a start
    taken from a Start sent at setup forward (not for a few seconds of clock jitter).
    """
    if facts.connect_time is not None:
        return facts.connect_time
    if facts.session_time:
        by_session = seen - dt.timedelta(seconds=facts.session_time)
        if started_at is None or by_session > started_at + dt.timedelta(seconds=_JITTER):
            return by_session
    return started_at


_JITTER = 2


def interim_progress(facts, now: dt.datetime, started_at: dt.datetime | None,
                     last_seen_at: dt.datetime, session_seconds: int | None) -> tuple[dt.datetime, int]:
    """(last_seen_at, session_seconds) of an open leg after an Interim-Update.

    max(): a late (replayed, reordered) Interim never moves a call backwards.
    """
    seen = facts.event_time or now
    seconds = _since_start(facts.session_time, seen, started_at)
    return max(last_seen_at, seen), max(session_seconds or 0, seconds or 0)


def _since_start(session_time: int | None, seen: dt.datetime, started_at: dt.datetime | None) -> int | None:
    """Seconds of the call proven at `seen`, counted from the billable start `started_at`.

    An Acct-Session-Time reaching back before that start (the switch counts from an earlier
    moment than the connect time it reported, or an Interim sent before the connect was known is
    repeated after it) proves only the time since the start: otherwise a retransmission could
    add seconds the connect time had already taken away."""
    if started_at is None:
        return session_time
    since = max(0, int((seen - started_at).total_seconds()))
    return since if session_time is None else min(session_time, since)


def interim_opening(facts, now: dt.datetime) -> tuple[dt.datetime | None, dt.datetime, int]:
    """(started_at, last_seen_at, session_seconds) of a leg first seen by an Interim (its Start was lost)."""
    seen = facts.event_time or now
    seconds = max(0, facts.session_time or 0)
    if facts.connect_time is None and not seconds and facts.setup_time is not None:
        return None, seen, 0   # still ringing
    if facts.connect_time is not None:   # as a repeat of this Interim would count it (interim_progress)
        return facts.connect_time, seen, _since_start(facts.session_time, seen, facts.connect_time)
    return seen - dt.timedelta(seconds=seconds), seen, seconds
