"""Monthly partitions of the CDR table (PostgreSQL only).

`cdrs` is partitioned by RANGE (disconnect_time) with a DEFAULT partition `cdrs_default` (created
with the schema) so that an insert never fails. `ensure_cdr_partitions` creates `cdrs_YYYY_MM`
for the current month and the next N ahead (month bounds in UTC). The sweeper calls it on every
sweep (a catalog query when nothing is missing) and `radiusd db partitions` runs it by hand.

A month whose CDRs already sit in the DEFAULT partition (partitions created late, a fresh store,
a spool replay of an old month) cannot simply be created: PostgreSQL refuses a new partition
while the default one holds rows of its range. So a partition is always built the same way, in
one transaction: create the table LIKE cdrs, move that month's rows out of the default partition
into it, then ATTACH it. Locks: SHARE UPDATE EXCLUSIVE on the parent (does not block inserts) and
ACCESS EXCLUSIVE on the default partition only (inserts of months that have their partition go
on); a lock_timeout keeps a busy store from stalling accounting — the next sweep tries again.
Several hosts may run this at once: the locks serialize them and each re-checks under the lock.

SQLite stores have no partitioning: every function here is a no-op there.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import structlog
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

log = structlog.get_logger("radiusd.partitions")

PARENT = "cdrs"
DEFAULT = "cdrs_default"
LOCK_TIMEOUT = "5s"


@dataclass
class PartitionReport:
    """What ensure_cdr_partitions found and did."""
    partitioned: bool = True                                  # False: SQLite, or cdrs is a plain table
    created: list[str] = field(default_factory=list)         # partitions created now
    moved: dict[str, int] = field(default_factory=dict)      # rows moved from cdrs_default, per partition
    present: list[str] = field(default_factory=list)         # wanted partitions that already existed
    skipped: dict[str, str] = field(default_factory=dict)    # wanted but not created: why


def month_start(at: dt.datetime) -> dt.datetime:
    at = at.astimezone(dt.timezone.utc)
    return dt.datetime(at.year, at.month, 1, tzinfo=dt.timezone.utc)


def next_month(start: dt.datetime) -> dt.datetime:
    return start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)


def partition_name(start: dt.datetime) -> str:
    return f"{PARENT}_{start.year:04d}_{start.month:02d}"


def wanted_months(now: dt.datetime, months_ahead: int) -> list[dt.datetime]:
    """First instants (UTC) of the current month and the next `months_ahead` months."""
    months = [month_start(now)]
    for _ in range(months_ahead):
        months.append(next_month(months[-1]))
    return months


def _engine(bind) -> Engine:
    if isinstance(bind, Engine):
        return bind
    if isinstance(bind, Connection):
        return bind.engine
    if isinstance(bind, Session):
        return bind.get_bind()
    if isinstance(bind, sessionmaker):
        return bind.kw["bind"]
    raise TypeError(f"engine, connection, session or sessionmaker expected, not {type(bind).__name__}")


def _attached(conn: Connection) -> set[str]:
    return set(conn.exec_driver_sql(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = to_regclass(%(parent)s)", {"parent": PARENT}).scalars())


def _is_partitioned(conn: Connection) -> bool:
    return conn.exec_driver_sql(
        "SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass(%(parent)s)", {"parent": PARENT}
    ).first() is not None


def _exists(conn: Connection, name: str) -> bool:
    return conn.exec_driver_sql("SELECT to_regclass(%(name)s) IS NOT NULL", {"name": name}).scalar()


def _create_month(engine: Engine, start: dt.datetime, report: PartitionReport) -> None:
    name = partition_name(start)
    lower, upper = start.isoformat(), next_month(start).isoformat()
    with engine.begin() as conn:
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        # Parent first, then the default partition: the order inserts take them, so no deadlock.
        conn.exec_driver_sql(f"LOCK TABLE ONLY {PARENT} IN SHARE UPDATE EXCLUSIVE MODE")
        has_default = DEFAULT in _attached(conn)
        if has_default:
            conn.exec_driver_sql(f"LOCK TABLE {DEFAULT} IN ACCESS EXCLUSIVE MODE")
        if name in _attached(conn):  # another host made it while we waited for the locks
            report.present.append(name)
            return
        if _exists(conn, name):  # e.g. detached by an operator for archiving: leave it alone
            report.skipped[name] = "a table of that name exists and is not a partition of cdrs"
            log.warning("cdr_partition_name_taken", partition=name)
            return
        conn.exec_driver_sql(f"CREATE TABLE {name} (LIKE {PARENT} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
        moved = 0
        if has_default:
            moved = conn.exec_driver_sql(
                f"WITH moved AS (DELETE FROM {DEFAULT} WHERE disconnect_time >= %(lower)s "
                f"AND disconnect_time < %(upper)s RETURNING *) INSERT INTO {name} SELECT * FROM moved",
                {"lower": lower, "upper": upper}).rowcount
        conn.exec_driver_sql(
            f"ALTER TABLE {PARENT} ATTACH PARTITION {name} FOR VALUES FROM (%(lower)s) TO (%(upper)s)",
            {"lower": lower, "upper": upper})
    report.created.append(name)
    if moved:
        report.moved[name] = moved
    log.info("cdr_partition_created", partition=name, moved_from_default=moved)


def ensure_cdr_partitions(bind, now: dt.datetime, months_ahead: int = 2) -> PartitionReport:
    """Create the missing monthly CDR partitions: the month of `now` and `months_ahead` more.

    `bind`: Engine, Connection, Session or sessionmaker; the work runs in its own transactions
    (one per partition) on the engine, never in a caller's transaction. Idempotent. A month's
    rows already in the default partition are moved into the new partition. No-op on SQLite.
    """
    if months_ahead < 0:
        raise ValueError(f"months_ahead: {months_ahead} must be 0 or more")
    engine = _engine(bind)
    if engine.dialect.name != "postgresql":
        return PartitionReport(partitioned=False)
    report = PartitionReport()
    with engine.connect() as conn:
        if not _is_partitioned(conn):
            report.partitioned = False
            return report
        attached = _attached(conn)
    for start in wanted_months(now, months_ahead):
        name = partition_name(start)
        if name in attached:
            report.present.append(name)
        else:
            _create_month(engine, start, report)
    return report


def default_partition_rows(bind) -> int | None:
    """Rows in cdrs_default (CDRs dated outside every monthly partition); None without one."""
    engine = _engine(bind)
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect() as conn:
        if not _exists(conn, DEFAULT):
            return None
        return conn.exec_driver_sql(f"SELECT count(*) FROM {DEFAULT}").scalar()


# -- `radiusd db partitions` -------------------------------------------------------------------

HELP = "create this month's and the next months' CDR partitions (PostgreSQL; nothing to do on SQLite)"
MAX_MONTHS_AHEAD = 120


def add_db_command(parser) -> None:
    """Options of `radiusd db partitions` (registered in the `db` group of radiusd.admin.commands)."""
    parser.add_argument("--months-ahead", default="2", metavar="N",
                        help="months after the current one to create (default 2)")
    parser.set_defaults(func=cmd_db_partitions)


def cmd_db_partitions(args) -> int:
    from sqlalchemy.exc import DBAPIError

    from radiusd.cli_output import UserError, emit, first_line, open_store_from_args
    from radiusd.logging_setup import configure

    configure("warning")  # the table below says what was done; stdout stays clean for --json
    try:
        months_ahead = int(str(args.months_ahead).strip())
    except ValueError:
        raise UserError(f"months-ahead: not a whole number ({args.months_ahead!r})") from None
    if not 0 <= months_ahead <= MAX_MONTHS_AHEAD:
        raise UserError(f"months-ahead: must be 0 to {MAX_MONTHS_AHEAD} ({months_ahead})")
    _settings, engine, _sessions = open_store_from_args(args, create=True)  # a `db` command: may create the schema
    try:
        if engine.dialect.name != "postgresql":
            report, in_default = PartitionReport(partitioned=False), None
        else:
            report = ensure_cdr_partitions(engine, dt.datetime.now(dt.timezone.utc), months_ahead)
            in_default = default_partition_rows(engine)
    except DBAPIError as exc:
        raise UserError(f"store: {first_line(exc)}") from None
    finally:
        engine.dispose()
    if engine.dialect.name == "postgresql" and not report.partitioned:
        raise UserError("cdrs: not a partitioned table (store created before CDR partitioning; "
                        "see docs/scale-out.md)")
    rows = ([{"partition": n, "status": "created", "moved_from_default": report.moved.get(n, 0)}
             for n in report.created]
            + [{"partition": n, "status": "present", "moved_from_default": 0} for n in report.present]
            + [{"partition": n, "status": f"skipped: {why}", "moved_from_default": 0}
               for n, why in report.skipped.items()])
    rows.sort(key=lambda r: r["partition"])
    if getattr(args, "json", False):
        emit({"partitioned": report.partitioned, "partitions": rows, "default_partition_rows": in_default}, True)
    elif not report.partitioned:
        print("SQLite store: CDRs are not partitioned, nothing to do")
    else:
        emit(rows, False, ["partition", "status", "moved_from_default"])
        print(f"{DEFAULT}: {in_default} rows outside the monthly partitions")
    return 0
