#!/usr/bin/env python3
"""radiusd vs FreeRADIUS 3.2 + rlm_sql/PostgreSQL, side by side, in one run.

    python benchmarks/run.py              # or benchmarks/run.sh
    python benchmarks/run.py --quick      # small population, short runs: checks the setup

Installs what is missing (Debian packages; no FreeRADIUS daemon is left running), loads the
population into PostgreSQL, runs `radiusd serve` and FreeRADIUS on free loopback ports, drives
both with the same generator (radiusd.bench) and prints a Markdown table; the full results go
to benchmarks/results/<timestamp>.json. See benchmarks/README.md for what each figure means.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from benchmarks import freeradius as fr  # noqa: E402
from benchmarks.population import load_population  # noqa: E402
from benchmarks.procs import children, rss  # noqa: E402
from radiusd.bench.engine import BenchOptions, run_bench  # noqa: E402
from radiusd.bench.population import load_users, write_users  # noqa: E402

SECRET = "testing123"
PACKAGES = ("freeradius", "freeradius-postgresql", "freeradius-utils", "postgresql")


def say(msg: str) -> None:
    print(f"[run] {msg}", file=sys.stderr, flush=True)


# --- machine setup -------------------------------------------------------------------------

def ensure_packages(skip: bool) -> None:
    missing = [p for p in PACKAGES if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode != 0]
    if not missing or skip:
        return
    say(f"installing {' '.join(missing)} (apt-get)")
    policy = Path("/usr/sbin/policy-rc.d")
    made_policy = False
    if not policy.exists():
        # keep Debian's postinst from starting a system FreeRADIUS on 1812
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        made_policy = True
    try:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env)
    finally:
        if made_policy:
            policy.unlink()
    if shutil.which("systemctl"):
        subprocess.run(["systemctl", "disable", "--now", "freeradius"], capture_output=True)
    elif shutil.which("service"):
        subprocess.run(["service", "freeradius", "stop"], capture_output=True)


def ensure_postgres() -> None:
    if subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1"]).returncode == 0:
        return
    say("starting PostgreSQL (pg_ctlcluster 15 main start)")
    subprocess.run(["pg_ctlcluster", "15", "main", "start"], check=True)
    for _ in range(30):
        if subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1"]).returncode == 0:
            return
        time.sleep(1)
    raise SystemExit("PostgreSQL did not start")


def psycopg2_url(url: str) -> str:
    """SQLAlchemy URL with the psycopg2 driver (the one installed with radiusd)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg2://" + url.split("://", 1)[1]
    return url


def admin_url(given: str | None) -> str:
    import psycopg2

    url = given or os.environ.get("BENCH_PG_URL") or os.environ.get("RADIUSD_TEST_PG_URL")
    if url:
        return psycopg2_url(url)
    url = "postgresql+psycopg2://radbench:radbench@127.0.0.1/postgres"
    try:
        psycopg2.connect(libpq(url)).close()
    except psycopg2.OperationalError:
        say("creating PostgreSQL role radbench")
        subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-q", "-c",
                        "CREATE ROLE radbench LOGIN SUPERUSER PASSWORD 'radbench'"], check=True)
    return url


def libpq(url: str) -> str:
    return "postgresql://" + url.split("://", 1)[1]


def with_db(url: str, name: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=name).render_as_string(hide_password=False)


def _admin_sql(admin: str, *statements: str) -> None:
    import psycopg2

    conn = psycopg2.connect(libpq(admin))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        conn.close()


def drop_db(admin: str, name: str) -> None:
    _admin_sql(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def recreate_db(admin: str, name: str) -> str:
    _admin_sql(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"')
    return with_db(admin, name)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def udp_rcvbuf_errors() -> int:
    lines = [l.split() for l in Path("/proc/net/snmp").read_text().splitlines() if l.startswith("Udp:")]
    header, values = lines[0], lines[1]
    return int(values[header.index("RcvbufErrors")])


def rss_tree(pid: int) -> dict:
    """RSS (MB) of a process and its children, from /proc."""
    return {"main_mb": rss(pid), "workers_mb": [rss(c) for c in children(pid)]}


def machine() -> dict:
    info = {"nproc": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release()}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            info["cpu"] = line.split(":", 1)[1].strip()
            break
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal"):
            info["memory_gb"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    try:
        from importlib.metadata import version

        info["radiusd"] = version("radiusd")
        info["pyrad"] = version("pyrad")
        info["sqlalchemy"] = version("sqlalchemy")
    except Exception:
        pass
    if fr.binary():
        out = subprocess.run([fr.binary(), "-v"], capture_output=True, text=True).stdout.splitlines()
        info["freeradius"] = out[0].split(": ", 1)[-1].split(",")[0] if out else None
    return info


# --- one generator run ----------------------------------------------------------------------

def bench(label: str, mode: str, accounts, *, auth_port: int, acct_port: int, duration: float,
          window: int = 32, rate: float | None = None, legs: int = 1) -> dict:
    before = udp_rcvbuf_errors()
    opts = BenchOptions(mode=mode, accounts=accounts, secret=SECRET.encode(), auth_port=auth_port,
                        acct_port=acct_port, window=window if not rate else max(window, 4096), rate=rate,
                        duration=duration, timeout=1.0, retries=2, legs=legs, progress=sys.stderr,
                        label=f"[{label}]")
    result = run_bench(opts)
    result["udp_rcvbuf_errors"] = udp_rcvbuf_errors() - before
    r = result["requests"]
    say(f"{label}: {r['per_second']:,.0f} req/s, lost {r['lost']}, retransmits {r['retransmits']}, "
        f"rcvbuf drops {result['udp_rcvbuf_errors']}, generator CPU {result['generator']['cpu_pct_of_wall']}%")
    return result


def wait_answering(auth_port: int, accounts, proc: subprocess.Popen, timeout: float = 120.0) -> float:
    """Seconds until the server answers an Access-Request (accept or reject)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        opts = BenchOptions(mode="auth", accounts=accounts[:1], secret=SECRET.encode(), auth_port=auth_port,
                            count=1, timeout=0.5, retries=0, sockets=1)
        if run_bench(opts)["requests"]["responses"]:
            return time.monotonic() - t0
    raise RuntimeError("server did not answer within %.0f s" % timeout)


class Radiusd:
    def __init__(self, database_url: str, workers: int, workdir: Path):
        self.auth_port, self.acct_port = free_port(), free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "radiusd.toml"
        config.write_text(f'[spool]\npath = "{workdir / "spool"}"\n[log]\nlevel = "warning"\n')
        self.log = open(workdir / "server.log", "w")
        env = dict(os.environ, DATABASE_URL=database_url, RADIUSD_CONFIG=str(config))
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "radiusd", "serve", "--bind", "127.0.0.1", "--auth-port", str(self.auth_port),
             "--acct-port", str(self.acct_port), "--workers", str(workers), "--metrics-port", "0"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True, cwd=workdir)

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def snapshot_load_seconds(database_url: str) -> float | None:
    try:
        from radiusd.db import make_engine, make_sessionmaker
        from radiusd.store.snapshot_loader import load_snapshot_from
    except ImportError:
        return None
    engine = make_engine(database_url)
    try:
        t0 = time.perf_counter()
        load_snapshot_from(make_sessionmaker(engine))
        return round(time.perf_counter() - t0, 3)
    finally:
        engine.dispose()


# --- the suite -----------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accounts", type=int, default=100_000)
    ap.add_argument("--small-accounts", type=int, default=1_000)
    ap.add_argument("--rates", type=int, default=50_000)
    ap.add_argument("--rate-tables", type=int, default=5)
    ap.add_argument("--duration", type=float, default=15.0, help="seconds per run")
    ap.add_argument("--latency-rate", type=float, default=500.0,
                    help="auth requests/s for the 1k-vs-100k latency comparison (capped at half of "
                         "radiusd's measured auth/s)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="radiusd serve --workers")
    ap.add_argument("--pg-admin-url", default=None,
                    help="PostgreSQL role allowed to create databases (default: $BENCH_PG_URL, "
                         "$RADIUSD_TEST_PG_URL, or a role radbench created via runuser postgres)")
    ap.add_argument("--skip-radiusd", action="store_true")
    ap.add_argument("--skip-freeradius", action="store_true")
    ap.add_argument("--no-install", action="store_true", help="don't apt-get install missing packages")
    ap.add_argument("--quick", action="store_true", help="2,000 accounts, 1,000 rates, 3 s runs")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (raddb, logs)")
    ap.add_argument("--no-limits", action="store_true",
                    help="every population without credit and capacity limits (the figures before issue 12, "
                         "to compare one code version with another); the rows then say 'no limits'")
    args = ap.parse_args(argv)
    if args.quick:
        args.accounts, args.small_accounts, args.rates, args.duration = 2_000, 200, 1_000, 3.0

    ensure_packages(args.no_install)
    ensure_postgres()
    admin = admin_url(args.pg_admin_url)
    work = Path(tempfile.mkdtemp(prefix="radiusd-bench-"))
    results = {"started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
               "machine": machine(), "params": vars(args).copy(), "radiusd": {}, "freeradius": {}}
    results["params"].pop("pg_admin_url", None)
    D = args.duration

    say(f"loading populations into PostgreSQL (work dir {work})")
    # the population seals passwords and secrets with this key; the servers (cwd = their work dir) open them
    os.environ.setdefault("RADIUSD_KEY_FILE", str(work / "radiusd.key"))
    # "small"/"large": limits on every client (finite credit, capacity; some account capacities),
    # what carriers run; "nolimits": the large population without them, for the labelled rows.
    sizes = {"small": (args.small_accounts, not args.no_limits), "large": (args.accounts, not args.no_limits)}
    if not args.no_limits:
        sizes["nolimits"] = (args.accounts, False)
    urls, users = {}, {}
    for size, (n, limits) in sizes.items():
        url = recreate_db(admin, f"radiusd_bench_{size}")
        t0 = time.perf_counter()
        pop = load_population(url, accounts=n, rates=args.rates, rate_tables=args.rate_tables,
                              clients=max(1, n // 1000), secret=SECRET, limits=limits)
        results["radiusd"][f"population_{size}"] = {
            "accounts": pop.accounts, "ip_accounts": pop.ip_accounts, "login_accounts": pop.login_accounts,
            "rates": pop.rates, "rate_tables": pop.rate_tables, "limits": pop.limits,
            "load_s": round(time.perf_counter() - t0, 1)}
        path = work / f"users-{size}.csv"
        write_users(str(path), pop.users)
        urls[size], users[size] = url, str(path)
        logins = pop.logins
        say(f"{size}: {pop.accounts} accounts, {pop.rates} rates in {results['radiusd'][f'population_{size}']['load_s']} s")
    mixed = load_users(users["large"])
    login_only = load_users(users["large"], ("login",))
    mixed_small = load_users(users["small"])

    latency_rate = args.latency_rate
    if not args.skip_radiusd:
        rd = results["radiusd"]
        # 100,000 accounts first: its auth capacity caps the fixed rate used at both sizes
        for size in [s for s in ("large", "small", "nolimits") if s in sizes]:
            rd[f"snapshot_load_s_{size}"] = snapshot_load_seconds(urls[size])
            server = Radiusd(urls[size], args.workers, work / f"radiusd-{size}")
            try:
                rd[f"ready_s_{size}"] = round(wait_answering(server.auth_port, mixed, server.proc), 2)
                rd[f"rss_{size}"] = rss_tree(server.proc.pid)
                ports = dict(auth_port=server.auth_port, acct_port=server.acct_port, duration=D)
                settle = lambda: wait_answering(server.auth_port, mixed, server.proc)  # noqa: E731
                if size == "large":
                    rd["auth_mixed"] = bench("radiusd auth ip+login", "auth", mixed, **ports)
                    settle()
                    rd["auth_login"] = bench("radiusd auth login", "auth", login_only, **ports)
                    settle()
                    rd["acct"] = bench("radiusd acct", "acct", login_only, **ports)
                    settle()
                    rd["calls"] = bench("radiusd calls", "calls", mixed, **ports)
                    settle()
                    half = max(1.0, rd["calls"]["calls"]["per_second"] / 2)
                    rd["calls_half_load"] = bench(f"radiusd calls {half:.0f}/s", "calls", mixed, rate=half, **ports)
                    settle()
                    rd["calls_2legs"] = bench("radiusd calls 2 legs", "calls", mixed, legs=2, **ports)
                    settle()
                    # well below saturation, so that latency shows lookup cost, not queueing
                    latency_rate = max(1.0, min(args.latency_rate, round(rd["auth_mixed"]["auth_per_second"] / 2)))
                if size == "nolimits":
                    rd["auth_mixed_nolimits"] = bench("radiusd auth ip+login, no limits", "auth", mixed, **ports)
                    settle()
                    rd["calls_nolimits"] = bench("radiusd calls, no limits", "calls", mixed, **ports)
                    continue
                accounts = mixed_small if size == "small" else mixed
                rd[f"auth_fixed_rate_{size}"] = bench(f"radiusd auth {latency_rate:g}/s {size}", "auth",
                                                      accounts, rate=latency_rate, **ports)
                rd[f"rss_{size}_after"] = rss_tree(server.proc.pid)
            except RuntimeError as exc:
                rd[f"error_{size}"] = str(exc)
                say(f"radiusd ({size}): {exc}; see {work / f'radiusd-{size}' / 'server.log'}")
                args.keep = True
            finally:
                server.stop()
    results["params"]["latency_rate_used"] = latency_rate

    if not args.skip_freeradius and fr.binary():
        f = results["freeradius"]
        url = recreate_db(admin, "freeradius_bench")
        fr.load_schema(libpq(url))
        f["radcheck_rows"] = fr.load_radcheck(libpq(url), logins)
        from sqlalchemy.engine import make_url

        u = make_url(url)
        auth_port, acct_port = free_port(), free_port()
        raddb = fr.write_raddb(work / "raddb", auth_port=auth_port, acct_port=acct_port, secret=SECRET,
                               db=dict(host=u.host or "127.0.0.1", port=u.port or 5432, user=u.username,
                                       password=u.password or "", dbname=u.database))
        fr.check_config(raddb)
        proc = fr.start(raddb)
        try:
            fr.wait_ready(proc, raddb)
            f["rss"] = rss_tree(proc.pid)
            ports = dict(auth_port=auth_port, acct_port=acct_port, duration=D)
            f["auth_fixed_rate_large"] = bench(f"freeradius auth {latency_rate:g}/s", "auth", login_only,
                                               rate=latency_rate, **ports)
            f["auth_login"] = bench("freeradius auth", "auth", login_only, **ports)
            f["acct"] = bench("freeradius acct", "acct", login_only, **ports)
        finally:
            fr.stop(proc)

    results["finished_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / (dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + ".json")
    out.write_text(json.dumps(results, indent=2))
    print(markdown(results))
    say(f"results: {out}")
    if args.keep:
        say(f"work directory kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _get(d, *path):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def _fmt(v, unit=""):
    if v is None:
        return "-"
    if isinstance(v, float):
        v = f"{v:,.1f}" if abs(v) >= 100 else f"{v:,.2f}"
    elif isinstance(v, int):
        v = f"{v:,}"
    return f"{v}{unit}"


def _ratio(a, b):
    return f"{a / b:.2f}×" if a and b else "-"


def markdown(res: dict) -> str:
    rd, f, m = res["radiusd"], res["freeradius"], res["machine"]
    rows = []

    def row(figure, r, fv=None, ratio=True, target=""):
        rows.append(f"| {figure} | {_fmt(r)} | {_fmt(fv)} | {_ratio(r, fv) if ratio else '-'} | {target} |")

    # "limits": every client has a finite credit and a capacity (every tenth account an account
    # capacity), so each Access-Request locks its client and reads its usage in the store.
    limits = "no limits" if res["params"].get("no_limits") else "limits on every client"
    row(f"Access-Requests/s, login PAP, {limits} (window 32)", _get(rd, "auth_login", "auth_per_second"),
        _get(f, "auth_login", "auth_per_second"), target="≥ 1.5× FreeRADIUS")
    row(f"Access-Requests/s, IP + login, {limits}", _get(rd, "auth_mixed", "auth_per_second"),
        _get(f, "auth_login", "auth_per_second"), target="≥ 1.5× FreeRADIUS")
    row("Access-Requests/s, IP + login, no limits (store not asked)", _get(rd, "auth_mixed_nolimits", "auth_per_second"),
        _get(f, "auth_login", "auth_per_second"), target="≥ 2× FreeRADIUS")
    row("Accounting requests/s, Start+Stop, durable: active call + rated CDR + debit",
        _get(rd, "acct", "acct", "per_second"), _get(f, "acct", "acct", "per_second"), target="≥ 2× FreeRADIUS")
    row(f"complete calls/s (auth+start+stop, window 32), {limits}", _get(rd, "calls", "calls", "per_second"),
        ratio=False, target="≥ 1,000")
    row("complete calls/s, no limits", _get(rd, "calls_nolimits", "calls", "per_second"), ratio=False)
    row(f"calls at half load, {limits}: Access-Request p99 ms",
        _get(rd, "calls_half_load", "by_kind", "auth", "latency_ms", "p99"), ratio=False, target="≤ 5 ms")
    row(f"calls/s with 2 legs (answer+originate), {limits}", _get(rd, "calls_2legs", "calls", "per_second"), ratio=False)
    for size in ("small", "large"):
        n = _get(rd, f"population_{size}", "accounts")
        row(f"auth p50 / p99 ms at {res['params'].get('latency_rate_used', 0):g}/s, {_fmt(n)} accounts",
            " / ".join(_fmt(_get(rd, f"auth_fixed_rate_{size}", "by_kind", "auth", "latency_ms", p)) for p in ("p50", "p99")),
            " / ".join(_fmt(_get(f, "auth_fixed_rate_large", "by_kind", "auth", "latency_ms", p)) for p in ("p50", "p99"))
            if size == "large" else None, ratio=False, target="flat 1k→100k")
        row(f"snapshot load s, {_fmt(n)} accounts", _get(rd, f"snapshot_load_s_{size}"), ratio=False, target="≤ 5 s")
        row(f"start to first answer s, {_fmt(n)} accounts", _get(rd, f"ready_s_{size}"), ratio=False)
        workers = _get(rd, f"rss_{size}_after", "workers_mb") or []
        row(f"RSS MB per worker, {_fmt(n)} accounts", max(workers) if workers else _get(rd, f"rss_{size}_after", "main_mb"),
            ratio=False, target="≤ 500 MB")
    lost = sum((_get(x, "requests", "lost") or 0) for x in list(rd.values()) + list(f.values()) if isinstance(x, dict))
    drops = sum((_get(x, "udp_rcvbuf_errors") or 0) for x in list(rd.values()) + list(f.values()) if isinstance(x, dict))
    cpu = [(_get(x, "generator", "cpu_pct_of_wall") or 0) for x in list(rd.values()) + list(f.values()) if isinstance(x, dict)]
    head = [
        f"Machine: {m.get('cpu')} × {m.get('nproc')} CPUs, {m.get('memory_gb')} GB RAM, kernel {m.get('kernel')}, "
        f"Python {m.get('python')}, radiusd {m.get('radiusd')} (workers {res['params']['workers']}), "
        f"{m.get('freeradius') or 'FreeRADIUS not run'}; run {res['started_at']}",
        "",
        "| figure | radiusd | FreeRADIUS + rlm_sql | ratio | target |",
        "|---|---:|---:|---:|---|",
    ]
    tail = ["", f"Lost requests over all runs: {lost}; UDP receive-buffer drops (RcvbufErrors): {drops}; "
                f"generator CPU max {max(cpu) if cpu else '-'}% of wall."]
    return "\n".join(head + rows + tail)


if __name__ == "__main__":
    sys.exit(main())
