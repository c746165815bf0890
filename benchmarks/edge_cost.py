"""CPU cost of the RADIUS edge per request, in-process: no sockets, no store, no threads.

Access-Requests (a PAP login) and Accounting Starts go through `RadiusServer.handle_datagram`
exactly as the event loop hands them over; the reservation batcher and the accounting writer are
stand-ins that accept at once, so what is measured is the loop side only: decode, checks,
duplicate cache, dialect facts, plan_call, reply encoding, actions, metrics and log lines
(written to /dev/null).

    python3 benchmarks/edge_cost.py                  # µs of CPU per request, median of 5 rounds
    python3 benchmarks/edge_cost.py --requests 600   # with valgrind: deterministic instructions
    valgrind --tool=callgrind --callgrind-out-file=/dev/null python3 benchmarks/edge_cost.py --requests 100
    (instructions per request = difference of a 600- and a 100-request run / (5 rounds × 500 × 2))
    python3 benchmarks/edge_cost.py --stages         # µs per stage of the same requests, one at a time
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from radius_packets import SECRET, acct_request, auth_request  # noqa: E402
from radiusd.config import Settings  # noqa: E402
from radiusd.core.decision import Accept  # noqa: E402
from radiusd.core.snapshot import AccountInfo, ClientInfo, NasInfo, Rate, build_rate_table, build_snapshot  # noqa: E402
from radiusd.logging_setup import configure  # noqa: E402
from radiusd.radius.nas_table import NasTable  # noqa: E402
from radiusd.radius.server import EdgeState, RadiusServer  # noqa: E402

CALL = [("User-Name", "alice"), ("Called-Station-Id", "4921234567"), ("h323-conf-id", "h323-conf-id=1 2 3 4")]
BATCH = 32   # reservations and records acknowledged in groups, as the batcher and writer do


class _Transport:
    def sendto(self, data, addr):
        pass

    def is_closing(self):
        return False


class _Listener:
    def __init__(self, kind):
        self.kind, self.transport = kind, _Transport()


class _Loop:
    """The writer's call_soon_threadsafe, run by hand after each group."""
    def __init__(self):
        self.calls = []

    def call_soon_threadsafe(self, fn, *args):
        self.calls.append((fn, args))

    def run(self):
        calls, self.calls = self.calls, []
        for fn, args in calls:
            fn(*args)


class _Batcher:
    def __init__(self):
        self.pending = []

    def submit(self, plan, now, token):
        self.pending.append(token)


class _Writer:
    def submit(self, facts, on_done):
        on_done(True)


def make_server() -> RadiusServer:
    rates = build_rate_table(10, "retail", "USD", [Rate(10, "49", Decimal("0.06"))])
    snapshot = build_snapshot(
        version=1, nas=[NasInfo(1, "gw", "127.0.0.1/32", SECRET)],
        clients=[ClientInfo(1, "acme", credit_limit=None, orig_rate_table_id=10)],
        accounts=[AccountInfo(2, 1, "alice", "name", password="s3cret")], rate_tables=[rates])
    server = RadiusServer(Settings(), sessions=None)
    server.state = EdgeState(snapshot, NasTable.from_snapshot(snapshot))
    server.loop, server.writer, server.batcher = _Loop(), _Writer(), _Batcher()
    return server


def stages(server: RadiusServer, auth: bytes, start: bytes, repeat: int = 20000) -> list[tuple[str, float]]:
    """µs per call of each stage the edge runs for one request, each timed alone on the same
    packet (medians of 5 runs): where the per-request total of main() goes."""
    from radiusd.core.authorize import plan_call
    from radiusd.logging_setup import log_line
    from radiusd.radius import codec, dialects, replies
    snapshot, dictionary = server.state.snapshot, server.endpoint.dictionary
    nas = server.state.nas_table.lookup("127.0.0.1")
    pkt = codec.decode(auth, dictionary, nas.secret, accounting=False)
    acct_pkt = codec.decode(start, dictionary, nas.secret, accounting=True)
    facts = dialects.auth_facts(pkt, nas, "127.0.0.1")
    now = server.now()
    plan = plan_call(facts, snapshot, now.utc)
    accept = Accept(plan=plan, max_duration=3600, max_cost=Decimal(1), available=None)
    fields = {"outcome": "accept", "nas": "gw", "source": "127.0.0.1", "account": "alice", "client": "acme",
              "h323_return_code": 0, "called": "4921234567", "calling": None, "call_id": "1 2 3 4",
              "max_duration": 3600, "rate_prefix": "49", "latency_ms": 0.52}
    inc = server.metrics.inc
    cases = [
        ("decode (framing checks, attributes)", lambda: codec.decode(auth, dictionary, nas.secret, accounting=False)),
        ("Message-Authenticator check", lambda: server.endpoint.ma.check(pkt, nas)),
        ("Access-Request -> AuthFacts (PAP reveal)", lambda: dialects.auth_facts(pkt, nas, "127.0.0.1")),
        ("plan_call (identify, rate, limits)", lambda: plan_call(facts, snapshot, now.utc)),
        ("Access-Accept encode + authenticators", lambda: replies.accept_reply(pkt, accept, nas)),
        ("per-request log line", lambda: log_line("info", "auth.decision", dict(fields))),
        ("one counter increment", lambda: inc("radiusd_packets_received_total", port="auth")),
        ("clock read (utc + monotonic)", server.now),
        ("accounting decode", lambda: codec.decode(start, dictionary, nas.secret, accounting=True)),
        ("Accounting-Request -> AcctFacts", lambda: dialects.acct_facts(acct_pkt, nas, "127.0.0.1", now.utc, [])),
        ("Accounting-Response encode", lambda: replies.accounting_reply(acct_pkt)),
    ]
    found = []
    for name, call in cases:
        runs = []
        for _ in range(5):
            started = time.process_time()
            for _ in range(repeat):
                call()
            runs.append((time.process_time() - started) / repeat * 1e6)
        found.append((name, statistics.median(runs)))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000, help="Access-Requests (and as many Starts) per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--stages", action="store_true", help="µs per stage instead of per request")
    parser.add_argument("--kind", choices=("both", "auth", "acct"), default="both",
                        help="only Access-Requests or only Starts (under callgrind: instructions of one kind)")
    args = parser.parse_args()
    devnull = os.open(os.devnull, os.O_WRONLY)
    saved = os.dup(2)
    os.dup2(devnull, 2)   # the log lines are part of the cost, not of the output
    configure("info")
    server = make_server()
    auths = [auth_request(CALL, password="s3cret", id=i)[0] for i in range(256)]
    starts = [acct_request([("Acct-Status-Type", "Start"), ("Acct-Session-Id", f"s{i}"), ("h323-conf-id", "h323-conf-id=1 2 3 4"),
                            ("h323-setup-time", "h323-setup-time=10:00:00.000 UTC Mon Jan 5 2026")], id=i)[0]
              for i in range(256)]
    if args.stages:
        found = stages(server, auths[0], starts[0])
        os.dup2(saved, 2)
        for name, us in found:
            print(f"{name:42s} {us:6.1f} µs")
        return
    auth_port, acct_port = _Listener("auth"), _Listener("acct")
    source_port = iter(range(1024, 1 << 30))   # a new (port, id) per request: no retransmissions

    def auth_round() -> float:
        started = time.process_time()
        for i in range(args.requests):
            server.handle_datagram(auth_port, auths[i % 256], ("127.0.0.1", next(source_port)))
            if len(server.batcher.pending) >= BATCH or i == args.requests - 1:
                done, server.batcher.pending = server.batcher.pending, []
                server._reserved([(r, Accept(plan=r.plan, max_duration=3600, max_cost=Decimal(1), available=None))
                                  for r in done])
        return (time.process_time() - started) / args.requests * 1e6

    def acct_round() -> float:
        started = time.process_time()
        for i in range(args.requests):
            server.handle_datagram(acct_port, starts[i % 256], ("127.0.0.1", next(source_port)))
            if i % BATCH == BATCH - 1:
                server.loop.run()
        server.loop.run()
        return (time.process_time() - started) / args.requests * 1e6

    auth = [auth_round() for _ in range(args.rounds)] if args.kind != "acct" else [0.0]
    acct = [acct_round() for _ in range(args.rounds)] if args.kind != "auth" else [0.0]
    os.dup2(saved, 2)
    expected = args.rounds * args.requests
    accepted = server.metrics.get("radiusd_auth_decisions_total", outcome="accept", reason="none")
    recorded = server.metrics.get("radiusd_accounting_total", status="start")
    if (accepted, recorded) != (expected if args.kind != "acct" else 0, expected if args.kind != "auth" else 0):
        # else the figures would measure drops
        sys.exit(f"edge_cost: {accepted} accepts and {recorded} records, expected {expected} each")
    print(f"Access-Request: {statistics.median(auth):.1f} µs CPU (rounds {', '.join(f'{x:.1f}' for x in auth)})")
    print(f"Accounting Start: {statistics.median(acct):.1f} µs CPU (rounds {', '.join(f'{x:.1f}' for x in acct)})")


if __name__ == "__main__":
    main()
