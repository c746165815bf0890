"""Page times of the web admin with 100,000 accounts: the Accounts list, its searches and sorts.

    python3 benchmarks/web_pages.py                      # PostgreSQL from $RADIUSD_TEST_PG_URL
    python3 benchmarks/web_pages.py --store sqlite       # an SQLite file in a temporary directory
    python3 benchmarks/web_pages.py --accounts 10000 --runs 5

Loads the benchmark population (benchmarks/population.py: half IP accounts, half logins, 100
clients) into a fresh store, starts `radiusd web` on a free loopback port, logs in over HTTP and
requests each page once to warm up and then `--runs` times, printing the median and the slowest time of each, measured at
the client (the whole HTTP round trip, rendering included). The PostgreSQL database is dropped at
the end.
"""
from __future__ import annotations

import argparse
import http.cookiejar
import os
import re
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests")]

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from population import load_population  # noqa: E402
from radiusd.admin import users  # noqa: E402
from radiusd.db import normalise_url, open_store  # noqa: E402

PASSWORD = "bench-password"
PAGES = [
    ("accounts, first page", "/accounts"),
    ("accounts, page 1,000 (offset 49,950)", "/accounts?page=1000"),
    ("accounts sorted by client", "/accounts?sort=client"),
    ("accounts sorted by name, descending", "/accounts?sort=name&dir=desc"),
    ("quick search: name part", "/accounts?q=login-04999"),
    ("quick search: an IP address", "/accounts?q=10.0.1.4"),
    ("filter by client", "/accounts?client=bench-client-7"),
    ("advanced: IP inside a CIDR", "/accounts?ip=10.0.0.13"),
    ("advanced: status inactive + rate table", "/accounts?status=inactive&rate_table=bench-rt-1"),
    ("advanced: ident by name + name part", "/accounts?ident_by=name&name=bench-login-049"),
    ("account edit form", "/accounts/50000"),
    ("delete confirmation", "/accounts/50000/delete"),
    ("clients", "/clients"),
    ("dashboard", "/"),
]


def fetch(opener, url: str, data: dict | None = None) -> str:
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    with opener.open(url, body, timeout=120) as reply:
        return reply.read().decode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--pg-admin-url", default=os.environ.get("RADIUSD_TEST_PG_URL"),
                        help="a role that may create databases (default $RADIUSD_TEST_PG_URL)")
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=11)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="radiusd-webbench-"))
    admin_engine = None
    if args.store == "postgresql":
        if not args.pg_admin_url:
            parser.error("PostgreSQL needs --pg-admin-url or $RADIUSD_TEST_PG_URL")
        name = f"radiusd_webbench_{uuid.uuid4().hex[:8]}"
        admin_engine = create_engine(normalise_url(args.pg_admin_url), isolation_level="AUTOCOMMIT")
        with admin_engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(normalise_url(args.pg_admin_url)).set(database=name).render_as_string(hide_password=False)
    else:
        url = f"sqlite:///{tmp / 'bench.sqlite3'}"
    web = None
    try:
        started = time.monotonic()
        population = load_population(url, accounts=args.accounts, rates=5_000, rate_tables=5, clients=100)
        engine, sessions = open_store(url)
        with sessions.begin() as session:
            users.add_user(session, "bench", PASSWORD, "admin", "bench", "cli")
        if args.store == "postgresql":
            with engine.connect() as conn:
                conn.execute(text("ANALYZE"))
                conn.commit()
        engine.dispose()
        print(f"store: {args.store}, {population.accounts:,} accounts, {population.clients} clients "
              f"(loaded in {time.monotonic() - started:.1f} s)")

        from web_site import WebProcess

        web = WebProcess(url, tmp).wait_ready(timeout=120)
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        login = fetch(opener, web.base + "/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', login).group(1)
        home = fetch(opener, web.base + "/login", {"name": "bench", "password": PASSWORD, "csrf_token": token,
                                                    "next": "/accounts"})
        assert "bench-" in home, "login failed"
        print(f"{'page':<44} {'median ms':>10} {'max ms':>8}  result")
        for label, path in PAGES:
            times = []
            page = fetch(opener, web.base + path)  # warm-up, not counted (templates, caches)
            for _ in range(args.runs):
                t0 = time.perf_counter()
                page = fetch(opener, web.base + path)
                times.append((time.perf_counter() - t0) * 1000)
            shown = re.search(r"<span>([\d,]+–[\d,]+ of [\d,]+)</span>", page)
            result = shown.group(1) if shown else ("nothing found" if "nothing found" in page else "")
            print(f"{label:<44} {statistics.median(times):>10.1f} {max(times):>8.1f}  {result}", flush=True)
    finally:
        if web is not None:
            web.stop()
        if admin_engine is not None:
            with admin_engine.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin_engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
