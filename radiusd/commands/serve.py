"""`radiusd serve` and `radiusd demo`: run the RADIUS server in the foreground."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from radiusd.cli_output import UserError, common_options
from radiusd.config import PROJECT_ROOT, load_settings

DEMO_SEED = PROJECT_ROOT / "schema" / "seeds" / "demo.sql"
DEMO_DB = "radiusd-demo.sqlite3"
DEMO_WEB_USER = ("admin", "radiusd-demo")  # the demo store's web admin login, printed by `radiusd demo`


def _server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bind", action="append", metavar="ADDR",
                        help="address to listen on; repeat for several (default from settings: 0.0.0.0 and ::)")
    parser.add_argument("--auth-port", type=int, help="authorization port (default 1812)")
    parser.add_argument("--acct-port", type=int, help="accounting port (default 1813)")
    parser.add_argument("--workers", type=int,
                        help="worker processes sharing the ports (SO_REUSEPORT); 0 = one per CPU; 1 = in-process")
    parser.add_argument("--metrics-port", type=int,
                        help="HTTP port for /metrics and /health (0 = off); worker i uses port + i")


def register(subparsers) -> None:
    serve = subparsers.add_parser(
        "serve", parents=[common_options()],
        help="run the RADIUS server in the foreground",
        description="Answer Access-Requests and record accounting. Stops cleanly on SIGTERM, "
                    "reloads admin data on SIGHUP (and by itself within seconds of an admin change).",
    )
    _server_options(serve)
    serve.set_defaults(func=cmd_serve)

    demo = subparsers.add_parser(
        "demo", parents=[common_options()],
        help="start the server on an SQLite store with the demo data and print a radclient line to try",
    )
    demo.add_argument("--db", default=DEMO_DB, metavar="FILE",
                      help=f"SQLite file for the demo store (default ./{DEMO_DB}; created and seeded if new)")
    demo.add_argument("--seed", default=str(DEMO_SEED), metavar="FILE", help="seed file loaded into a new store")
    _server_options(demo)
    demo.set_defaults(func=cmd_demo)


def _settings(args, **forced):
    overrides = dict(
        database_url=getattr(args, "database_url", None),
        bind=tuple(args.bind) if args.bind else None,
        auth_port=args.auth_port,
        acct_port=args.acct_port,
        workers=args.workers,
        metrics_port=args.metrics_port,
    )
    for key, value in forced.items():
        if overrides.get(key) is None:
            overrides[key] = value
    for name in ("auth_port", "acct_port", "metrics_port"):
        value = overrides[name]
        if value is not None and not 0 <= value <= 65535:
            raise UserError(f"--{name.replace('_', '-')}: {value} is not a port number")
    if overrides["workers"] is not None and overrides["workers"] < 0:
        raise UserError(f"--workers: {overrides['workers']} must be 0 (one per CPU) or more")
    return load_settings(getattr(args, "config", None), **overrides)


def _serve(settings) -> int:
    from radiusd.logging_setup import configure, get_logger
    from radiusd.radius.server import StartupError, effective_workers, run_server
    from radiusd.radius.supervisor import run_supervisor

    configure(settings.log_level)
    workers = effective_workers(settings)
    try:
        if workers == 1:
            return run_server(settings)
        return run_supervisor(settings, workers)
    except StartupError as exc:
        get_logger().error("server.startup_failed", error=str(exc))
        print(f"radiusd: error: {exc}", file=sys.stderr)
        return 2


def cmd_serve(args) -> int:
    return _serve(_settings(args))


def demo_radclient_line(auth_port: int, host: str = "127.0.0.1", secret: str = "testing123") -> str:
    attrs = ", ".join([
        "User-Name = acme-sip",
        "User-Password = s3cret-pass",
        "Called-Station-Id = 442071234567",
        "Calling-Station-Id = 15551230001",
        'h323-conf-id = \\"h323-conf-id=1A2B3C4D 00000000 00000000 00000001\\"',
        "Message-Authenticator = 0x00",
    ])
    return f'echo "{attrs}" | radclient -x {host}:{auth_port} auth {secret}'


def prepare_demo_store(db_file: str, seed: str) -> tuple[str, dict[str, int] | None]:
    """Create/open the demo SQLite store; load the seed if it has no NAS yet."""
    from sqlalchemy import func, select

    from radiusd.admin import users
    from radiusd.admin.seeds import load_seed
    from radiusd.db import open_store
    from radiusd.models import Nas
    from radiusd.store.sealing import ensure_key_file

    url = f"sqlite:///{os.path.abspath(db_file)}"
    engine, sessions = open_store(url)
    try:
        ensure_key_file(sessions)  # next to the demo store: <file>.key, 0600
        with sessions() as session:
            has_nas = session.scalar(select(func.count()).select_from(Nas)) > 0
        loaded = None if has_nas else load_seed(sessions, seed, actor="demo", context="seed")
        with sessions.begin() as session:
            if users.count_users(session) == 0:
                users.add_user(session, *DEMO_WEB_USER, "admin", actor="demo", context="seed")
    finally:
        engine.dispose()
    return url, loaded


def cmd_demo(args) -> int:
    if not Path(args.seed).is_file():
        raise UserError(f"--seed: no such file {args.seed}")
    url, loaded = prepare_demo_store(args.db, args.seed)
    args.database_url = url
    settings = _settings(args, bind=("127.0.0.1", "::1"), workers=1)
    from radiusd.radius.server import StartupError, probe_ports

    try:
        probe_ports(settings)   # say so before printing a line that could not work
    except StartupError as exc:
        print(f"radiusd: error: {exc}", file=sys.stderr)
        return 2
    if loaded is not None:
        print(f"demo store {args.db}: loaded {args.seed} ({sum(loaded.values())} rows)")
    else:
        print(f"demo store {args.db}: already has data, not seeding again")
    # the other commands default to ./radiusd.sqlite3: say how to reach the demo's store instead
    print(f"other radiusd commands reach this store with: DATABASE_URL={url} radiusd account list")
    print(f"  (or --database-url {url}, or `export DATABASE_URL={url}` once)")
    print(f"radiusd listening on auth {settings.auth_port} / acct {settings.acct_port}; try (needs radclient):")
    print()
    print("  " + demo_radclient_line(settings.auth_port))
    print()
    print("Web admin: run in another terminal")
    print()
    print(f"  radiusd web --database-url {url}")
    print()
    print(f"then open http://127.0.0.1:8080/ and log in as {DEMO_WEB_USER[0]} / {DEMO_WEB_USER[1]}")
    print()
    print("Ctrl-C stops the server.", flush=True)
    return _serve(settings)
