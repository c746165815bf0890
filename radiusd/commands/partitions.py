"""`radiusd db partitions`: CDR partitions made ahead, or CDRs moved out of the default
partition (the work is radiusd.store.partitions)."""
from __future__ import annotations

import datetime as dt

from sqlalchemy.exc import DBAPIError

from radiusd.cli_output import emit, first_line, store_from_args
from radiusd.errors import UserError
from radiusd.logging_setup import configure
from radiusd.store.partitions import (DEFAULT, MAX_MONTHS_AHEAD, SWEEP_MONTHS_AHEAD, PartitionReport,
                                      default_partition_rows, ensure_cdr_partitions, move_default_rows)

HELP = ("create this month's and the next months' CDR partitions; --move-default moves CDRs out of "
        "the default partition (PostgreSQL; nothing to do on SQLite)")


def add_db_command(parser) -> None:
    """Options of `radiusd db partitions` (registered in the `db` group of radiusd.commands.admin)."""
    parser.add_argument("--months-ahead", default=str(SWEEP_MONTHS_AHEAD), metavar="N",
                        help=f"months after the current one to create (default {SWEEP_MONTHS_AHEAD})")
    parser.add_argument("--move-default", action="store_true",
                        help=f"move CDRs that sit in {DEFAULT} into monthly partitions (created as needed), "
                             "one month per transaction; safe under traffic (short lock waits, retried)")
    parser.set_defaults(func=cmd_db_partitions)


def cmd_db_partitions(args) -> int:
    configure("warning")  # the table below says what was done; stdout stays clean for --json
    try:
        months_ahead = int(str(args.months_ahead).strip())
    except ValueError:
        raise UserError(f"months-ahead: not a whole number ({args.months_ahead!r})") from None
    if not 0 <= months_ahead <= MAX_MONTHS_AHEAD:
        raise UserError(f"months-ahead: must be 0 to {MAX_MONTHS_AHEAD} ({months_ahead})")
    # a `db` command: like `db init` it may create the store
    with store_from_args(args, create=True) as (_settings, engine, _sessions):
        postgres = engine.dialect.name == "postgresql"
        try:
            if not postgres:
                report = PartitionReport(partitioned=False)
            elif args.move_default:
                report = move_default_rows(engine)
            else:
                report = ensure_cdr_partitions(engine, dt.datetime.now(dt.timezone.utc), months_ahead, attempts=5)
            in_default = default_partition_rows(engine) if postgres and report.partitioned else None
        except DBAPIError as exc:
            raise UserError(f"store: {first_line(exc)}") from None
    if postgres and not report.partitioned:
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
        print("SQLite store: CDRs are not partitioned (PostgreSQL only), nothing to do")
    else:
        if rows:
            emit(rows, False, ["partition", "status", "moved_from_default"])
        elif args.move_default:
            print(f"{DEFAULT}: nothing to move")
        print(f"{DEFAULT}: {in_default} rows outside the monthly partitions")
    return 1 if any(why.startswith("store busy") for why in report.skipped.values()) else 0
