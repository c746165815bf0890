"""Which monthly CDR partitions to create: pure decisions (radiusd.core.partitions)."""
from __future__ import annotations

import datetime as dt

from radiusd.core.partitions import month_of, months_wanted, partition_name, plan

UTC = dt.timezone.utc


def test_the_months_wanted_roll_over_the_year_and_are_utc_months():
    # 23:30 on 31 December in New York is already January in UTC
    late = dt.datetime(2026, 12, 31, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    assert [partition_name(m) for m in months_wanted(late, 2)] == ["cdrs_2027_01", "cdrs_2027_02", "cdrs_2027_03"]
    assert [partition_name(m) for m in months_wanted(dt.datetime(2026, 11, 15, tzinfo=UTC), 2)] == [
        "cdrs_2026_11", "cdrs_2026_12", "cdrs_2027_01"]
    assert month_of("cdrs_2027_01") == dt.datetime(2027, 1, 1, tzinfo=UTC)


def test_a_month_is_created_unless_present_and_skipped_when_its_cdrs_sit_in_the_default_partition():
    wanted = months_wanted(dt.datetime(2026, 11, 2, tzinfo=UTC), 2)
    create, present, skipped = plan(wanted, {"cdrs_2026_11"}, {"cdrs_2026_12": 7, "cdrs_2027_01": 0})
    assert present == ["cdrs_2026_11"]
    assert [partition_name(m) for m in create] == ["cdrs_2027_01"]   # no CDR of January in the default yet
    assert list(skipped) == ["cdrs_2026_12"]
    assert "7 CDRs" in skipped["cdrs_2026_12"] and "--move-default" in skipped["cdrs_2026_12"]
