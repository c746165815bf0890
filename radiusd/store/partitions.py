"""Monthly partitions of the CDR table (PostgreSQL only; SQLite reports `partitioned=False`).
What they are and when they are made: docs/operations.md ("CDR partitions").

A month whose CDRs already sit in the default partition is skipped by the sweeper, never moved
behind the operator's back: moving them locks the default partition for as long as the move lasts
(`move_default_rows`, i.e. `radiusd db partitions --move-default`, one month per transaction).
Locks, in the order an insert takes them: SHARE UPDATE EXCLUSIVE on the parent (inserts go on),
ACCESS EXCLUSIVE on the default partition (CDRs have no foreign keys: ATTACH locks no row an
accounting transaction may hold). Every lock wait is cut at LOCK_TIMEOUT_MS, shorter than
PostgreSQL's deadlock_timeout (1 s): in a cycle this side gives up first and tries again later.
Several hosts may run this at once: each re-checks under the locks.
"""
from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field

import structlog
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from radiusd.core.partitions import (DEFAULT, month_of, month_start, months_wanted, next_month, partition_name,
                                     plan)
from radiusd.store import sql

log = structlog.get_logger("radiusd.partitions")

LOCK_TIMEOUT_MS = 200
INIT_MONTHS_AHEAD = 1          # `db init`: this month and the next
SWEEP_MONTHS_AHEAD = 2         # the sweeper: this month and the next two
MAX_MONTHS_AHEAD = 120
_BUSY = {"55P03", "40P01"}      # lock_not_available (our lock_timeout), deadlock_detected
_WARN_EVERY = 900.0             # seconds between two warnings about the same skipped month
_warned: dict[tuple[str, str], float] = {}   # (store, partition) -> when last warned


@dataclass
class PartitionReport:
    """What a call found and did."""
    partitioned: bool = True                                  # False: SQLite, or cdrs is a plain table
    created: list[str] = field(default_factory=list)         # partitions created now
    moved: dict[str, int] = field(default_factory=dict)      # rows moved from cdrs_default, per partition
    present: list[str] = field(default_factory=list)         # wanted partitions that already existed
    skipped: dict[str, str] = field(default_factory=dict)    # wanted but not created: why
    in_default: dict[str, int] = field(default_factory=dict)  # rows left in cdrs_default, by month's partition name


# -- loading ---------------------------------------------------------------------------------

def _run(conn: Connection, name: str, params: dict | None = None, **names):
    text = sql.statement(conn, "partitions", name)
    return conn.exec_driver_sql(text.format(**names) if names else text, params or {})


def _attached(conn: Connection) -> set[str]:
    return set(_run(conn, "attached").scalars())


def _in_default(conn: Connection) -> dict[str, int]:
    """Rows of cdrs_default per month, keyed by the name that month's partition would have."""
    return {partition_name(month.replace(tzinfo=dt.timezone.utc)): rows
            for month, rows in _run(conn, "default_rows_by_month").all()}


def _pg_engine(bind) -> Engine | None:
    """The engine of `bind` (Engine, Connection, Session or sessionmaker) if it is PostgreSQL;
    None on SQLite."""
    engine = sql.engine_of(bind)
    return engine if engine.dialect.name == "postgresql" else None


def _partitioned(conn: Connection) -> bool:
    """False for a `cdrs` made before partitioning."""
    return bool(_run(conn, "is_partitioned").scalar())


def default_partition_rows(bind) -> int | None:
    """Rows in cdrs_default (CDRs dated outside every monthly partition); None without one."""
    engine = _pg_engine(bind)
    if engine is None:
        return None
    with engine.connect() as conn:
        if not _run(conn, "exists", {"name": DEFAULT}).scalar():
            return None
        return sum(_in_default(conn).values())


# -- writing ---------------------------------------------------------------------------------

def _attach_month(engine: Engine, start: dt.datetime, move: bool) -> tuple[str, int]:
    """Create and attach one month's partition in one transaction -> (outcome, rows moved).

    outcome: 'created' | 'present' (another host was first) | 'name_taken' | 'rows_in_default'
    (without `move`: rows of the month turned up in the default partition meanwhile) | 'busy'
    (a lock wait ran past LOCK_TIMEOUT_MS).
    """
    name = partition_name(start)
    bounds = {"lower": start.isoformat(), "upper": next_month(start).isoformat()}
    try:
        with engine.begin() as conn:
            _run(conn, "lock_timeout", {"ms": LOCK_TIMEOUT_MS})
            _run(conn, "lock_parent")
            has_default = DEFAULT in _attached(conn)
            if has_default:
                _run(conn, "lock_default")
            if name in _attached(conn):
                return "present", 0
            if _run(conn, "exists", {"name": name}).scalar():  # e.g. detached for archiving: leave it
                return "name_taken", 0
            if has_default and not move and _run(conn, "default_rows_in_range", bounds).scalar():
                return "rows_in_default", 0
            _run(conn, "create", partition=name)
            moved = _run(conn, "move", bounds, partition=name).rowcount if has_default and move else 0
            _run(conn, "attach", bounds, partition=name)
            return "created", moved
    except DBAPIError as exc:
        if getattr(exc.orig, "pgcode", None) not in _BUSY:
            raise
        return "busy", 0


def _create(report: PartitionReport, engine: Engine, start: dt.datetime, move: bool, attempts: int) -> None:
    """Attach one month (`attempts` tries while busy, growing pauses) and record the outcome."""
    name = partition_name(start)
    outcome, moved = _attach_month(engine, start, move)
    for attempt in range(1, attempts):
        if outcome != "busy":
            break
        time.sleep(min(2.0, 0.1 * 2 ** attempt))  # let the accounting transactions in the way finish
        outcome, moved = _attach_month(engine, start, move)
    if outcome == "created":
        report.created.append(name)
        if moved:
            report.moved[name] = moved
        log.info("cdr_partition_created", partition=name, moved_from_default=moved)
    elif outcome == "present":
        report.present.append(name)
    elif outcome == "name_taken":
        report.skipped[name] = "a table of that name exists and is not a partition of cdrs"
        log.warning("cdr_partition_name_taken", partition=name)
    elif outcome == "busy":
        report.skipped[name] = f"store busy (a lock wait passed {LOCK_TIMEOUT_MS} ms): try again"
        log.info("cdr_partition_busy", partition=name, lock_timeout_ms=LOCK_TIMEOUT_MS)
    else:
        report.skipped[name] = "CDRs of this month arrived in cdrs_default meanwhile: not attached"


def ensure_cdr_partitions(bind, now: dt.datetime, months_ahead: int = SWEEP_MONTHS_AHEAD,
                          attempts: int = 1) -> PartitionReport:
    """Create the missing monthly CDR partitions: the month of `now` and `months_ahead` more.

    `bind`: Engine, Connection, Session or sessionmaker; the work runs in its own transactions (one
    per partition), never in a caller's. Idempotent. A month whose CDRs sit in the default
    partition is skipped (a warning at most every 15 minutes), never moved here.
    """
    engine = _pg_engine(bind)
    if engine is None:
        return PartitionReport(partitioned=False)
    with engine.connect() as conn:
        if not _partitioned(conn):
            return PartitionReport(partitioned=False)
        report = PartitionReport()
        wanted = months_wanted(now, months_ahead)
        attached = _attached(conn)
        if any(partition_name(start) not in attached for start in wanted):
            report.in_default = _in_default(conn)   # scanned only when a month is missing
    create, report.present, report.skipped = plan(wanted, attached, report.in_default)
    now_mono, store = time.monotonic(), engine.url.render_as_string(hide_password=True)
    for name in report.skipped:
        if now_mono - _warned.get((store, name), -_WARN_EVERY) >= _WARN_EVERY:
            _warned[(store, name)] = now_mono
            log.warning("cdr_partition_skipped", partition=name, rows_in_default=report.in_default[name],
                        detail="move them with `radiusd db partitions --move-default`")
    for start in create:
        _create(report, engine, start, False, attempts)
    return report


def move_default_rows(bind, month: dt.datetime | None = None, attempts: int = 20) -> PartitionReport:
    """Move CDRs out of the default partition into their monthly partitions (created here), one
    month per transaction, oldest first (or only `month`). Each month's transaction blocks inserts
    into the default partition while it runs; a lock wait past LOCK_TIMEOUT_MS gives the month up
    and tries again later (`attempts` tries)."""
    engine = _pg_engine(bind)
    if engine is None:
        return PartitionReport(partitioned=False)
    report = PartitionReport()
    with engine.connect() as conn:
        if not _partitioned(conn):
            return PartitionReport(partitioned=False)
        in_default = _in_default(conn)
    names = sorted(in_default) if month is None else [partition_name(month_start(month))]
    for name in names:
        if in_default.get(name):
            _create(report, engine, month_of(name), True, attempts)
    with engine.connect() as conn:
        report.in_default = _in_default(conn)
    return report
