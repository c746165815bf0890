"""Rating: which rate applies, what a call costs, how long a balance lets it last.

Expected numbers are worked out by hand from the billing rule (minimum, then whole intervals,
grace free, connection fee, cost rounded half-up to 6 places), not taken from the code.
"""
from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radiusd.core.rating import billed_seconds, call_cost, find_rate, max_duration
from radiusd.core.snapshot import Rate, build_rate_table

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def rate(price="0.60", fee="0", minimum=0, interval=1, grace=0, prefix="49", **kw):
    return Rate(1, prefix, D(price), D(fee), minimum, interval, grace, **kw)


# --- billed seconds and cost -----------------------------------------------------------

@pytest.mark.parametrize("duration, billed", [
    (0, 0), (1, 30), (10, 30), (30, 30), (31, 36), (36, 36), (37, 42), (43, 48), (48, 48), (49, 54),
])
def test_minimum_30_interval_6(duration, billed):
    assert billed_seconds(duration, rate(minimum=30, interval=6)) == billed


@pytest.mark.parametrize("duration, billed", [(1, 60), (59, 60), (60, 60), (61, 120), (120, 120), (121, 180)])
def test_60_60_billing(duration, billed):
    assert billed_seconds(duration, rate(minimum=60, interval=60)) == billed


def test_per_second_billing():
    assert billed_seconds(43, rate(minimum=1, interval=1)) == 43
    assert billed_seconds(43, rate(minimum=0, interval=1)) == 43


def test_43_seconds_at_30_6_cost():
    # 48 billed seconds at 0.60/min = 0.48
    assert call_cost(43, rate(minimum=30, interval=6)) == (48, D("0.480000"))


def test_connection_fee_is_added_once():
    assert call_cost(43, rate(fee="0.05", minimum=30, interval=6)) == (48, D("0.530000"))
    assert call_cost(1, rate(fee="0.05", minimum=30, interval=6)) == (30, D("0.350000"))


def test_grace_calls_are_free_including_connection_fee():
    r = rate(fee="0.05", minimum=30, interval=6, grace=5)
    assert call_cost(5, r) == (0, D("0"))
    assert call_cost(6, r) == (30, D("0.350000"))


def test_zero_duration_is_free():
    assert call_cost(0, rate(fee="0.05")) == (0, D("0"))


def test_cost_rounds_half_up_to_six_places():
    # 1 s at 0.01/min = 0.0001666.. -> 0.000167 ; 3 s at 0.00001/min = 0.0000005 -> 0.000001
    assert call_cost(1, rate(price="0.01"))[1] == D("0.000167")
    assert call_cost(3, rate(price="0.00001"))[1] == D("0.000001")


# --- finding the rate ------------------------------------------------------------------

def at(days):
    return NOW + dt.timedelta(days=days)


def table(*rates):
    return build_rate_table(1, "retail", "USD", list(rates))


def test_longest_prefix_wins():
    t = table(rate("0.10", prefix="49"), rate("0.20", prefix="4930"), rate("0.30", prefix="49301"))
    assert find_rate(t, "4930123", NOW).prefix == "49301"
    assert find_rate(t, "4931000", NOW).prefix == "49"
    assert find_rate(t, "4930", NOW).prefix == "4930"
    assert find_rate(t, "3312345", NOW) is None


def test_empty_prefix_is_the_default_rate():
    t = table(rate("0.10", prefix=""), rate("0.20", prefix="49"))
    assert find_rate(t, "3312345", NOW).prefix == ""
    assert find_rate(t, "4912345", NOW).prefix == "49"


def test_future_rate_is_ignored():
    t = table(rate("0.10", prefix="49", effective_from=at(1)))
    assert find_rate(t, "4930", NOW) is None
    assert find_rate(t, "4930", at(1)).price_per_minute == D("0.10")


def test_expired_rate_is_ignored_end_date_exclusive():
    t = table(rate("0.10", prefix="49", effective_from=at(-10), effective_until=NOW))
    assert find_rate(t, "4930", NOW) is None
    assert find_rate(t, "4930", NOW - dt.timedelta(seconds=1)).price_per_minute == D("0.10")


def test_expired_longer_prefix_falls_back_to_shorter():
    t = table(rate("0.10", prefix="49"), rate("0.99", prefix="4930", effective_until=at(-1)))
    assert find_rate(t, "4930123", NOW).prefix == "49"


def test_newest_effective_rate_of_a_prefix_wins():
    t = table(
        rate("0.10", prefix="49", effective_from=at(-30)),
        rate("0.12", prefix="49", effective_from=at(-1)),
        rate("0.15", prefix="49", effective_from=at(5)),
    )
    assert find_rate(t, "4930", NOW).price_per_minute == D("0.12")
    assert find_rate(t, "4930", at(-10)).price_per_minute == D("0.10")
    assert find_rate(t, "4930", at(6)).price_per_minute == D("0.15")


def test_no_table_or_no_number_has_no_rate():
    assert find_rate(None, "4930", NOW) is None
    assert find_rate(table(rate(prefix="")), "", NOW) is None


# --- max duration ----------------------------------------------------------------------

def test_max_duration_at_30_6():
    # 1.00 at 0.60/min buys 100 s; billed steps are 30, 36, ..., 96, 102: 96 s costs 0.96
    r = rate(minimum=30, interval=6)
    assert max_duration(D("1.00"), r, 7200) == 96
    assert call_cost(96, r)[1] <= D("1.00") < call_cost(97, r)[1]


def test_max_duration_with_connection_fee():
    # 0.05 fee leaves 0.95 = 95 s; 90 s costs 0.95 exactly, 91 s is billed 96 s = 1.01
    assert max_duration(D("1.00"), rate(fee="0.05", minimum=30, interval=6), 7200) == 90


def test_max_duration_60_60():
    assert max_duration(D("2.50"), rate(price="1.00", minimum=60, interval=60), 7200) == 120


def test_exact_balance_buys_the_step():
    r = rate(minimum=30, interval=6)
    assert max_duration(D("0.30"), r, 7200) == 30
    assert max_duration(D("0.299999"), r, 7200) == 0


def test_balance_below_first_step_is_zero_even_with_grace():
    assert max_duration(D("0"), rate(minimum=30, interval=6, grace=10), 7200) == 0
    assert max_duration(D("-5"), rate(), 7200) == 0


def test_max_duration_capped():
    assert max_duration(D("1000000"), rate(), 7200) == 7200
    assert max_duration(D("1.00"), rate(), 60) == 60


def test_unlimited_credit_gets_the_cap():
    assert max_duration(None, rate(minimum=30, interval=6), 7200) == 7200


def test_free_destination():
    assert max_duration(D("0"), rate(price="0"), 7200) == 7200
    assert max_duration(D("0.04"), rate(price="0", fee="0.05"), 7200) == 0
    assert max_duration(D("0.05"), rate(price="0", fee="0.05"), 7200) == 7200


_MONEY = st.decimals(min_value=0, max_value=10, places=7, allow_nan=False, allow_infinity=False)


@settings(max_examples=3000, deadline=None)
@given(price=_MONEY, fee=st.decimals(min_value=0, max_value=1, places=6), minimum=st.integers(0, 120),
       interval=st.integers(1, 120), grace=st.integers(0, 10), cap=st.integers(1, 7200),
       available=st.decimals(min_value=-5, max_value=200, places=6),
       more=st.decimals(min_value=0, max_value=5, places=6))
def test_max_duration_is_exactly_the_affordable_boundary(price, fee, minimum, interval, grace, cap, available, more):
    """Whatever the rate and the money: the longest call the money pays, never a second more."""
    r = rate(price=price, fee=fee, minimum=minimum, interval=interval, grace=grace)
    seconds = max_duration(available, r, cap)
    assert 0 <= seconds <= cap
    if seconds == 0:
        # not even the first charged second after grace is affordable
        assert call_cost(min(grace + 1, cap), r)[1] > available
    else:
        assert call_cost(seconds, r)[1] <= available
    if 0 < seconds < cap:
        assert call_cost(seconds + 1, r)[1] > available
    # more money never buys a shorter call; unlimited credit gets the cap
    assert max_duration(available + more, r, cap) >= seconds
    assert max_duration(None, r, cap) == cap
