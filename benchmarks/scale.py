#!/usr/bin/env python3
"""Scale in accounts: 1,000 / 100,000 / 1,000,000 accounts (and as many rates) on PostgreSQL.

    python benchmarks/scale.py                          # 1k, 100k, 1M; 2 workers; 300 auth/s for 10 s
    python benchmarks/scale.py --sizes 1000,100000 --duration 5

For each size: a fresh database with the benchmark population (limits on every client, as
carriers run it; `benchmarks/population.py`) holding N accounts and N rates; the snapshot load
timed in this process (wall and CPU seconds: wall on a shared machine waits for the CPU);
`radiusd serve --workers W` started on it; memory of the supervisor and each worker idle, after
a fixed-rate Access-Request run over accounts drawn from the whole population (latency p50/p99
at that rate), and its peak while a store change makes the supervisor reload the snapshot and
replace the workers. Memory is RSS and PSS per process from /proc/PID/smaps_rollup
(`benchmarks/procs.py`): RSS counts the shared snapshot in every process, PSS shares it out, and
the sum of PSS over the supervisor and its workers is what the server uses ("all workers
together"). Each database is dropped after its size (`--keep` keeps them). Results go to
benchmarks/results/scale-<timestamp>.json and a Markdown table to stdout.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.population import load_population  # noqa: E402
from benchmarks.procs import children, server_memory  # noqa: E402
from benchmarks.run import (  # noqa: E402
    Radiusd,
    admin_url,
    bench,
    drop_db,
    recreate_db,
    say,
    wait_answering,
)
from radiusd.bench.population import load_users, write_users  # noqa: E402

SAMPLE_USERS = 20_000     # accounts the fixed-rate run cycles through, drawn from the whole population (--sample)
ROLL_SECONDS = 180        # a reload that has not replaced every worker by then is reported as such


def timed_snapshot_load(url: str) -> dict:
    """Wall and CPU seconds of one snapshot load in this process, and what it loaded."""
    from radiusd.db import make_engine, make_sessionmaker
    from radiusd.store.sealing import attach_key_file
    from radiusd.store.snapshot_loader import load_snapshot_from

    engine = make_engine(url)
    try:
        sessions = make_sessionmaker(engine)
        attach_key_file(sessions, os.environ["RADIUSD_KEY_FILE"], url)
        wall, cpu = time.perf_counter(), time.process_time()
        snapshot = load_snapshot_from(sessions)
        result = {"wall_s": round(time.perf_counter() - wall, 2), "cpu_s": round(time.process_time() - cpu, 2),
                  "accounts": len(snapshot.accounts),
                  "rates": sum(len(rs) for t in snapshot.rate_tables.values() for rs in t.rates_by_prefix.values())}
        del snapshot
        return result
    finally:
        engine.dispose()


def bump_version(url: str) -> None:
    """What any admin change does: the store version moves, the server reloads."""
    from sqlalchemy.orm import Session

    from radiusd.db import bump_store_version, make_engine

    engine = make_engine(url)
    try:
        with Session(engine) as session, session.begin():
            bump_store_version(session)
    finally:
        engine.dispose()


def reload_peak(server: Radiusd, url: str, users, workers: int) -> dict:
    """Bump the store version and sample memory until every worker was replaced and answers."""
    before = set(children(server.proc.pid))
    bump_version(url)
    t0 = time.monotonic()
    peak_pss = peak_rss = 0.0
    samples = 0
    done_after = None
    while time.monotonic() - t0 < ROLL_SECONDS:
        mem = server_memory(server.proc.pid)
        samples += 1
        peak_pss, peak_rss = max(peak_pss, mem["pss_total_mb"]), max(peak_rss, mem["rss_total_mb"])
        now_children = set(children(server.proc.pid))
        if len(now_children) == workers and not now_children & before:
            done_after = round(time.monotonic() - t0, 1)
            break
        time.sleep(0.1)
    if done_after is not None:
        wait_answering(server.auth_port, users, server.proc)
    return {"replaced_after_s": done_after, "peak_pss_total_mb": round(peak_pss, 1),
            "peak_rss_total_mb": round(peak_rss, 1), "samples": samples,
            "after": server_memory(server.proc.pid)}


def one_size(n: int, args, admin: str, work: Path) -> dict:
    name = f"radiusd_scale_{n}"
    url = recreate_db(admin, name)
    out: dict = {"accounts": n, "rates": n}
    try:
        t0 = time.perf_counter()
        pop = load_population(url, accounts=n, rates=n, rate_tables=args.rate_tables,
                              clients=args.clients, limits=True)
        out["population_s"] = round(time.perf_counter() - t0, 1)
        say(f"{n:,} accounts, {pop.rates:,} rates in {out['population_s']} s")
        sample = random.Random(n).sample(pop.users, min(args.sample, len(pop.users)))
        del pop
        path = work / f"users-{n}.csv"
        write_users(str(path), sample)
        users = load_users(str(path))
        out["snapshot"] = timed_snapshot_load(url)
        say(f"snapshot: {out['snapshot']}")
        server = Radiusd(url, args.workers, work / f"radiusd-{n}")
        try:
            out["ready_s"] = round(wait_answering(server.auth_port, users, server.proc, timeout=300), 1)
            time.sleep(1.0)   # let the workers settle (first reports, pools) before the idle figure
            out["memory_idle"] = server_memory(server.proc.pid)
            say(f"idle: PSS total {out['memory_idle']['pss_total_mb']} MB, RSS total {out['memory_idle']['rss_total_mb']} MB")
            # warm-up (first capacity rows, connection pools, caches), not counted
            bench(f"{n:,} warm-up", "auth", users, auth_port=server.auth_port, acct_port=server.acct_port,
                  duration=2.0, rate=args.rate)
            run = bench(f"{n:,} accounts, auth {args.rate:.0f}/s", "auth", users, auth_port=server.auth_port,
                        acct_port=server.acct_port, duration=args.duration, rate=args.rate)
            auth = run["by_kind"]["auth"]
            out["auth"] = {"rate": args.rate, "per_second": run["requests"]["per_second"],
                           "accepts": auth["accepts"], "rejects": auth["rejects"],
                           "lost": run["requests"]["lost"], "retransmits": run["requests"]["retransmits"],
                           "latency_ms": auth.get("latency_ms"), "rcvbuf_drops": run["udp_rcvbuf_errors"]}
            out["memory_after_auth"] = server_memory(server.proc.pid)
            out["reload"] = reload_peak(server, url, users, args.workers)
            say(f"reload: {out['reload']['replaced_after_s']} s, peak PSS {out['reload']['peak_pss_total_mb']} MB")
        finally:
            server.stop()
    finally:
        if not args.keep:
            drop_db(admin, name)
    return out


def table(results: list[dict]) -> str:
    rows = ["| accounts / rates | snapshot load wall (CPU) | PSS all processes idle | per process RSS / PSS idle "
            "(supervisor; workers) | PSS after auth run | auth p50 / p99 at fixed rate | lost | peak PSS in reload "
            "(workers replaced after) |",
            "|---|---:|---:|---|---:|---:|---:|---:|"]
    for r in results:
        idle = r["memory_idle"]
        per = "; ".join(f"{m['rss_mb']:.0f} / {m['pss_mb']:.0f}" for m in [idle["main"], *idle["workers"]] if m)
        lat = r["auth"]["latency_ms"] or {}
        rl = r["reload"]
        rows.append(
            f"| {r['accounts']:,} / {r['rates']:,} | {r['snapshot']['wall_s']} s ({r['snapshot']['cpu_s']} s) "
            f"| {idle['pss_total_mb']:,.0f} MB | {per} | {r['memory_after_auth']['pss_total_mb']:,.0f} MB "
            f"| {lat.get('p50', '?')} / {lat.get('p99', '?')} ms at {r['auth']['rate']:.0f}/s | {r['auth']['lost']} "
            f"| {rl['peak_pss_total_mb']:,.0f} MB ({rl['replaced_after_s']} s) |")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,100000,1000000", help="account counts (rates: as many)")
    ap.add_argument("--rate-tables", type=int, default=5)
    ap.add_argument("--clients", type=int, default=100,
                    help="clients at every size (their row locks are taken per call: the same number at every "
                         "size, so that only the account count changes)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rate", type=float, default=300.0, help="Access-Requests per second of the latency run")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of the latency run")
    ap.add_argument("--sample", type=int, default=SAMPLE_USERS,
                    help="accounts the run goes through (how much of the snapshot the workers touch)")
    ap.add_argument("--pg-admin-url", default=None, help="PostgreSQL URL of a role that may create databases")
    ap.add_argument("--keep", action="store_true", help="keep the databases")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    admin = admin_url(args.pg_admin_url)
    work = Path(tempfile.mkdtemp(prefix="radiusd-scale-"))
    os.environ.setdefault("RADIUSD_KEY_FILE", str(work / "radiusd.key"))
    results = []
    for n in sizes:
        results.append(one_size(n, args, admin, work))
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = HERE / "results" / f"scale-{stamp}.json"
    out.write_text(json.dumps({"params": vars(args) | {"pg_admin_url": None}, "results": results}, indent=1))
    print(table(results))
    say(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
