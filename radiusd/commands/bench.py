"""`radiusd bench auth|acct|calls`: load a RADIUS server on loopback and report what it sustained."""
from __future__ import annotations

import ipaddress
import os
import sys

from radiusd.cli_output import UserError, common_options, emit

DEFAULT_SECRET = "testing123"  # the demo seed's NAS secret


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench", parents=[common_options()],
        help="load generator: Access/Accounting-Requests against a local server",
        description="Send Access-Requests (auth), Start/Stop pairs (acct) or whole calls (calls) to a RADIUS "
                    "server on loopback and report requests/s, latency percentiles, accepts/rejects, timeouts "
                    "and the generator's own CPU. With no target options it runs against `radiusd demo`.")
    p.add_argument("mode", choices=("auth", "acct", "calls"))
    p.add_argument("--server", default="127.0.0.1", help="server address (loopback only unless --allow-remote)")
    p.add_argument("--auth-port", type=int, default=1812)
    p.add_argument("--acct-port", type=int, default=1813)
    p.add_argument("--secret", default=None,
                   help="shared secret (default: $RADIUSD_BENCH_SECRET or the demo seed's)")
    p.add_argument("--users", metavar="FILE", help="population CSV: kind(ip|login),id,password,called")
    p.add_argument("--kinds", default=None,
                   help="use only these account kinds from the population: ip, login or ip,login "
                        "(default: both for auth and acct, login for calls)")
    p.add_argument("--window", type=int, default=None,
                   help="max outstanding requests (default 32; 4096 with --rate)")
    p.add_argument("--rate", type=float, default=None,
                   help="target requests/s (auth, acct) or calls/s (calls); default: as fast as the window allows")
    p.add_argument("--duration", type=float, default=None, help="seconds to keep starting new requests")
    p.add_argument("--count", type=int, default=None,
                   help="stop after this many requests (auth), Start/Stop pairs (acct) or calls (calls)")
    p.add_argument("--timeout", type=float, default=1.0, help="seconds before a retransmission (default 1)")
    p.add_argument("--retries", type=int, default=2, help="retransmissions before a request counts as lost")
    p.add_argument("--legs", type=int, default=1, choices=(1, 2),
                   help="accounting legs per call: 1 (answer) or 2 (answer + originate)")
    p.add_argument("--session-time", type=int, default=60, help="Stops carry Acct-Session-Time 1..N seconds")
    p.add_argument("--sockets", type=int, default=8, help="source sockets per server port (default 8)")
    p.add_argument("--procs", type=int, default=1, help="generator processes (default 1)")
    p.add_argument("--allow-remote", action="store_true", help="allow a non-loopback server address")
    p.add_argument("--quiet", action="store_true", help="no progress line on stderr")
    p.set_defaults(func=cmd_bench)


def check_target(server: str, allow_remote: bool) -> str:
    """The address to send to; loopback only unless the user allows otherwise."""
    if server == "localhost":
        server = "127.0.0.1"
    try:
        address = ipaddress.ip_address(server.strip("[]"))
    except ValueError:
        raise UserError(f"server: {server!r} is not an IP address") from None
    if not address.is_loopback and not allow_remote:
        raise UserError(f"server: {address} is not a loopback address (add --allow-remote to load a remote server)")
    return str(address)


def options_from_args(args):
    from radiusd.bench.engine import BenchOptions
    from radiusd.bench.population import demo_population, load_users

    server = check_target(args.server, args.allow_remote)
    for name in ("auth_port", "acct_port"):
        if not 1 <= getattr(args, name) <= 65535:
            raise UserError(f"{name.replace('_', '-')}: {getattr(args, name)} is not a UDP port")
    checks = [
        ("window", args.window, lambda v: v is None or v >= 1, "must be at least 1"),
        ("rate", args.rate, lambda v: v is None or v > 0, "must be positive"),
        ("duration", args.duration, lambda v: v is None or v > 0, "must be positive"),
        ("count", args.count, lambda v: v is None or v >= 1, "must be at least 1"),
        ("timeout", args.timeout, lambda v: v > 0, "must be positive"),
        ("retries", args.retries, lambda v: 0 <= v <= 10, "must be 0..10"),
        ("session-time", args.session_time, lambda v: v >= 1, "must be at least 1"),
        ("sockets", args.sockets, lambda v: 1 <= v <= 64, "must be 1..64"),
        ("procs", args.procs, lambda v: 1 <= v <= 16, "must be 1..16"),
    ]
    for name, value, ok, why in checks:
        if not ok(value):
            raise UserError(f"{name}: {value} {why}")
    kinds = ("ip", "login") if args.mode != "calls" else ("login",)
    if args.kinds:
        kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
        bad = [k for k in kinds if k not in ("ip", "login")]
        if bad or not kinds:
            raise UserError(f"kinds: {args.kinds!r} is not ip, login or ip,login")
    if args.users:
        try:
            accounts = load_users(args.users, kinds)
        except OSError as exc:
            raise UserError(f"users: cannot read {args.users}: {exc.strerror}") from None
        except ValueError as exc:
            raise UserError(f"users: {exc}") from None
    else:
        accounts = [a for a in demo_population(args.mode) if a.kind in kinds]
        if not accounts:
            raise UserError(f"kinds: the demo population has no {args.kinds} accounts for {args.mode}")
    secret = args.secret if args.secret is not None else os.environ.get("RADIUSD_BENCH_SECRET", DEFAULT_SECRET)
    if not secret:
        raise UserError("secret: empty")
    duration = args.duration
    if duration is None and args.count is None:
        duration = 10.0
    window = args.window if args.window is not None else (4096 if args.rate else 32)
    return BenchOptions(
        mode=args.mode, accounts=accounts, secret=secret.encode(), server=server,
        auth_port=args.auth_port, acct_port=args.acct_port, window=window, rate=args.rate,
        duration=duration, count=args.count, timeout=args.timeout, retries=args.retries, legs=args.legs,
        sockets=args.sockets, session_time=args.session_time,
        progress=None if args.quiet else sys.stderr,
    )


def cmd_bench(args) -> int:
    from radiusd.bench.engine import run_bench

    opts = options_from_args(args)
    result = run_bench(opts, procs=args.procs)
    if getattr(args, "json", False):
        emit(result, True)
    else:
        sys.stdout.write(format_report(result))
    return 0 if result["requests"]["responses"] else 1


def _ms(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def format_report(result: dict) -> str:
    r = result["requests"]
    g = result["generator"]
    lines = [
        f"mode {result['mode']}  server {result['server']}  window {result['window']}"
        + (f"  rate {result['rate']:g}/s" if result["rate"] else "")
        + f"  accounts {result['accounts']}  elapsed {result['elapsed_s']:.1f}s",
        f"requests: {r['responses']} answered of {r['sent']} sent, {r['per_second']:,.1f}/s; "
        f"timeouts {r['timeouts']}, retransmits {r['retransmits']}, lost {r['lost']}",
    ]
    if "auth_per_second" in result:
        lines.append(f"auth/s {result['auth_per_second']:,.1f}")
    for label in ("calls", "sessions"):
        if label in result:
            c = result[label]
            lines.append(f"{label}: started {c.get('started', 0)}, completed {c.get('completed', 0)} "
                         f"({c['per_second']:,.1f}/s), rejected {c.get('rejected', 0)}, failed {c.get('failed', 0)}")
    if "acct" in result:
        lines.append(f"accounting responses/s {result['acct']['per_second']:,.1f}")
    lines.append(f"{'kind':<11} {'sent':>8} {'answered':>8} {'accept':>7} {'reject':>7} {'acct-ok':>7} "
                 f"{'lost':>5} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'max ms':>7}")
    for kind, k in result["by_kind"].items():
        lat = k["latency_ms"]
        lines.append(f"{kind:<11} {k['sent']:>8} {k['responses']:>8} {k['accepts']:>7} {k['rejects']:>7} "
                     f"{k['acct_responses']:>7} {k['lost']:>5} {_ms(lat['p50']):>7} {_ms(lat['p95']):>7} "
                     f"{_ms(lat['p99']):>7} {_ms(lat['max']):>7}")
    lines.append(f"generator: {g['procs']} process(es), {g['sockets_per_port']} sockets/port, "
                 f"CPU {g['cpu_s']:.2f}s (user {g['cpu_user_s']:.2f}s, sys {g['cpu_sys_s']:.2f}s) "
                 f"= {g['cpu_pct_of_wall']}% of wall"
                 + (f"; stray replies {result['stray_replies']}" if result["stray_replies"] else "")
                 + (f"; ICMP refused {result['icmp_refused']}" if result["icmp_refused"] else ""))
    return "\n".join(lines) + "\n"
