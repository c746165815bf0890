import datetime as dt

import pytest

from radiusd.radius.times import parse_epoch, parse_switch_time

UTC = dt.timezone.utc


@pytest.mark.parametrize("text, expected", [
    ("14:30:25.429 GMT Wed Jan 23 2002", dt.datetime(2002, 1, 23, 14, 30, 25, 429000, UTC)),
    ("*14:30:25.429 GMT Wed Jan 23 2002", dt.datetime(2002, 1, 23, 14, 30, 25, 429000, UTC)),
    (".14:30:25.429 UTC Wed Jan 23 2002", dt.datetime(2002, 1, 23, 14, 30, 25, 429000, UTC)),
    ("15:59:47.000 EET Sun Dec 25 2005", dt.datetime(2005, 12, 25, 13, 59, 47, tzinfo=UTC)),
    ("20:24:19.703 GMT Wed Nov 25 2026", dt.datetime(2026, 11, 25, 20, 24, 19, 703000, UTC)),
    ("10:00:00.000 GMT Mon Mar 2 2026", dt.datetime(2026, 3, 2, 10, 0, tzinfo=UTC)),   # Sippy: 1-digit day
    ("10:00:00.000 EST Mar 02 2026", dt.datetime(2026, 3, 2, 15, 0, tzinfo=UTC)),      # Acme: no weekday
    ("10:00:00 PDT Tue Jun 16 2026", dt.datetime(2026, 6, 16, 17, 0, tzinfo=UTC)),     # no milliseconds
    ("2020-09-27T22:59:21.252000+0300", dt.datetime(2020, 9, 27, 19, 59, 21, 252000, UTC)),
    ("2020-09-27T22:59:21+03:00", dt.datetime(2020, 9, 27, 19, 59, 21, tzinfo=UTC)),
    ("2020-09-27 22:59:21", dt.datetime(2020, 9, 27, 22, 59, 21, tzinfo=UTC)),         # no zone: UTC
    ("2020-09-27T22:59:21Z", dt.datetime(2020, 9, 27, 22, 59, 21, tzinfo=UTC)),
    ("1606330000", dt.datetime(2020, 11, 25, 18, 46, 40, tzinfo=UTC)),
    ("1606330000.250000", dt.datetime(2020, 11, 25, 18, 46, 40, 250000, UTC)),
])
def test_switch_time_formats_become_aware_utc(text, expected):
    warnings = []
    value = parse_switch_time(text, warnings)
    assert value == expected
    assert value.tzinfo is not None and value.utcoffset() == dt.timedelta(0)
    assert warnings == []


def test_unknown_zone_reads_as_utc_and_warns():
    warnings = []
    assert parse_switch_time("14:30:25.429 XYZ Wed Jan 23 2002", warnings) == dt.datetime(2002, 1, 23, 14, 30, 25, 429000, UTC)
    assert warnings and "XYZ" in warnings[0]


@pytest.mark.parametrize("text", ["", "garbage", "25:99:00.000 GMT Wed Jan 23 2002", "14:30:25 GMT Wed Feb 30 2002"])
def test_unreadable_time_is_none_never_an_exception(text):
    warnings = []
    assert parse_switch_time(text, warnings) is None
    assert (warnings != []) == bool(text)


def test_epoch_accepts_int_float_string_and_bytes():
    assert parse_epoch(0) == dt.datetime(1970, 1, 1, tzinfo=UTC)
    assert parse_epoch(b"1606330000.5").microsecond == 500000
    assert parse_epoch("nope") is None


def test_repeated_times_give_equal_results_and_warn_every_time():
    # switch times repeat within a second; the parse is cached by text, and a cached answer
    # must still report its warning to every caller (each record logs it)
    for _ in range(3):
        warnings = []
        assert parse_switch_time("14:30:25.429 XYZ Wed Jan 23 2002", warnings) == \
            dt.datetime(2002, 1, 23, 14, 30, 25, 429000, UTC)
        assert warnings == ["unknown time zone 'XYZ', read as UTC"]
        warnings = []
        assert parse_switch_time(b" 15:59:47.000 EET Sun Dec 25 2005 ", warnings) == \
            dt.datetime(2005, 12, 25, 13, 59, 47, tzinfo=UTC)
        assert warnings == []
        warnings = []
        assert parse_switch_time("not a time", warnings) is None
        assert warnings == ["unreadable time 'not a time'"]
    assert parse_switch_time("not a time") is None   # no warnings list: nothing to report into
