"""Switch time stamps -> aware UTC datetimes (pure functions).

Formats accepted (voip-radius.md §2.5):
- Cisco NTP style `HH:MM:SS.mmm ZON Www Mmm D YYYY`, e.g. `14:30:25.429 GMT Wed Jan 23 2002`;
  optional leading `*` (clock never set) or `.` (NTP sync lost); day of 1 or 2 digits; the
  weekday may be missing (Acme Packet); milliseconds optional. The weekday is not checked.
- ISO-8601 `2020-09-27T22:59:21.252000+03:00` (also `+0300`, `Z`, or a space instead of `T`);
  without an offset the time is taken as UTC.
- Epoch seconds, integer or with a fraction (`1606330000` or Kamailio's `1606330000.123456`).

A zone abbreviation we do not know is read as UTC and reported in the warnings list, so the
server can log it; an unparseable value gives None (and a warning), never an exception.
"""
from __future__ import annotations

import datetime as dt
import functools
import re

UTC = dt.timezone.utc

# Abbreviations seen from switches; ambiguous ones (IST, CST in China...) take the meaning
# used by most VoIP gear (North America / Europe). Unknown -> UTC with a warning.
ZONE_OFFSETS_HOURS: dict[str, float] = {
    "UTC": 0, "GMT": 0, "UT": 0, "Z": 0, "WET": 0, "WEST": 1, "BST": 1,
    "CET": 1, "CEST": 2, "MET": 1, "MEST": 2, "EET": 2, "EEST": 3, "MSK": 3, "MSD": 4,
    "EST": -5, "EDT": -4, "CST": -6, "CDT": -5, "MST": -7, "MDT": -6, "PST": -8, "PDT": -7,
    "AKST": -9, "AKDT": -8, "HST": -10, "AST": -4, "ADT": -3, "NST": -3.5, "NDT": -2.5,
    "IST": 5.5, "PKT": 5, "ICT": 7, "WIB": 7, "HKT": 8, "SGT": 8, "AWST": 8, "JST": 9, "KST": 9,
    "ACST": 9.5, "AEST": 10, "AEDT": 11, "NZST": 12, "NZDT": 13, "SAST": 2, "BRT": -3, "ART": -3,
}

_MONTHS = {m: i for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1)}

_CISCO = re.compile(
    r"""^[*.]?\s*
    (?P<h>\d{1,2}):(?P<m>\d{2}):(?P<s>\d{2})(?:\.(?P<frac>\d{1,6}))?\s+
    (?:(?!(?:mon|tue|wed|thu|fri|sat|sun)\b)(?P<zone>[A-Za-z]{1,5}|[+-]\d{2}:?\d{2})\s+)?
    (?:(?:mon|tue|wed|thu|fri|sat|sun)[a-z]*\s+)?
    (?P<mon>jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\s+
    (?P<day>\d{1,2})\s+(?P<year>\d{4})$""",
    re.IGNORECASE | re.VERBOSE,
)
_EPOCH = re.compile(r"^\d{1,12}(?:\.\d{1,9})?$")
_ISO_COMPACT_OFFSET = re.compile(r"([+-]\d{2})(\d{2})$")


def parse_epoch(value: int | float | str | bytes) -> dt.datetime | None:
    """Seconds since 1970 (Event-Timestamp) -> aware UTC; None if not a plausible number."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, str):
        value = value.strip()
        if not _EPOCH.match(value):
            return None
        value = float(value) if "." in value else int(value)
    try:
        return dt.datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _zone_offset(zone: str | None, warnings: list[str] | None) -> dt.timezone:
    if not zone:
        return UTC
    if zone[0] in "+-":
        digits = zone[1:].replace(":", "")
        minutes = int(digits[:2]) * 60 + int(digits[2:])
        return dt.timezone(dt.timedelta(minutes=minutes if zone[0] == "+" else -minutes))
    hours = ZONE_OFFSETS_HOURS.get(zone.upper())
    if hours is None:
        if warnings is not None:
            warnings.append(f"unknown time zone {zone!r}, read as UTC")
        return UTC
    return dt.timezone(dt.timedelta(minutes=int(hours * 60)))


def parse_cisco_time(text: str, warnings: list[str] | None = None) -> dt.datetime | None:
    match = _CISCO.match(text.strip())
    if not match:
        return None
    frac = (match["frac"] or "0").ljust(6, "0")
    try:
        local = dt.datetime(
            int(match["year"]), _MONTHS[match["mon"][:3].lower()], int(match["day"]),
            int(match["h"]), int(match["m"]), int(match["s"]), int(frac),
            tzinfo=_zone_offset(match["zone"], warnings),
        )
    except ValueError:
        return None
    return local.astimezone(UTC)


def parse_iso_time(text: str) -> dt.datetime | None:
    text = text.strip()
    if len(text) < 10 or not text[:4].isdigit() or text[4] != "-":
        return None
    text = _ISO_COMPACT_OFFSET.sub(r"\1:\2", text) if "T" in text or " " in text else text
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def parse_switch_time(text: str | bytes | None, warnings: list[str] | None = None) -> dt.datetime | None:
    """Any of the formats above -> aware UTC datetime, or None (with a warning) if unreadable."""
    if text is None:
        return None
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = text.strip()
    if not text:
        return None
    value, found = _parse_text(text)
    if found and warnings is not None:
        warnings.extend(found)
    return value


@functools.lru_cache(maxsize=8192)
def _parse_text(text: str) -> tuple[dt.datetime | None, tuple[str, ...]]:
    # Pure and keyed by the raw text: a switch sends the same second in many records (start of
    # one call, setup of the next), and the regex + datetime build was ~10% of the accounting path.
    warnings: list[str] = []
    value = parse_cisco_time(text, warnings)
    if value is None:
        value = parse_iso_time(text)
    if value is None:
        value = parse_epoch(text)
    if value is None:
        warnings.append(f"unreadable time {text[:64]!r}")
    return value, tuple(warnings)
