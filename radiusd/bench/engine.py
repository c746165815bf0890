"""The load loop: one thread, non-blocking UDP sockets, a selector, a window or a target rate.

A *flow* is what one switch transaction needs in order: `auth` mode one Access-Request, `acct`
mode a Start then a Stop, `calls` mode Access-Request, Start, Stop (per leg with --legs 2). A
flow's next request goes out as soon as the previous one is answered; new flows start while
fewer than `window` requests are outstanding (and, with a rate, when they are due).
"""
from __future__ import annotations

import collections
import dataclasses
import random
import resource
import selectors
import socket
import time

from radiusd.bench.stats import KindStats
from radiusd.bench.wire import ACCESS_ACCEPT, ACCESS_REJECT, ACCOUNTING_RESPONSE, LoadAccount, PacketFactory
from radiusd.radius.codec import response_authenticator_ok

MODES = ("auth", "acct", "calls")
KINDS = ("auth", "acct-start", "acct-stop")
SOCKET_BUFFER = 4 * 1024 * 1024


@dataclasses.dataclass
class BenchOptions:
    mode: str
    accounts: list[LoadAccount]
    secret: bytes
    server: str = "127.0.0.1"
    auth_port: int = 1812
    acct_port: int = 1813
    window: int = 32
    rate: float | None = None          # requests/s (auth, acct) or calls/s (calls); None = window only
    duration: float | None = None
    count: int | None = None           # flows: requests (auth), Start/Stop pairs (acct), calls (calls)
    timeout: float = 1.0
    retries: int = 2
    legs: int = 1
    sockets: int = 8
    session_time: int = 60             # Acct-Session-Time of Stops: 1..session_time seconds
    progress: object = None            # a text stream for the once-a-second line, or None
    label: str = ""

    def steps(self) -> tuple:
        if self.mode == "auth":
            return (("auth", None),)
        acct = (("acct-start", "answer"), ("acct-stop", "answer"))
        if self.legs == 2:
            acct = (("acct-start", "answer"), ("acct-start", "originate"),
                    ("acct-stop", "originate"), ("acct-stop", "answer"))
        return acct if self.mode == "acct" else (("auth", None),) + acct


class _Flow:
    __slots__ = ("seq", "acc", "conf_id", "step", "session_time")


class _Req:
    __slots__ = ("flow", "kind", "pool", "sock", "ident", "packet", "authenticator", "first_sent", "tries")


class _Pool:
    """Sockets towards one server port, each with its own 256 Identifiers."""

    def __init__(self, family, address, count):
        self.socks = []
        self.free = []
        self.slots = []
        for _ in range(count):
            s = socket.socket(family, socket.SOCK_DGRAM)
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                try:
                    s.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
                except OSError:
                    pass
            s.connect(address)
            s.setblocking(False)
            self.socks.append(s)
            ids = list(range(256))
            random.shuffle(ids)
            self.free.append(collections.deque(ids))
            self.slots.append([None] * 256)
        self.rr = 0

    def acquire(self):
        n = len(self.socks)
        for i in range(n):
            idx = (self.rr + i) % n
            if self.free[idx]:
                self.rr = (idx + 1) % n
                return idx, self.free[idx].popleft()
        return None

    def close(self):
        for s in self.socks:
            s.close()


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _cpu_split() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def run_once(opts: BenchOptions) -> dict:
    """Run one generator loop to completion; returns raw results (see `summarize`)."""
    if opts.mode not in MODES:
        raise ValueError(f"mode: {opts.mode!r} is not one of {', '.join(MODES)}")
    if not opts.accounts:
        raise ValueError("accounts: the population is empty")
    if opts.duration is None and opts.count is None:
        raise ValueError("give a duration or a count")
    family = socket.AF_INET6 if ":" in opts.server else socket.AF_INET
    nas = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    factory = PacketFactory(opts.secret, nas_address=nas)
    steps = opts.steps()
    needs_auth = any(k == "auth" for k, _ in steps)
    needs_acct = any(k != "auth" for k, _ in steps)
    pools = {}
    if needs_auth:
        pools["auth"] = _Pool(family, (opts.server, opts.auth_port), opts.sockets)
    if needs_acct:
        pools["acct"] = _Pool(family, (opts.server, opts.acct_port), opts.sockets)
    sel = selectors.DefaultSelector()
    for pool in pools.values():
        for idx, s in enumerate(pool.socks):
            sel.register(s, selectors.EVENT_READ, (pool, idx))

    stats = {k: KindStats() for k in KINDS}
    calls = {"started": 0, "completed": 0, "rejected": 0, "failed": 0}
    counters = {"stray_replies": 0, "refused": 0, "send_errors": 0, "window_full": 0}
    run_tag = random.getrandbits(32)
    accounts = opts.accounts
    n_accounts = len(accounts)
    secret = opts.secret
    timeout = opts.timeout
    retries = opts.retries
    timeouts = collections.deque()   # (deadline, req, tries): constant timeout keeps it sorted
    outstanding = 0
    seq = 0
    clock = time.perf_counter

    def send(flow: _Flow) -> bool:
        nonlocal outstanding
        kind, origin = steps[flow.step]
        pool = pools["auth" if kind == "auth" else "acct"]
        got = pool.acquire()
        if got is None:
            return False
        idx, ident = got
        if kind == "auth":
            packet, auth = factory.access_request(ident, flow.acc, flow.seq, flow.conf_id)
        else:
            session_id = f"{run_tag:08x}-{flow.seq:x}-{origin[0]}"
            packet, auth = factory.accounting_request(
                ident, flow.acc, flow.seq, flow.conf_id, session_id, 1 if kind == "acct-start" else 2,
                origin, flow.session_time, time.time())
        req = _Req()
        req.flow, req.kind, req.pool, req.sock, req.ident = flow, kind, pool, idx, ident
        req.packet, req.authenticator, req.tries = packet, auth, 0
        pool.slots[idx][ident] = req
        req.first_sent = now = clock()
        try:
            pool.socks[idx].send(packet)
        except (BlockingIOError, ConnectionRefusedError, OSError):
            counters["send_errors"] += 1  # the timeout retransmits it
        stats[kind].sent += 1
        timeouts.append((now + timeout, req, 0))
        outstanding += 1
        return True

    def release(req: _Req) -> None:
        nonlocal outstanding
        req.pool.slots[req.sock][req.ident] = None
        req.pool.free[req.sock].append(req.ident)
        outstanding -= 1

    pending_flows = collections.deque()  # flows whose next request found no free Identifier

    def advance(flow: _Flow) -> None:
        flow.step += 1
        if flow.step >= len(steps):
            calls["completed"] += 1
        elif not send(flow):
            pending_flows.append(flow)

    def start_flow() -> bool:
        nonlocal seq
        flow = _Flow()
        flow.seq = seq
        flow.acc = accounts[seq % n_accounts]
        flow.conf_id = factory.conf_id(run_tag, seq)
        flow.step = 0
        flow.session_time = 1 + seq % max(opts.session_time, 1)
        if not send(flow):
            return False
        seq += 1
        calls["started"] += 1
        return True

    flows_per_s = None
    if opts.rate:
        flows_per_s = opts.rate / (2 * opts.legs if opts.mode == "acct" else 1)
    interval = 1.0 / flows_per_s if flows_per_s else 0.0
    cpu0 = _cpu()
    user0, sys0 = _cpu_split()
    t0 = clock()
    end_time = t0 + opts.duration if opts.duration is not None else float("inf")
    limit = opts.count if opts.count is not None else float("inf")
    drain = (retries + 1) * timeout * len(steps) + 0.5
    drain_deadline = None
    next_due = t0
    next_progress = t0 + 1.0
    last_answer = t0
    starting = True
    progress = opts.progress
    last_report = (t0, 0)

    while True:
        now = clock()
        no_ids = False  # every Identifier of every socket is in use: wait for answers, don't spin
        while pending_flows and outstanding < opts.window * 4:
            flow = pending_flows[0]
            if not send(flow):
                break
            pending_flows.popleft()
        if starting:
            if now >= end_time or seq >= limit:
                starting = False
                drain_deadline = now + drain
            elif flows_per_s:
                if next_due < now - 1.0:
                    next_due = now - 1.0  # don't burst more than a second's worth after a stall
                while next_due <= now and seq < limit:
                    if outstanding >= opts.window:
                        counters["window_full"] += 1
                        break
                    if not start_flow():
                        no_ids = True
                        break
                    next_due += interval
            else:
                while outstanding < opts.window and seq < limit:
                    if not start_flow():
                        no_ids = True
                        break
        if not starting:
            if outstanding == 0 and not pending_flows:
                break
            if now > drain_deadline:
                break
        # timeouts: retransmit the same bytes (servers answer duplicates from their cache)
        while timeouts and timeouts[0][0] <= now:
            _, req, tries = timeouts.popleft()
            if req.pool.slots[req.sock][req.ident] is not req or req.tries != tries:
                continue
            st = stats[req.kind]
            st.timeouts += 1
            if req.tries < retries:
                req.tries += 1
                st.retransmits += 1
                try:
                    req.pool.socks[req.sock].send(req.packet)
                except OSError:
                    counters["send_errors"] += 1
                timeouts.append((now + timeout, req, req.tries))
            else:
                st.lost += 1
                release(req)
                calls["failed"] += 1
        wait = 0.05
        if timeouts:
            wait = min(wait, timeouts[0][0] - now)
        if starting and not no_ids and flows_per_s and outstanding < opts.window:
            wait = min(wait, next_due - now)
        if starting and not no_ids and not flows_per_s and outstanding < opts.window:
            wait = 0
        wait = min(wait, next_progress - now)
        for key, _ in sel.select(max(wait, 0)):
            pool, idx = key.data
            sock = key.fileobj
            slots = pool.slots[idx]
            while True:
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    break
                except ConnectionRefusedError:
                    counters["refused"] += 1
                    continue
                t = clock()
                if len(data) < 20:
                    counters["stray_replies"] += 1
                    continue
                req = slots[data[1]]
                if req is None or not response_authenticator_ok(data, req.authenticator, secret):
                    counters["stray_replies"] += 1
                    continue
                st = stats[req.kind]
                code = data[0]
                st.responses += 1
                st.latencies.append(t - req.first_sent)
                release(req)
                last_answer = t
                if code == ACCESS_ACCEPT:
                    st.accepts += 1
                    advance(req.flow)
                elif code == ACCESS_REJECT:
                    st.rejects += 1
                    calls["rejected"] += 1
                elif code == ACCOUNTING_RESPONSE:
                    st.acct_ok += 1
                    advance(req.flow)
                else:
                    counters["stray_replies"] += 1
        now = clock()
        if now >= next_progress:
            next_progress += 1.0
            if progress is not None:
                answered = sum(s.responses for s in stats.values())
                dt = now - last_report[0]
                rps = (answered - last_report[1]) / dt if dt > 0 else 0.0
                last_report = (now, answered)
                lost = sum(s.lost for s in stats.values())
                retr = sum(s.retransmits for s in stats.values())
                cpu = (_cpu() - cpu0) / (now - t0) * 100
                progress.write(
                    f"{opts.label}[bench {opts.mode}] {now - t0:5.1f}s answered {answered} ({rps:,.0f}/s) "
                    f"flows {seq} outstanding {outstanding} retransmits {retr} lost {lost} cpu {cpu:.0f}%\n")
                progress.flush()

    # whatever is still outstanding after the drain deadline is lost
    for pool in pools.values():
        for slots in pool.slots:
            for req in slots:
                if req is not None:
                    stats[req.kind].lost += 1
                    calls["failed"] += 1
    calls["failed"] += len(pending_flows)
    wall = clock() - t0
    cpu = _cpu() - cpu0
    user1, sys1 = _cpu_split()
    for pool in pools.values():
        pool.close()
    sel.close()
    return {
        "stats": {k: v.dump() for k, v in stats.items()},
        "calls": calls,
        "counters": counters,
        "wall": wall,
        "active": max(last_answer - t0, 1e-9),
        "cpu": cpu,
        "cpu_user": user1 - user0,
        "cpu_sys": sys1 - sys0,
    }


def _child(opts: BenchOptions, conn) -> None:
    try:
        conn.send(run_once(opts))
    except BaseException as exc:  # report, never hang the parent
        conn.send({"error": f"{exc.__class__.__name__}: {exc}"})
    finally:
        conn.close()


def run_bench(opts: BenchOptions, procs: int = 1) -> dict:
    """Run the benchmark in `procs` processes (each its own sockets and share of the load)."""
    if procs <= 1:
        return summarize(opts, [run_once(opts)])
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    children = []
    for i in range(procs):
        part = dataclasses.replace(
            opts,
            window=max(1, opts.window // procs + (1 if i < opts.window % procs else 0)),
            rate=opts.rate / procs if opts.rate else None,
            count=(opts.count // procs + (1 if i < opts.count % procs else 0)) if opts.count is not None else None,
            progress=opts.progress if i == 0 else None,
            label=f"[p{i}]" if opts.progress else "",
        )
        parent_end, child_end = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_child, args=(part, child_end), daemon=True)
        p.start()
        child_end.close()
        children.append((p, parent_end))
    raws = []
    for p, conn in children:
        try:
            raw = conn.recv()
        except EOFError:
            raw = {"error": "worker exited without a result"}
        p.join()
        if "error" in raw:
            raise RuntimeError(f"bench worker failed: {raw['error']}")
        raws.append(raw)
    return summarize(opts, raws, procs=procs)


def summarize(opts: BenchOptions, raws: list[dict], procs: int = 1) -> dict:
    stats = {k: KindStats() for k in KINDS}
    calls = collections.Counter()
    counters = collections.Counter()
    for raw in raws:
        for k, d in raw["stats"].items():
            stats[k].merge(KindStats.load(d))
        calls.update(raw["calls"])
        counters.update(raw["counters"])
    wall = max(r["wall"] for r in raws)
    active = max(r["active"] for r in raws)
    cpu = sum(r["cpu"] for r in raws)
    cpu_user = sum(r.get("cpu_user", 0.0) for r in raws)
    cpu_sys = sum(r.get("cpu_sys", 0.0) for r in raws)
    total = KindStats()
    acct = KindStats()
    for k, st in stats.items():
        total.merge(st)
        if k != "auth":
            acct.merge(st)
    kinds_used = {k for k, _ in opts.steps()}
    result = {
        "mode": opts.mode,
        "server": opts.server,
        "auth_port": opts.auth_port if "auth" in kinds_used else None,
        "acct_port": opts.acct_port if kinds_used - {"auth"} else None,
        "window": opts.window,
        "rate": opts.rate,
        "legs": opts.legs if opts.mode != "auth" else None,
        "accounts": len(opts.accounts),
        "elapsed_s": round(active, 3),
        "requests": {
            "sent": total.sent, "responses": total.responses,
            "per_second": round(total.responses / active, 1),
            "timeouts": total.timeouts, "retransmits": total.retransmits, "lost": total.lost,
        },
        "by_kind": {k: stats[k].to_dict() for k in KINDS if k in kinds_used},
        "stray_replies": counters["stray_replies"],
        "icmp_refused": counters["refused"],
        "send_errors": counters["send_errors"],
        # with --rate: loop passes where a due flow waited because the window was full
        "window_full_stalls": counters["window_full"],
        "generator": {
            "procs": procs, "sockets_per_port": opts.sockets,
            "cpu_s": round(cpu, 3), "cpu_pct_of_wall": round(cpu / wall * 100, 1) if wall else None,
            # system time includes the kernel's loopback delivery done inside send()
            "cpu_user_s": round(cpu_user, 3), "cpu_sys_s": round(cpu_sys, 3),
        },
    }
    if opts.mode != "auth":
        result["acct"] = acct.to_dict()
        result["acct"]["per_second"] = round(acct.responses / active, 1)
    if opts.mode == "auth":
        result["auth_per_second"] = round(stats["auth"].responses / active, 1)
    else:
        label = "calls" if opts.mode == "calls" else "sessions"
        result[label] = dict(calls)
        result[label]["per_second"] = round(calls["completed"] / active, 1)
    return result
