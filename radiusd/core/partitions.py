"""Monthly CDR partitions: which months, what they are called, which to create (pure).

The store (radiusd.store.partitions) reads what exists and creates what this decides.
"""
from __future__ import annotations

import datetime as dt

PARENT = "cdrs"
DEFAULT = "cdrs_default"


def month_start(at: dt.datetime) -> dt.datetime:
    at = at.astimezone(dt.timezone.utc)
    return dt.datetime(at.year, at.month, 1, tzinfo=dt.timezone.utc)


def next_month(start: dt.datetime) -> dt.datetime:
    return start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)


def partition_name(start: dt.datetime) -> str:
    return f"{PARENT}_{start.year:04d}_{start.month:02d}"


def month_of(name: str) -> dt.datetime:
    """The first instant of the month a partition named by `partition_name` holds."""
    return dt.datetime.strptime(name, f"{PARENT}_%Y_%m").replace(tzinfo=dt.timezone.utc)


def months_wanted(now: dt.datetime, months_ahead: int) -> list[dt.datetime]:
    """The month of `now` and the `months_ahead` after it."""
    wanted = [month_start(now)]
    for _ in range(months_ahead):
        wanted.append(next_month(wanted[-1]))
    return wanted


def plan(wanted: list[dt.datetime], attached: set[str], in_default: dict[str, int]
         ) -> tuple[list[dt.datetime], list[str], dict[str, str]]:
    """(months to create, partitions present, partitions skipped -> why) for the wanted months:
    a month whose CDRs already sit in the default partition is left to `--move-default`."""
    create, present, skipped = [], [], {}
    for start in wanted:
        name = partition_name(start)
        if name in attached:
            present.append(name)
        elif in_default.get(name):
            skipped[name] = (f"{in_default[name]} CDRs of this month are in {DEFAULT}: not attached under "
                             f"traffic; move them with `radiusd db partitions --move-default`")
        else:
            create.append(start)
    return create, present, skipped
