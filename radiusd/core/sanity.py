"""What a switch may claim about a call, and what we do with a claim out of bounds (pure).

A configured NAS signs its packets, but a buggy or compromised one can still say anything. The
accounting engine (radiusd.core.accounting) applies these rules before it decides, and every
rule that fires leaves its kind on the CDR (`cdrs.flags`, comma separated), in
`radiusd_cdr_anomalies_total{kind}` and in a `cdr_anomaly` log line:

- `time_out_of_bounds`: a time before 2000-01-01 or later than now + `max_clock_skew` is treated
  as absent (the event falls back to its receive time, the CDR to the times it has).
- `disconnect_before_connect`: the CDR's connect time is clamped to its disconnect time.
- `duration_capped`: the switch reported more than the leg was granted at authorization (its
  reservation's max_duration, else the server's max_call_duration) plus `duration_slack`; the CDR
  records the reported duration and bills the cap.
- `identifier_escaped`: control characters (NUL included) in Acct-Session-Id or a call id are
  written as `\\xNN` (the edge does this, radiusd.radius.dialects), never dead-lettered.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import re
from dataclasses import dataclass

EARLIEST = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
UINT32_MAX = 2**32 - 1

TIME_OUT_OF_BOUNDS = "time_out_of_bounds"
DISCONNECT_BEFORE_CONNECT = "disconnect_before_connect"
DURATION_CAPPED = "duration_capped"
IDENTIFIER_ESCAPED = "identifier_escaped"
KINDS = (TIME_OUT_OF_BOUNDS, DISCONNECT_BEFORE_CONNECT, DURATION_CAPPED, IDENTIFIER_ESCAPED)


@dataclass(frozen=True, slots=True)
class Limits:
    """The bounds (settings `[accounting] max_clock_skew_seconds`, `duration_slack_seconds`, and
    `[limits] max_call_duration` for a leg that has no reservation)."""
    max_clock_skew: int = 86400
    duration_slack: int = 60
    max_call_duration: int = 7200

    def latest(self, now: dt.datetime) -> dt.datetime:
        return now + dt.timedelta(seconds=self.max_clock_skew)

    def billable(self, granted: int | None) -> int:
        """The most seconds a leg granted `granted` at authorization may bill."""
        return (granted if granted is not None and granted > 0 else self.max_call_duration) + self.duration_slack


DEFAULT_LIMITS = Limits()

_TIMES = ("setup_time", "connect_time", "disconnect_time", "event_time")


def in_bounds(value: dt.datetime | None, now: dt.datetime, limits: Limits) -> bool:
    return value is None or EARLIEST <= value <= limits.latest(now)


def bounded(facts, now: dt.datetime, limits: Limits = DEFAULT_LIMITS):
    """`facts` (AcctFacts) with every out-of-bounds time absent and flagged; the event time then
    is `now` (the receive time, as if the switch had sent none)."""
    changes = {name: None for name in _TIMES if not in_bounds(getattr(facts, name), now, limits)}
    if not changes:
        return facts
    if "event_time" in changes:
        changes["event_time"] = now
    return dataclasses.replace(facts, **changes, flags=add(facts.flags, TIME_OUT_OF_BOUNDS))


def add(flags: tuple[str, ...], *kinds: str) -> tuple[str, ...]:
    return tuple(sorted(set(flags) | set(kinds)))


def merged(*parts: str | tuple[str, ...]) -> tuple[str, ...]:
    """Kinds from flag columns ("a,b") and facts' tuples, once each, sorted."""
    kinds: set[str] = set()
    for part in parts:
        kinds.update(part.split(",") if isinstance(part, str) else part)
    kinds.discard("")
    return tuple(sorted(kinds))


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1 controls (Unicode category Cc)


def escape_identifier(text: str | None) -> tuple[str | None, bool]:
    """(text with control characters as `\\xNN`, whether any was escaped)."""
    if text is None or not _CONTROL.search(text):
        return text, False
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text), True
