"""The accounting store alone: Start/Stop records submitted in-process to one AccountingWriter
(no UDP edge), against a benchmark population on PostgreSQL.

    python3 benchmarks/acct_store.py --database-url postgresql://…/radiusd_bench_large \
        --users users-large.csv --calls 4000 --window 16

Prints records/s and, per record: CPU of the writer thread (Python + driver), CPU of the writer's
PostgreSQL backend (from /proc: the server must run on this machine and be readable, e.g. as
root), and per group: records, and with `--strace` the round trips (the writer thread's `sendto`
calls, counted by `strace -c`; strace slows the thread, so take CPU figures from a run without).
It adds CDRs and debits balances: use a copy of the population.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text  # noqa: E402

from radiusd.config import Settings  # noqa: E402
from radiusd.core.facts import AcctFacts  # noqa: E402
from radiusd.db import make_engine, make_sessionmaker  # noqa: E402
from radiusd.pipeline.accounting_writer import AccountingWriter  # noqa: E402
from radiusd.store.snapshot_loader import load_snapshot_from  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(stat_path: str) -> float:
    """utime + stime of a process or thread from /proc/…/stat."""
    fields = Path(stat_path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def records(users: str, calls: int, nas_id: int, tag: str) -> list[AcctFacts]:
    with open(users, newline="") as f:
        logins = [(r["id"], r["called"]) for r in csv.DictReader(f) if r["kind"] == "login"]
    t0 = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    out = []
    for n in range(calls):
        login, called = logins[n % len(logins)]
        session = f"{tag}-{n:x}"
        common = dict(nas_id=nas_id, acct_session_id=session, leg_key=f"{nas_id}:{session}", call_id=f"c-{session}",
                      user_name=login, calling_number="15551230000", called_number=called + f"{n % 10000:04d}")
        start = t0 + dt.timedelta(milliseconds=n)
        out.append(AcctFacts(status="start", event_time=start, **common))
        out.append(AcctFacts(status="stop", event_time=start + dt.timedelta(seconds=1 + n % 120),
                             session_time=1 + n % 120, disconnect_cause="10", **common))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--database-url", required=True)
    ap.add_argument("--users", required=True, help="population CSV (benchmarks/run.py writes it)")
    ap.add_argument("--calls", type=int, default=5000, help="Start+Stop pairs")
    ap.add_argument("--window", type=int, default=32, help="calls outstanding (a Start, then its Stop)")
    ap.add_argument("--strace", action="store_true", help="count the writer thread's sends (round trips)")
    args = ap.parse_args(argv)

    engine = make_engine(args.database_url)
    sessions = make_sessionmaker(engine)
    snapshot = load_snapshot_from(sessions)
    with engine.connect() as conn:
        nas_id = conn.scalar(text("SELECT id FROM nas WHERE address = '127.0.0.1/32'"))
    facts = records(args.users, args.calls, nas_id, f"{os.getpid():x}{int(time.time()):x}")
    spool = tempfile.mkdtemp(prefix="acct-store-")   # stays empty while the store is up; removed below
    writer = AccountingWriter(sessions, lambda: snapshot, Settings(spool_path=spool))
    writer.start()
    # as the switch does it: a call's Stop is sent once its Start is answered, so the two land
    # in different groups (a Start and its Stop in one group coalesce into one CDR, no open call)
    slots = threading.Semaphore(args.window)
    done = threading.Event()
    left = [len(facts)]
    lock = threading.Lock()
    failed = [0]

    def on_done(ok: bool, stop: AcctFacts | None = None) -> None:
        with lock:
            left[0] -= 1
            failed[0] += not ok
            if left[0] == 0:
                done.set()
        if stop is not None:
            writer.submit(stop, on_done)
        else:
            slots.release()

    # warm up: connection, prepared statements
    warm = records(args.users, 20, nas_id, f"w{os.getpid():x}{int(time.time()):x}")
    for f in warm:
        ev = threading.Event()
        writer.submit(f, lambda ok, ev=ev: ev.set())
        ev.wait(10)
    backend = writer._connection.connection.dbapi_connection.info.backend_pid
    tid = writer._thread.native_id
    tracer = None
    if args.strace:
        tracer = subprocess.Popen(["strace", "-c", "-e", "trace=sendto,poll,recvfrom", "-p", str(tid)],
                                  stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)
    groups0 = writer.counters["groups"]
    w0, b0, t0 = cpu_seconds(f"/proc/self/task/{tid}/stat"), cpu_seconds(f"/proc/{backend}/stat"), time.perf_counter()
    for start, stop in zip(facts[0::2], facts[1::2]):
        slots.acquire()
        writer.submit(start, lambda ok, stop=stop: on_done(ok, stop))
    if not done.wait(600):
        print("timed out", file=sys.stderr)
        return 1
    wall = time.perf_counter() - t0
    w1, b1 = cpu_seconds(f"/proc/self/task/{tid}/stat"), cpu_seconds(f"/proc/{backend}/stat")
    groups = writer.counters["groups"] - groups0
    sends = None
    if tracer is not None:
        tracer.send_signal(2)
        _, err = tracer.communicate(timeout=10)
        m = re.search(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?sendto$", err, re.M)
        sends = int(m.group(1)) if m else err
    writer.stop()
    shutil.rmtree(spool, ignore_errors=True)
    n = len(facts)
    print(f"records {n} in {wall:.2f} s: {n / wall:,.0f} records/s, failed {failed[0]}, spooled "
          f"{writer.counters['spooled']}; groups {groups} ({n / max(groups, 1):.1f} records each), "
          f"deadlocks retried {writer.counters['conflicts']}")
    print(f"writer thread CPU {1e6 * (w1 - w0) / n:.0f} µs/record; PostgreSQL backend CPU "
          f"{1e6 * (b1 - b0) / n:.0f} µs/record" + (f"; sends {sends} = {sends / max(groups, 1):.2f} per group"
                                                     if isinstance(sends, int) else ""))
    if sends is not None and not isinstance(sends, int):
        print(sends)
    print(f"load average {os.getloadavg()}")
    engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
