"""Pure pieces of accounting: disconnect causes -> CDR result, leg duration, leg charge."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from radiusd.core.causes import describe, parse_q850
from radiusd.core.legs import charge_leg, leg_duration, strip_tech_prefix
from radiusd.core.snapshot import Rate, build_rate_table

T0 = dt.datetime(2026, 11, 25, 20, 0, tzinfo=dt.timezone.utc)
S = dt.timedelta(seconds=1)


@pytest.mark.parametrize("raw,number", [
    ("10", 16), ("h323-disconnect-cause=10", 16), ("11", 17), ("2A", 42), ("2a", 42), ("0x22", 34),
    ("", None), ("zz", None), (None, None), ("FFF", None),
])
def test_cisco_hex_cause(raw, number):
    assert parse_q850(raw) == number


@pytest.mark.parametrize("duration,q850,terminate,expected", [
    (43, "10", 1, ("q850:16", "success")),
    (0, "10", 1, ("q850:16", "error")),           # normal clearing but nobody talked
    (0, "11", None, ("q850:17", "busy")),
    (0, "22", None, ("q850:34", "no_channel")),
    (0, "26", None, ("q850:38", "no_channel")),
    (0, "29", None, ("q850:41", "no_channel")),
    (0, "2A", None, ("q850:42", "no_channel")),
    (0, "2C", None, ("q850:44", "no_channel")),
    (0, "13", None, ("q850:19", "error")),        # no answer
    (12, "29", None, ("q850:41", "success")),     # connected, then dropped: still an answered call
    (0, None, 15, ("Service-Unavailable", "no_channel")),
    (0, None, 18, ("Host-Request", "error")),     # Yate: "RADIUS rejected"
    (30, None, 1, ("User-Request", "success")),
    (0, None, 99, ("acct:99", "error")),
    (0, None, None, ("", "error")),
])
def test_cause_and_result(duration, q850, terminate, expected):
    assert describe(duration, q850, terminate) == expected


def test_duration_prefers_session_time_then_cisco_times_then_events():
    assert leg_duration(43, T0, T0 + 50 * S, T0, T0 + 60 * S) == 43
    assert leg_duration(None, T0 + 2 * S, T0 + 45 * S, T0, T0 + 60 * S) == 43
    assert leg_duration(None, None, None, T0, T0 + 125 * S) == 125   # Kamailio: no Acct-Session-Time
    assert leg_duration(None, None, None, None, T0) == 0             # nothing known
    assert leg_duration(None, T0 + 9 * S, T0, None, None) == 0       # clocks backwards: never negative


def test_tech_prefix_stripped_only_when_present():
    assert strip_tech_prefix("99#4412345", "99#") == ("4412345", "99#")
    assert strip_tech_prefix("4412345", "99#") == ("4412345", "")
    assert strip_tech_prefix(None, "") == ("", "")


def test_leg_charge():
    table = build_rate_table(1, "retail", "EUR", [
        Rate(1, "44", Decimal("0.10"), minimum_seconds=30, interval_seconds=6),
        Rate(1, "33", Decimal("0.20"), effective_from=T0 + 3600 * S),
    ])
    charged = charge_leg(table, "441612345678", T0, 43)
    assert (charged.billed_seconds, charged.cost, charged.currency, charged.rated) == (48, Decimal("0.08"), "EUR", True)
    failed = charge_leg(table, "441612345678", T0, 43, chargeable=False)
    assert (failed.billed_seconds, failed.cost, failed.rate.prefix) == (0, 0, "44")
    not_yet = charge_leg(table, "33123", T0, 60)
    assert (not_yet.rated, not_yet.cost) == (False, 0)
    assert charge_leg(None, "441", T0, 60, fallback_currency="GBP").currency == "GBP"
