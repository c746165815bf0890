"""Where an Access-Request's time goes inside one server process: `radiusd serve` with timestamps.

Runs `radiusd serve ARGS...` (use `--workers 1`: one process) with the edge's and the store
threads' hand-over points wrapped, and on exit (SIGTERM/Ctrl-C) prints, for the Access-Requests
answered, p50/p99 of each stage and the mean of each stage over the slowest 1 %:

    admit -> decide          in the fair queue until its loop turn (the event loop busy)
    decide -> batch start    until the reservation batcher takes it (the batch before it in the
                             store; the batcher thread waiting for the GIL)
    store                    reserve_batch: PostgreSQL round trips, lock waits, GIL re-acquisition
    deliver -> loop          the batch's results until the event loop runs them (GIL, loop busy)
    loop -> answer           from that callback to the reply being built
plus the accounting writer's groups (wall and thread CPU) and a probe thread that sleeps 1 ms in a
loop: how late it wakes is how long a thread woken by I/O waits for the GIL (and the CPU).

    PYTHONPATH=<tree> python3 benchmarks/serve_stages.py serve --workers 1 --auth-port 28140 --acct-port 28141
    radiusd bench calls --auth-port 28140 --acct-port 28141 --rate 300 --duration 10 ...; kill -TERM <pid>
    SWITCH_INTERVAL=0.005 ...   # run the server with this GIL switch interval instead of the server's

A measuring aid, not part of the server: it wraps private methods and may need updating with them.
"""
from __future__ import annotations

import atexit
import os
import sys
import threading
import time

from radiusd.radius import endpoint as _endpoint, server as _server
from radiusd.pipeline import accounting_writer as _writer, reservation_batcher as _batcher

clock = time.perf_counter
arrived: dict = {}     # (ip, port, Identifier) -> admitted at
requests: dict = {}    # the same key -> {stage: time}; a key reused later overwrites (bounded)
batches: list = []     # (start, end, size) of reserve_batch calls
groups: list = []      # (wall s, thread CPU s, records) of accounting writer groups
probe: list = []       # ms a 1 ms sleep overslept


def _wrap(cls, name, make):
    setattr(cls, name, make(getattr(cls, name)))


def _admit(original):
    def admit(self, port, data, addr, mono, state, via=None):
        if port == "auth" and len(data) > 2:
            arrived[(addr[0], addr[1], data[1])] = clock()
        return original(self, port, data, addr, mono, state, via)
    return admit


def _access_request(original):
    def access_request(self, actions, addr, via, key, pkt, *rest):
        requests[key] = {"admit": arrived.pop(key, None), "decide": clock()}
        return original(self, actions, addr, via, key, pkt, *rest)
    return access_request


def _decide(original):
    def decide(self, plans):
        started = clock()
        try:
            return original(self, plans)
        finally:
            batches.append((started, clock(), len(plans)))
    return decide


def _deliver(original):
    def deliver(self, pairs):
        now, (start, end, _) = clock(), batches[-1]
        for request, _ in pairs:
            stages = requests.get(request.key)
            if stages is not None:
                stages.update(store0=start, store1=end, deliver=now)
        return original(self, pairs)
    return deliver


def _reserved(original):
    def reserved(self, pairs):
        now = clock()
        for request, _ in pairs:
            stages = requests.get(request.key)
            if stages is not None:
                stages["loop"] = now
        return original(self, pairs)
    return reserved


def _answer(original):
    def answer(self, actions, request, decision, now):
        stages = requests.get(request.key)
        if stages is not None:
            stages["answer"] = clock()
        return original(self, actions, request, decision, now)
    return answer


def _group(original):
    def commit_or_spool(self, batch):
        wall, cpu = clock(), time.thread_time()
        try:
            return original(self, batch)
        finally:
            groups.append((clock() - wall, time.thread_time() - cpu, len(batch)))
    return commit_or_spool


def _probe() -> None:
    while True:
        started = clock()
        time.sleep(0.001)
        probe.append((clock() - started - 0.001) * 1000)


def _pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] if values else float("nan")


STAGES = [("admit -> decide", "admit", "decide"), ("decide -> batch start", "decide", "store0"),
          ("store (reserve_batch)", "store0", "store1"), ("deliver -> loop", "deliver", "loop"),
          ("loop -> answer", "loop", "answer"), ("total in the process", "admit", "answer")]


def report() -> str:
    done = [r for r in list(requests.values()) if r.get("admit") and "store0" in r and "answer" in r]
    if not done:
        return "serve_stages: no Access-Request went through the store"
    slowest = sorted(done, key=lambda r: r["answer"] - r["admit"])[int(len(done) * 0.99):]
    lines = [f"serve_stages: {len(done)} Access-Requests (GIL switch interval {sys.getswitchinterval() * 1000:g} ms)",
             f"  {'stage':24s} {'p50 ms':>8s} {'p99 ms':>8s} {'slowest 1 %':>12s}"]
    for name, a, b in STAGES:
        ms = [(r[b] - r[a]) * 1000 for r in done]
        slow = sum((r[b] - r[a]) * 1000 for r in slowest) / len(slowest)
        lines.append(f"  {name:24s} {_pct(ms, .5):8.2f} {_pct(ms, .99):8.2f} {slow:12.2f}")
    sizes = [n for *_, n in batches]
    store = [(e - s) * 1000 for s, e, _ in batches]
    lines.append(f"  reservation batches: {len(batches)}, mean size {sum(sizes) / max(1, len(sizes)):.1f}, "
                 f"ms p50 {_pct(store, .5):.2f} p99 {_pct(store, .99):.2f}")
    records = sum(n for *_, n in groups)
    lines.append(f"  accounting groups: {len(groups)}, mean size {records / max(1, len(groups)):.1f}, wall ms p50 "
                 f"{_pct([w * 1000 for w, _, _ in groups], .5):.2f} p99 {_pct([w * 1000 for w, _, _ in groups], .99):.2f}, "
                 f"writer thread CPU {sum(c for _, c, _ in groups) / max(1, records) * 1e6:.0f} µs per record")
    woke = probe[100:]
    lines.append(f"  1 ms sleep overslept (GIL + CPU wait of a woken thread): ms p50 {_pct(woke, .5):.2f} "
                 f"p90 {_pct(woke, .9):.2f} p99 {_pct(woke, .99):.2f}")
    return "\n".join(lines)


def main() -> int:
    for cls, name, make in ((_endpoint.Endpoint, "admit", _admit),
                            (_endpoint.Endpoint, "_access_request", _access_request),
                            (_endpoint.Endpoint, "_answer", _answer),
                            (_batcher.ReservationBatcher, "_decide", _decide),
                            (_server.RadiusServer, "_deliver_reservations", _deliver),
                            (_server.RadiusServer, "_reserved", _reserved),
                            (_writer.AccountingWriter, "_commit_or_spool", _group)):
        _wrap(cls, name, make)
    if os.environ.get("SWITCH_INTERVAL"):
        interval = float(os.environ["SWITCH_INTERVAL"])
        _server.GIL_SWITCH_INTERVAL = interval   # what run_server() sets (trees that set none: below)
        sys.setswitchinterval(interval)
    threading.Thread(target=_probe, name="probe", daemon=True).start()
    atexit.register(lambda: print(report(), file=sys.stderr, flush=True))
    from radiusd.cli import main as cli
    return cli(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
