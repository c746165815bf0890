#!/usr/bin/env python3
"""The chaos suite: what a buggy switch, a flooding switch, a slow or dead store and kill -9 do to
radiusd, as figures. One command, seeded, bounded in time and count, loopback only.

    python3 benchmarks/chaos.py                 # the full run (minutes): figures for issue 11
    python3 benchmarks/chaos.py --quick         # everything small, under ~2 minutes
    python3 benchmarks/chaos.py --quick --only fuzz,kill

Starts its own `python3 -m radiusd serve` (127.0.0.1 only) on a PostgreSQL database it creates
and drops (admin URL: --pg-admin-url, $BENCH_PG_URL or $RADIUSD_TEST_PG_URL), loaded with
schema/seeds/demo.sql (NAS 127.0.0.1 and 127.0.0.2, secret testing123). Every scenario prints
one row of a Markdown table; all figures go to benchmarks/results/chaos-<timestamp>.json.
Targets are printed next to the figures ("met" / "target not met"); they never stop the run.
The exit status is 1 only when something a user would notice happened: the server died, or an
acknowledged accounting record is missing or stored twice.

Scenarios (--only a,b,...): fuzz, flood, stall, outage, kill. See benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import collections
import datetime as dt
import hashlib
import hmac
import json
import os
import random
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from benchmarks.procs import children, rss  # noqa: E402
from radiusd.bench.engine import BenchOptions, run_bench  # noqa: E402
from radiusd.bench.population import DEMO_IP, DEMO_LOGIN  # noqa: E402
from radiusd.bench.wire import PacketFactory  # noqa: E402
from radiusd.radius.codec import attribute, cisco_pair, integer, response_authenticator_ok  # noqa: E402

SECRET = b"testing123"          # the demo seed's NAS secret
PROBE_NAS, FLOOD_NAS = "127.0.0.1", "127.0.0.2"
SCENARIOS = ("fuzz", "flood", "stall", "outage", "kill")
LOAD_TEST_CLIENT = 5            # demo seed: client "Load Test" (loadtest-sip, loadtest-gw)
ZERO16 = bytes(16)


def say(msg: str) -> None:
    print(f"[chaos] {msg}", file=sys.stderr, flush=True)


# --- the store ---------------------------------------------------------------------------------

def libpq(url: str) -> str:
    return "postgresql://" + url.split("://", 1)[1]


def sqlalchemy_url(url: str) -> str:
    return "postgresql+psycopg2://" + url.split("://", 1)[1]


def with_db(url: str, name: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(sqlalchemy_url(url)).set(database=name).render_as_string(hide_password=False)


def admin_exec(admin: str, *statements: str) -> None:
    import psycopg2

    conn = psycopg2.connect(libpq(admin))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for sql in statements:
                cur.execute(sql)
    finally:
        conn.close()


class Store:
    """A database of our own on the shared cluster: created, seeded, dropped."""

    def __init__(self, admin: str, name: str):
        self.admin, self.name = admin, name
        admin_exec(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"')
        self.url = with_db(admin, name)
        from radiusd.admin.seeds import load_seed
        from radiusd.db import open_store

        engine, sessions = open_store(self.url)
        try:
            load_seed(sessions, ROOT / "schema" / "seeds" / "demo.sql", actor="chaos")
        finally:
            engine.dispose()

    def connect(self):
        import psycopg2

        conn = psycopg2.connect(libpq(self.url))
        conn.autocommit = True
        return conn

    def query(self, sql: str, args=()) -> list[tuple]:
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return cur.fetchall()
        finally:
            conn.close()

    def session_ids(self, prefix: str) -> collections.Counter:
        """acct_session_id -> CDR count, for the sessions of one scenario."""
        rows = self.query("SELECT acct_session_id, count(*) FROM cdrs WHERE acct_session_id LIKE %s "
                          "GROUP BY acct_session_id", (prefix + "%",))
        return collections.Counter({sid: n for sid, n in rows})

    def drop(self) -> None:
        admin_exec(self.admin, f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


# --- the server ----------------------------------------------------------------------------------

def free_port(kind=socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    """RSS (MB) of a process and its children (the supervisor and its workers), from /proc."""
    return round(sum(rss(p) or 0.0 for p in [pid, *children(pid)]), 1)


def rss_each(pid: int) -> dict[int, float]:
    """RSS (MB) per process: the supervisor, then its workers (for the JSON record)."""
    return {p: mb for p in [pid, *children(pid)] if (mb := rss(p)) is not None}


class Server:
    """`python3 -m radiusd serve` on 127.0.0.1, fixed ports and spool across restarts."""

    def __init__(self, url: str, workdir: Path, workers: int, max_call_duration: int, settings: list[str] = ()):
        self.url, self.workdir, self.workers = url, workdir, workers
        self.auth_port, self.acct_port = free_port(), free_port()
        self.metrics_port = free_port(socket.SOCK_STREAM)
        self.config = workdir / "radiusd.toml"
        sections = {"spool": {"path": f'"{workdir / "spool"}"'}, "log": {"level": '"warning"'},
                    "limits": {"max_call_duration": str(max_call_duration)}}
        for item in settings:   # --set section.key=value: a TOML value in that section, the last one wins
            name, value = item.split("=", 1)
            section, key = name.strip().split(".", 1)
            sections.setdefault(section, {})[key] = value.strip()
        self.config.write_text("".join(f"[{section}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items())
                                       for section, keys in sections.items()))
        self.proc = None
        self.log = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        self.log = open(self.workdir / f"server-{self.starts}.log", "w")
        env = dict(os.environ, DATABASE_URL=self.url, RADIUSD_CONFIG=str(self.config))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "radiusd", "serve", "--bind", "127.0.0.1", "--auth-port", str(self.auth_port),
             "--acct-port", str(self.acct_port), "--metrics-port", str(self.metrics_port),
             "--workers", str(self.workers)],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.workdir)
        self.wait_answering(60)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def answer_seconds(self, timeout: float = 1.0) -> float | None:
        """Seconds until one valid Access-Request (from 127.0.0.1) is answered, or None."""
        factory = PacketFactory(SECRET)
        packet, auth = factory.access_request(random.randrange(256), DEMO_LOGIN, random.getrandbits(30),
                                              factory.conf_id(random.getrandbits(32), 1))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((PROBE_NAS, 0))
            s.settimeout(timeout)
            t0 = time.monotonic()
            s.sendto(packet, ("127.0.0.1", self.auth_port))
            while True:
                try:
                    reply = s.recv(4096)
                except (socket.timeout, ConnectionRefusedError):
                    return None
                if response_authenticator_ok(reply, auth, SECRET):
                    return time.monotonic() - t0
                s.settimeout(max(0.01, timeout - (time.monotonic() - t0)))

    def wait_answering(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log.name}")
            if self.answer_seconds(0.5) is not None:
                return
        raise RuntimeError(f"server did not answer within {timeout:.0f} s; see {self.log.name}")

    def health(self) -> tuple[int | None, dict]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/health", timeout=2) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as err:
            try:
                return err.code, json.loads(err.read())
            except ValueError:
                return err.code, {}
        except (OSError, ValueError):
            return None, {}

    def metric(self, name: str) -> float:
        """Sum of every line of a metric (all labels)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return 0.0
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and line[len(name):len(name) + 1] in (" ", "{"):
                total += float(line.split()[-1])
        return total

    def rss(self) -> float:
        return rss_mb(self.proc.pid) if self.alive() else 0.0

    def kill9(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self.log.close()

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()

    def wait_spool_empty(self, timeout: float) -> float | None:
        """Seconds until /health reports the store up and no spooled record left, or None."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            code, body = self.health()
            if code == 200 and body.get("spool_depth", 0) == 0 and body.get("store") == "up":
                return time.monotonic() - t0
            time.sleep(0.2)
        return None


# --- requests --------------------------------------------------------------------------------------

def sign_accounting(code: int, ident: int, attrs: bytes, length: int | None = None) -> bytes:
    """An Accounting-Request with the RFC 2866 authenticator over the packet as long as `length`
    (the Length field, which may lie) says."""
    length = 20 + len(attrs) if length is None else length
    head = struct.pack("!BBH", code, ident, length & 0xFFFF)
    body = attrs[:max(0, length - 20)]
    auth = hashlib.md5(head + ZERO16 + body + SECRET).digest()
    return head + auth + attrs


def sign_access(ident: int, attrs: bytes, length: int | None = None, authenticator: bytes | None = None) -> bytes:
    """An Access-Request whose Message-Authenticator (first attribute) is right for the bytes sent."""
    authenticator = authenticator or random.randbytes(16)
    length = 38 + len(attrs) if length is None else length
    head = struct.pack("!BBH", 1, ident, length & 0xFFFF) + authenticator
    mac = hmac.new(SECRET, head + b"\x50\x12" + ZERO16 + attrs, hashlib.md5).digest()
    return head + b"\x50\x12" + mac + attrs


def split_attrs(block: bytes) -> list[bytes]:
    out, i = [], 0
    while i + 2 <= len(block):
        n = block[i + 1]
        out.append(block[i:i + n])
        i += n
    return out


NASTY_TIMES = ["1.7e309", "00:00:00.000 UTC Mon Jan 01 0001", "23:59:59.999 UTC Fri Dec 31 6026",
               "", "garbage", "99:99:99.999 UTC Xyz Abc 99 99999", "-1", "\x00\x01\x02", "NaN", "inf"]
NASTY_TEXT = ["a\x00b", "tab\there", "nl\nx", "\x1b[31mred", "\u202eevil", "x" * 253, "\x7f", "'; DROP TABLE cdrs; --"]
NASTY_INTS = [0, 1, 2**31 - 1, 2**31, 2**32 - 1, 86400 * 365 * 100]


class Fuzzer:
    """Mutations of valid Access- and Accounting-Requests; `random.Random(seed)` decides them all."""

    def __init__(self, seed: int, tag: str):
        self.rng = random.Random(seed)
        self.factory = PacketFactory(SECRET)
        self.factory._rand = random.Random(seed + 1)
        self.tag = tag
        self.n = 0

    def _valid(self) -> tuple[bool, int, bytes]:
        """(accounting, code, attributes) of a valid request, Message-Authenticator stripped."""
        rng = self.rng
        self.n += 1
        acc = DEMO_LOGIN if rng.random() < 0.6 else DEMO_IP
        conf = self.factory.conf_id(0xC4A05, self.n)
        if rng.random() < 0.4:
            packet, _ = self.factory.access_request(0, acc, self.n, conf)
            return False, 1, packet[38:]
        status = rng.choice((1, 2, 2, 3))
        now = time.time()
        packet, _ = self.factory.accounting_request(0, acc, self.n, conf, f"{self.tag}-{self.n:x}", min(status, 2),
                                                    "answer", rng.randint(1, 3600), now)
        attrs = packet[20:]
        if status == 3:   # Interim-Update
            attrs = attrs.replace(integer(40, 2), integer(40, 3))
        return True, 4, attrs

    def _mutate_attrs(self, attrs: bytes, accounting: bool) -> tuple[bytes, int | None]:
        """Attribute-level mutations, to be signed: (attributes, Length field or None)."""
        rng = self.rng
        parts = split_attrs(attrs)
        kind = rng.randrange(10)
        length = None
        if kind == 0 and parts:                     # a duplicated attribute
            i = rng.randrange(len(parts))
            parts.insert(rng.randrange(len(parts) + 1), parts[i])
        elif kind == 1 and parts:                   # an attribute whose length overruns the packet
            i = rng.randrange(len(parts))
            p = parts[i]
            parts[i] = p[:1] + bytes([min(255, p[1] + rng.randint(1, 200))]) + p[2:]
            parts = parts[:i + 1]
        elif kind == 2 and parts:                   # attribute length 0 or 1
            i = rng.randrange(len(parts))
            parts[i] = parts[i][:1] + bytes([rng.randint(0, 1)]) + parts[i][2:]
        elif kind == 3:                             # huge packet
            filler = cisco_pair(1, "h323-ivr-out", "Z" * 230)
            parts += [filler] * rng.randint(15, 30)
        elif kind == 4:                             # Length field lies (within what we send or beyond)
            length = 20 + len(attrs) + rng.choice((-7, -1, 1, 16, 300))
        elif kind == 5 and accounting:              # nasty times in the Cisco VSAs
            name = rng.choice(("h323-setup-time", "h323-connect-time", "h323-disconnect-time"))
            number = {"h323-setup-time": 25, "h323-connect-time": 28, "h323-disconnect-time": 29}[name]
            parts = [p for p in parts if not (p[:1] == b"\x1a" and f"{name}=".encode() in p)]
            parts.append(cisco_pair(number, name, rng.choice(NASTY_TIMES)))
        elif kind == 6 and accounting:              # nasty integers: session time, event time, delay
            number = rng.choice((46, 55, 41))
            parts = [p for p in parts if p[0] != number]
            parts.append(struct.pack("!BBL", number, 6, rng.choice(NASTY_INTS) & 0xFFFFFFFF))
        elif kind == 7:                             # control characters and NULs in identifiers
            number = rng.choice((1, 30, 31, 44, 32))
            parts = [p for p in parts if p[0] != number]
            parts.append(attribute(number, rng.choice(NASTY_TEXT).encode()[:253] or b"x"))
        elif kind == 8 and parts:                   # random bytes inside one attribute's value
            i = rng.randrange(len(parts))
            p = parts[i]
            parts[i] = p[:2] + rng.randbytes(max(0, len(p) - 2))
        else:                                       # random attributes appended
            for _ in range(rng.randint(1, 5)):
                n = rng.randint(0, 40)
                parts.append(bytes([rng.randrange(256), n + 2]) + rng.randbytes(n))
        return b"".join(parts), length

    def _mutate_bytes(self, packet: bytes) -> bytes:
        """Byte-level mutations, not re-signed."""
        rng = self.rng
        kind = rng.randrange(5)
        if kind == 0:                               # bit flips
            b = bytearray(packet)
            for _ in range(rng.randint(1, 8)):
                i = rng.randrange(len(b))
                b[i] ^= 1 << rng.randrange(8)
            return bytes(b)
        if kind == 1:                               # truncation
            return packet[:rng.randrange(len(packet))]
        if kind == 2:                               # Length field lies
            return packet[:2] + struct.pack("!H", rng.randrange(65536)) + packet[4:]
        if kind == 3:                               # random bytes
            return rng.randbytes(rng.choice((1, 19, 20, 21, 64, 400, 4096, 5000)))
        return packet + rng.randbytes(rng.randint(1, 5000))   # trailing junk / oversize

    def next(self) -> tuple[bool, bytes]:
        """(accounting port?, datagram)."""
        rng = self.rng
        accounting, code, attrs = self._valid()
        ident = rng.randrange(256)
        signed = rng.random() < 0.6
        if signed:
            attrs, length = self._mutate_attrs(attrs, accounting)
            if accounting:
                return True, sign_accounting(code, ident, attrs, length)
            return False, sign_access(ident, attrs, None if length is None else length + 18)
        packet = sign_accounting(code, ident, attrs) if accounting else sign_access(ident, attrs)
        return accounting, self._mutate_bytes(packet)[:65000]


def udp_socket(source: str, nonblocking: bool = True) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        try:
            s.setsockopt(socket.SOL_SOCKET, opt, 4 * 1024 * 1024)
        except OSError:
            pass
    s.bind((source, 0))
    s.setblocking(not nonblocking)
    return s


def drain(sockets) -> None:
    for s in sockets:
        while True:
            try:
                s.recv(65536)
            except (BlockingIOError, ConnectionRefusedError):
                break
            except OSError:
                break


# --- an exact accounting sender (which Stops were acknowledged) ------------------------------------

class StopSender:
    """Accounting Stops (no Start: each one CDR) from 127.0.0.1 at a rate, retransmitted until
    answered or out of tries; remembers exactly which session ids were acknowledged."""

    def __init__(self, port: int, prefix: str, rate: float, timeout: float = 1.0, retries: int = 30):
        self.port, self.prefix, self.rate = port, prefix, rate
        self.timeout, self.retries = timeout, retries
        self.acked: set[str] = set()
        self.sent = 0
        self.lost: set[str] = set()
        self.latencies: list[float] = []
        self.stop_sending = threading.Event()
        self.factory = PacketFactory(SECRET)

    def run(self, duration: float, count: int | None = None) -> None:
        socks = [udp_socket(PROBE_NAS) for _ in range(4)]
        sel = selectors.DefaultSelector()
        free = [collections.deque(range(256)) for _ in socks]
        slots = [[None] * 256 for _ in socks]
        for i, s in enumerate(socks):
            sel.register(s, selectors.EVENT_READ, i)
        timeouts = collections.deque()
        t0 = time.monotonic()
        next_due = t0
        seq = 0
        outstanding = 0
        end = t0 + duration
        hard_end = end + self.timeout * (self.retries + 1) + 5
        interval = 1.0 / self.rate
        while True:
            now = time.monotonic()
            sending = now < end and not self.stop_sending.is_set() and (count is None or seq < count)
            if not sending and outstanding == 0 or now > hard_end:
                break
            while sending and next_due <= now:
                idx = seq % len(socks)
                if not free[idx]:
                    break
                ident = free[idx].popleft()
                sid = f"{self.prefix}-{seq:x}"
                packet, auth = self.factory.accounting_request(
                    ident, DEMO_LOGIN, seq, self.factory.conf_id(0xC4A05, zlib.crc32(self.prefix.encode()) ^ seq),
                    sid, 2, "answer", 1 + seq % 60, time.time())
                slots[idx][ident] = [sid, packet, auth, now, 0]
                try:
                    socks[idx].sendto(packet, ("127.0.0.1", self.port))
                except OSError:
                    pass
                timeouts.append((now + self.timeout, idx, ident, 0))
                outstanding += 1
                self.sent += 1
                seq += 1
                next_due += interval
                if count is not None and seq >= count:
                    break
            while timeouts and timeouts[0][0] <= now:
                _, idx, ident, tries = timeouts.popleft()
                req = slots[idx][ident]
                if req is None or req[4] != tries:
                    continue
                if tries < self.retries:
                    req[4] += 1
                    try:
                        socks[idx].sendto(req[1], ("127.0.0.1", self.port))
                    except OSError:
                        pass
                    timeouts.append((now + self.timeout, idx, ident, req[4]))
                else:
                    self.lost.add(req[0])
                    slots[idx][ident] = None
                    free[idx].append(ident)
                    outstanding -= 1
            wait = 0.02
            if sending:
                wait = min(wait, max(0.0, next_due - now))
            for key, _ in sel.select(wait):
                idx = key.data
                while True:
                    try:
                        data = socks[idx].recv(4096)
                    except (BlockingIOError, ConnectionRefusedError, OSError):
                        break
                    if len(data) < 20:
                        continue
                    req = slots[idx][data[1]]
                    if req is None or data[0] != 5 or not response_authenticator_ok(data, req[2], SECRET):
                        continue
                    self.acked.add(req[0])
                    self.latencies.append(time.monotonic() - req[3])
                    slots[idx][data[1]] = None
                    free[idx].append(data[1])
                    outstanding -= 1
        for row in slots:
            for req in row:
                if req is not None:
                    self.lost.add(req[0])
        for s in socks:
            s.close()

    def check(self, store: Store, wait: float = 60.0) -> dict:
        """Acknowledged vs stored, once every acknowledged Stop is in the store or `wait` s have
        passed (spooled records land when the replay gets to them; /health's spool depth is up
        to a report interval old, so the store itself is asked)."""
        t0 = time.monotonic()
        while True:
            stored = store.session_ids(self.prefix + "-")
            missing = [sid for sid in self.acked if stored.get(sid, 0) == 0]
            if not missing or time.monotonic() - t0 > wait:
                break
            time.sleep(0.5)
        doubled = [sid for sid, n in stored.items() if n > 1]
        return {"sent": self.sent, "acknowledged": len(self.acked), "unanswered": len(self.lost),
                "stored": len(stored), "acknowledged_missing": len(missing),
                "all_stored_after_s": None if missing else round(time.monotonic() - t0, 1),
                "stored_twice": len(doubled), "missing_examples": sorted(missing)[:5]}


# --- scenarios -----------------------------------------------------------------------------------

def cdr_violations(store: Store, max_call_duration: int, slack: int) -> dict:
    (row,) = store.query(
        r"""SELECT count(*),
                   count(*) FILTER (WHERE setup_time < '2000-01-01' OR connect_time < '2000-01-01'
                                     OR disconnect_time < '2000-01-01'),
                   count(*) FILTER (WHERE setup_time > now() + interval '1 day'
                                     OR connect_time > now() + interval '1 day'
                                     OR disconnect_time > now() + interval '1 day'),
                   count(*) FILTER (WHERE billed_seconds > %s OR billed_seconds < 0 OR duration < 0),
                   count(*) FILTER (WHERE duration > %s),
                   count(*) FILTER (WHERE connect_time > disconnect_time),
                   count(*) FILTER (WHERE concat(leg_key, call_id, acct_session_id, caller, called, tech_prefix,
                                                 remote_address, disconnect_cause) ~ '[[:cntrl:]]')
            FROM cdrs""", (max_call_duration + slack, max_call_duration + slack))
    total, early, late, long_, reported_long, backwards, control = row
    # billed_seconds is what the CDR charges; duration is what the switch reported (kept, flagged)
    return {"cdrs": total, "time_before_2000": early, "time_after_now_plus_1_day": late,
            "billed_over_max": long_, "reported_duration_over_max": reported_long,
            "connect_after_disconnect": backwards,
            "control_characters": control, "violations": early + late + long_ + backwards + control}


def scenario_fuzz(srv: Server, store: Store, args) -> dict:
    fuzzer = Fuzzer(args.seed, "fz")
    sources = [PROBE_NAS, PROBE_NAS, FLOOD_NAS]
    socks = [udp_socket(src) for src in sources]
    rss0 = srv.rss()
    each0 = rss_each(srv.proc.pid)
    t0 = time.monotonic()
    sent = send_errors = 0
    samples: list[dict] = []      # RSS per process over the run: growth that levels off is bounded
    deadline = t0 + args.fuzz_seconds
    for i in range(args.fuzz):
        accounting, data = fuzzer.next()
        s = socks[i % len(socks)]
        try:
            s.sendto(data, ("127.0.0.1", srv.acct_port if accounting else srv.auth_port))
            sent += 1
        except BlockingIOError:
            send_errors += 1
        except OSError:
            send_errors += 1
        if i & 1023 == 0:
            drain(socks)
            if i and i % (25 * 1024) == 0:
                # what memory follows: the bounded queues' high-water marks, or the packet count
                samples.append({"packets": i, "seconds": round(time.monotonic() - t0, 1),
                                "rss_mb": rss_each(srv.proc.pid),
                                "accounting_queue": srv.metric("radiusd_accounting_queue_depth"),
                                "reservation_queue": srv.metric("radiusd_reservation_queue_depth")})
            if i and i % (100 * 1024) == 0:
                each = rss_each(srv.proc.pid)
                say(f"fuzz: {i:,} sent, server {'alive' if srv.alive() else 'DEAD'}, RSS {srv.rss()} MB "
                    f"({' + '.join(f'{mb:.0f}' for mb in each.values())})")
            if time.monotonic() > deadline:
                say(f"fuzz: stopped at the time bound ({args.fuzz_seconds:.0f} s) after {i:,} packets")
                break
    elapsed = time.monotonic() - t0
    ended = time.monotonic()
    answer = srv.answer_seconds(1.0)          # the first valid request after the last fuzzed one
    recovered = answer
    while recovered is None and srv.alive() and time.monotonic() - ended < 30:
        if srv.answer_seconds(0.5) is not None:
            recovered = time.monotonic() - ended
    alive = srv.alive()
    drain(socks)
    for s in socks:
        s.close()
    rss1 = srv.rss()
    # let the writer finish what it acknowledged before judging the store
    srv.wait_spool_empty(30)
    bounds = cdr_violations(store, args.max_call_duration, args.duration_slack)
    return {"packets": sent, "send_errors": send_errors, "seconds": round(elapsed, 1),
            "packets_per_s": round(sent / elapsed) if elapsed else None, "server_alive": alive,
            "rss_before_mb": rss0, "rss_after_mb": rss1, "rss_growth_mb": round(rss1 - rss0, 1),
            "rss_per_process_before_mb": each0, "rss_per_process_after_mb": rss_each(srv.proc.pid),
            "rss_samples": samples,
            "answer_after_s": None if answer is None else round(answer, 3),
            "answering_again_after_s": None if recovered is None else round(recovered, 2),
            "malformed_dropped": srv.metric("radiusd_packets_dropped_total"), **bounds}


def _flooder(port: int, seconds: float, seed: int, rate: float, out) -> None:
    """Valid Access-Requests from 127.0.0.2 at `rate` per second (0: as fast as one process can
    make them), with fresh authenticators so the duplicate cache does not absorb them."""
    factory = PacketFactory(SECRET, nas_address=FLOOD_NAS)
    factory._rand = random.Random(seed)
    socks = [udp_socket(FLOOD_NAS) for _ in range(4)]
    sent = 0
    start = time.monotonic()
    end = start + seconds
    seq = seed << 24
    conf = factory.conf_id(seed, 0)
    while True:
        for _ in range(256):
            seq += 1
            packet, _ = factory.access_request(seq & 0xFF, DEMO_LOGIN, seq, conf)
            try:
                socks[seq & 3].sendto(packet, ("127.0.0.1", port))
                sent += 1
            except OSError:
                pass
        drain(socks)
        now = time.monotonic()
        if now >= end:
            break
        if rate:   # ahead of the schedule: wait for it
            time.sleep(max(0.0, start + sent / rate - now))
    for s in socks:
        s.close()
    out.send((sent, time.monotonic() - start))
    out.close()


def scenario_flood(srv: Server, store: Store, args) -> dict:
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    procs = []
    for i in range(args.flood_procs):
        parent, child = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_flooder, args=(srv.auth_port, args.flood_seconds, args.seed + i,
                                                  args.flood_rate / args.flood_procs, child), daemon=True)
        p.start()
        child.close()
        procs.append((p, parent))
    time.sleep(min(1.0, args.flood_seconds / 4))   # the flood is on before the probe starts
    probe_seconds = max(1.0, args.flood_seconds - 2 * min(1.0, args.flood_seconds / 4))
    probe = run_bench(BenchOptions(mode="auth", accounts=[DEMO_LOGIN, DEMO_IP], secret=SECRET,
                                   auth_port=srv.auth_port, acct_port=srv.acct_port, rate=args.probe_rate,
                                   window=4096, duration=probe_seconds, timeout=1.0, retries=0, sockets=2))
    ceiling = srv.metric("radiusd_fairness_ceiling")   # still flooding: the ceiling the workers hold
    flooded, flooding = 0, 1e-9   # packets, and the longest time one flooder sent them in
    for p, conn in procs:
        try:
            sent, seconds = conn.recv() if conn.poll(args.flood_seconds + 30) else (0, 0.0)
            flooded, flooding = flooded + sent, max(flooding, seconds)
        except EOFError:
            pass
        p.join(10)
    auth = probe["by_kind"]["auth"]
    return {"flood_packets": flooded, "flood_rate_per_s": round(flooded / flooding),
            "probe_sent": auth["sent"], "probe_answered": auth["responses"],
            "probe_answered_pct": round(100 * auth["responses"] / auth["sent"], 2) if auth["sent"] else None,
            "probe_p50_ms": auth["latency_ms"]["p50"], "probe_p99_ms": auth["latency_ms"]["p99"],
            "server_alive": srv.alive(), "overloaded": srv.metric("radiusd_overloaded_total"),
            "fairness_ceiling_per_worker": ceiling, "over_budget": srv.metric("radiusd_nas_over_budget_total")}


def _stall(srv: Server, store: Store, args, *, what: str, seconds: float, lock_sql: str) -> dict:
    """Accounting at a target rate through radiusd.bench while a lock stalls the store."""
    warm = 2.0
    result = {}
    # a spool still replaying from the scenario before would make /health 503 before any lock
    settled = srv.wait_spool_empty(60)
    rss = [srv.rss()]
    before = store.query("SELECT count(*) FROM cdrs")[0][0]

    def load():
        result["bench"] = run_bench(BenchOptions(
            mode="acct", accounts=[DEMO_LOGIN], secret=SECRET, auth_port=srv.auth_port, acct_port=srv.acct_port,
            rate=args.stall_rate, window=8192, duration=warm + seconds + 3.0, timeout=1.0, retries=2, sockets=8))

    t = threading.Thread(target=load, daemon=True)
    t.start()
    time.sleep(warm)
    conn = store.connect()
    conn.autocommit = False
    cur = conn.cursor()
    health_at_lock = srv.health()[0]
    cur.execute(lock_sql)
    locked_at = time.monotonic()
    # counted on the locking connection: under LOCK TABLE any other reader of cdrs would wait
    cur.execute("SELECT count(*) FROM cdrs")
    at_lock = cur.fetchone()[0]
    degraded_after = None
    spool_peak = 0
    while time.monotonic() - locked_at < seconds:
        code, body = srv.health()
        if degraded_after is None and code == 503:
            degraded_after = round(time.monotonic() - locked_at, 1)
        spool_peak = max(spool_peak, body.get("spool_depth") or 0)
        rss.append(srv.rss())
        time.sleep(0.25)
    # whether the lock really held the writer up (CDRs a lock-free path could still write)
    cur.execute("SELECT count(*) FROM cdrs")
    during = cur.fetchone()[0] - at_lock
    conn.rollback()
    conn.close()
    t.join(seconds + 120)
    replay = srv.wait_spool_empty(120)
    bench = result.get("bench") or {}
    acct = bench.get("acct", {})
    stops = (bench.get("by_kind") or {}).get("acct-stop", {})
    acked_stops = stops.get("acct_responses", 0)
    waited = time.monotonic()
    while True:
        stored = store.query("SELECT count(*) FROM cdrs")[0][0] - before
        if stored >= acked_stops or time.monotonic() - waited > 60:
            break
        time.sleep(0.5)
    doubled = store.query("SELECT count(*) FROM (SELECT leg_key FROM cdrs GROUP BY leg_key "
                          "HAVING count(*) > 1) d")[0][0]
    return {"lock": what, "held_s": seconds, "target_rate": args.stall_rate,
            "achieved_rate": acct.get("per_second"), "rss_before_mb": rss[0], "rss_max_mb": max(rss),
            "rss_growth_mb": round(max(rss) - rss[0], 1),
            "latest_answer_ms": acct.get("latency_ms", {}).get("max"),
            "unanswered": acct.get("lost"), "health_503_after_s": degraded_after,
            "cdrs_written_while_locked": during, "spool_peak": spool_peak,
            "health_before_lock": health_at_lock, "settled_before_s": None if settled is None else round(settled, 1),
            "spool_drained_s": None if replay is None else round(replay, 1),
            "stops_acknowledged": acked_stops, "cdrs_stored": stored,
            # the generator counts acks, not which ones: fewer CDRs than acknowledged Stops is a loss
            "acknowledged_missing_at_least": max(0, acked_stops - stored), "stored_twice": doubled,
            "server_alive": srv.alive()}


def scenario_stall(srv: Server, store: Store, args) -> list[dict]:
    rows = [_stall(srv, store, args, what="row lock on the client (SELECT … FOR UPDATE)", seconds=args.stall_seconds,
                   lock_sql=f"SELECT * FROM clients WHERE id = {LOAD_TEST_CLIENT} FOR UPDATE")]
    srv.wait_answering(30)
    rows.append(_stall(srv, store, args, what="table lock (LOCK TABLE cdrs)", seconds=args.table_lock_seconds,
                       lock_sql="LOCK TABLE cdrs IN ACCESS EXCLUSIVE MODE"))
    return rows


def scenario_outage(srv: Server, store: Store, args) -> dict:
    sender = StopSender(srv.acct_port, f"out{args.seed:x}", args.outage_rate)
    t = threading.Thread(target=sender.run, args=(args.outage_seconds + 4.0,), daemon=True)
    t.start()
    time.sleep(2.0)
    spooled0 = srv.metric("radiusd_spool_depth")
    admin_exec(store.admin, f'ALTER DATABASE "{store.name}" ALLOW_CONNECTIONS false')
    t_down = time.monotonic()
    max_depth = 0.0
    try:
        while time.monotonic() - t_down < args.outage_seconds:
            admin_exec(store.admin, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                    f"WHERE datname = '{store.name}' AND pid <> pg_backend_pid()")
            max_depth = max(max_depth, srv.metric("radiusd_spool_depth"))
            time.sleep(0.2)
    finally:
        admin_exec(store.admin, f'ALTER DATABASE "{store.name}" ALLOW_CONNECTIONS true')
    t.join(120)
    replay = srv.wait_spool_empty(120)
    return {"down_s": args.outage_seconds, "rate": args.outage_rate, **sender.check(store),
            "spool_depth_max": max(max_depth - spooled0, 0),
            "spool_drained_s": None if replay is None else round(replay, 1),
            "server_alive": srv.alive()}


def scenario_kill(srv: Server, store: Store, args) -> dict:
    sender = StopSender(srv.acct_port, f"k9{args.seed:x}", args.kill_rate, retries=60)
    t = threading.Thread(target=sender.run, args=(args.kill_seconds,), daemon=True)
    t.start()
    third = args.kill_seconds / 3
    time.sleep(third)
    workers = children(srv.proc.pid)
    killed_worker = None
    if workers:
        killed_worker = workers[0]
        os.kill(killed_worker, signal.SIGKILL)
        say(f"kill: SIGKILL worker {killed_worker}")
    time.sleep(third)
    say("kill: SIGKILL the whole server, then start it again on the same ports and spool")
    srv.kill9()
    t_restart = time.monotonic()
    srv.start()
    restart_s = time.monotonic() - t_restart
    t.join(args.kill_seconds + 120)
    replay = srv.wait_spool_empty(120)
    return {"rate": args.kill_rate, "killed_worker": killed_worker is not None, "restart_s": round(restart_s, 1),
            **sender.check(store), "spool_drained_s": None if replay is None else round(replay, 1),
            "server_alive": srv.alive()}


# --- the table -------------------------------------------------------------------------------------

def _f(v, unit=""):
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        v = f"{v:,.1f}" if abs(v) >= 100 else f"{v:,.2f}"
    elif isinstance(v, int):
        v = f"{v:,}"
    return f"{v}{unit}"


def verdict(ok) -> str:
    return "met" if ok else "target not met"


def rows_of(res: dict) -> list[str]:
    rows = []
    s = res["scenarios"]
    if "fuzz" in s:
        f = s["fuzz"]
        if "error" in f:
            rows.append(f"| fuzz | error: {f['error']} | | |")
        else:
            ok = (f["server_alive"] and f["rss_growth_mb"] <= 50 and f["answer_after_s"] is not None
                  and f["answer_after_s"] <= 1.0 and f["violations"] == 0)
            rows.append(
                f"| fuzz | {_f(f['packets'])} packets ({_f(f['packets_per_s'])}/s): alive {_f(f['server_alive'])}, "
                f"RSS +{_f(f['rss_growth_mb'])} MB, valid request answered after {_f(f['answer_after_s'])} s "
                f"(answering again after {_f(f['answering_again_after_s'])} s), "
                f"CDR bound violations {_f(f['violations'])} of {_f(f['cdrs'])} CDRs "
                f"(before 2000 {f['time_before_2000']}, future {f['time_after_now_plus_1_day']}, "
                f"billed too long {f['billed_over_max']}, connect>disconnect {f['connect_after_disconnect']}, "
                f"control chars {f['control_characters']}) "
                f"| alive, RSS ≤ +50 MB, answer ≤ 1 s, 0 violations | {verdict(ok)} |")
    if "flood" in s:
        f = s["flood"]
        if "error" in f:
            rows.append(f"| flood | error: {f['error']} | | |")
        else:
            ok = (f["probe_answered_pct"] or 0) >= 99 and (f["probe_p99_ms"] or 1e9) <= 50
            rate_ok = f["flood_rate_per_s"] >= 40_000
            rows.append(
                f"| flood | NAS 127.0.0.2 at {_f(f['flood_rate_per_s'])} req/s; probe NAS 127.0.0.1: "
                f"{_f(f['probe_answered'])}/{_f(f['probe_sent'])} answered ({_f(f['probe_answered_pct'])} %), "
                f"p50 {_f(f['probe_p50_ms'])} ms, p99 {_f(f['probe_p99_ms'])} ms; adaptive ceiling at the end "
                f"{_f(f.get('fairness_ceiling_per_worker'))}/s per NAS per worker (0 = none) "
                f"| flood 40,000/s: probe ≥ 99 %, p99 ≤ 50 ms | {verdict(ok)}"
                f"{'' if rate_ok else ' (flood below 40,000/s on this machine)'} |")
    for f in s.get("stall", []):
        if "error" in f:
            rows.append(f"| store stall | error: {f['error']} | | |")
            continue
        ok = ((f["rss_growth_mb"] or 0) <= 50 and (f["latest_answer_ms"] or 1e9) <= 3000
              and f.get("health_before_lock") == 200
              and f["health_503_after_s"] is not None and f["health_503_after_s"] <= 5
              and f["acknowledged_missing_at_least"] == 0 and f["stored_twice"] == 0)
        rows.append(
            f"| store stall: {f['lock']} {f['held_s']:g} s | {_f(f['achieved_rate'])}/s of {_f(f['target_rate'])}/s: "
            f"RSS +{_f(f['rss_growth_mb'])} MB, latest answer {_f(f['latest_answer_ms'])} ms, "
            f"unanswered {_f(f['unanswered'])}, /health {f.get('health_before_lock')} before the lock, "
            f"503 after {_f(f['health_503_after_s'])} s, "
            f"CDRs written while locked {_f(f['cdrs_written_while_locked'])}, spool peak {_f(f['spool_peak'])}, "
            f"Stops acknowledged {_f(f['stops_acknowledged'])} / CDRs stored {_f(f['cdrs_stored'])}, "
            f"stored twice {_f(f['stored_twice'])} "
            f"| RSS ≤ +50 MB, answers ≤ 3 s, 503 ≤ 5 s, acked stored once | {verdict(ok)} |")
    for name, label in (("outage", "store outage"), ("kill", "kill -9 under load")):
        if name not in s:
            continue
        f = s[name]
        if "error" in f:
            rows.append(f"| {label} | error: {f['error']} | | |")
            continue
        ok = f["acknowledged_missing"] == 0 and f["stored_twice"] == 0 and f["server_alive"]
        extra = (f"down {f['down_s']:g} s, spool peak {_f(f['spool_depth_max'])}" if name == "outage"
                 else f"worker then server SIGKILLed, restart {_f(f['restart_s'])} s")
        rows.append(
            f"| {label} | {extra}; Stops acknowledged {_f(f['acknowledged'])} of {_f(f['sent'])}, "
            f"stored {_f(f['stored'])}, acknowledged but missing {_f(f['acknowledged_missing'])}, "
            f"stored twice {_f(f['stored_twice'])}, all acknowledged stored {_f(f['all_stored_after_s'])} s "
            f"after the load "
            f"| nothing acknowledged lost or doubled | {verdict(ok)} |")
    return rows


def markdown(res: dict) -> str:
    m = res["machine"]
    head = [f"Chaos suite{' (--quick)' if res['params']['quick'] else ''}, seed {res['params']['seed']}, "
            f"{m['nproc']} CPUs, {m['memory_gb']} GB, radiusd --workers {res['params']['workers']}, "
            f"run {res['started_at']}", "",
            "| scenario | figures | target (issue 11) | verdict |", "|---|---|---|---|"]
    return "\n".join(head + rows_of(res))


def machine() -> dict:
    mem = next((l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")), "0 0")
    return {"nproc": os.cpu_count(), "memory_gb": round(int(mem.split()[1]) / 1024 / 1024, 1),
            "python": sys.version.split()[0]}


def user_visible_failure(res: dict) -> list[str]:
    """What a user would notice: a dead server, an acknowledged record lost or doubled."""
    bad = []
    for name, f in res["scenarios"].items():
        for row in (f if isinstance(f, list) else [f]):
            if "error" in row:
                bad.append(f"{name}: {row['error']}")
            if row.get("server_alive") is False:
                bad.append(f"{name}: server died")
            if row.get("acknowledged_missing") or row.get("acknowledged_missing_at_least"):
                bad.append(f"{name}: acknowledged accounting records missing")
            if row.get("stored_twice"):
                bad.append(f"{name}: records stored twice")
    return bad


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="everything small: under ~2 minutes")
    ap.add_argument("--only", default=",".join(SCENARIOS), help=f"comma-separated subset of {','.join(SCENARIOS)}")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--fuzz", type=int, default=None, help="fuzzed packets (default 1,000,000; --quick 20,000)")
    ap.add_argument("--fuzz-seconds", type=float, default=None, help="time bound on the fuzz (default 600 s)")
    ap.add_argument("--flood-seconds", type=float, default=None, help="default 10 s (--quick 3)")
    ap.add_argument("--flood-rate", type=float, default=40_000,
                    help="flood Access-Requests/s, all processes together (0: as fast as they can)")
    ap.add_argument("--flood-procs", type=int, default=2, help="flooding processes (4 sockets each)")
    ap.add_argument("--probe-rate", type=float, default=200.0, help="probe Access-Requests/s from 127.0.0.1")
    ap.add_argument("--stall-seconds", type=float, default=None, help="row lock held (default 45 s; --quick 10)")
    ap.add_argument("--table-lock-seconds", type=float, default=None, help="default 15 s (--quick 5)")
    ap.add_argument("--stall-rate", type=float, default=None,
                    help="accounting requests/s (default 3,000; --quick 1,000)")
    ap.add_argument("--outage-seconds", type=float, default=None, help="default 10 s (--quick 3)")
    ap.add_argument("--outage-rate", type=float, default=500.0)
    ap.add_argument("--kill-seconds", type=float, default=None, help="default 15 s (--quick 6)")
    ap.add_argument("--kill-rate", type=float, default=300.0)
    ap.add_argument("--max-call-duration", type=int, default=7200, help="server's [limits] max_call_duration")
    ap.add_argument("--duration-slack", type=int, default=60, help="seconds over max_call_duration a CDR may bill")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--pg-admin-url", default=None,
                    help="PostgreSQL role allowed to create databases (default $BENCH_PG_URL or $RADIUSD_TEST_PG_URL)")
    ap.add_argument("--results", default=str(HERE / "results"), help="directory for chaos-<timestamp>.json")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="a server setting for the run, TOML value (e.g. backpressure.accounting_queue=4000); repeatable")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (server logs) and the database")
    args = ap.parse_args(argv)
    q = args.quick
    defaults = {"fuzz": 20_000 if q else 1_000_000, "fuzz_seconds": 60 if q else 600,
                "flood_seconds": 3 if q else 10, "stall_seconds": 10 if q else 45,
                "table_lock_seconds": 5 if q else 15, "stall_rate": 1000 if q else 3000,
                "outage_seconds": 3 if q else 10, "kill_seconds": 6 if q else 15}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    only = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = [x for x in only if x not in SCENARIOS]
    if unknown:
        ap.error(f"--only: unknown scenario {', '.join(unknown)} (choose from {', '.join(SCENARIOS)})")
    admin = args.pg_admin_url or os.environ.get("BENCH_PG_URL") or os.environ.get("RADIUSD_TEST_PG_URL")
    if not admin:
        ap.error("--pg-admin-url: give a PostgreSQL URL of a role that may create databases "
                 "(or set BENCH_PG_URL / RADIUSD_TEST_PG_URL)")
    random.seed(args.seed)
    # `timeout`, CI and kill send SIGTERM: unwind through the `finally` that stops the server
    # (its own session) and drops the database
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = dt.datetime.now(dt.timezone.utc)
    res = {"started_at": started.isoformat(timespec="seconds"), "machine": machine(),
           "params": {k: v for k, v in vars(args).items() if k != "pg_admin_url"}, "scenarios": {}}
    work = Path(tempfile.mkdtemp(prefix="radiusd-chaos-"))
    say(f"work directory {work}")
    # the seed seals NAS secrets and passwords with this key; the server (cwd = work) reads it back
    os.environ.setdefault("RADIUSD_KEY_FILE", str(work / "radiusd.key"))
    store = Store(admin, f"radiusd_chaos_{os.getpid()}")
    res["database"] = store.name
    for item in args.set:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            ap.error(f"--set {item}: expected SECTION.KEY=VALUE, e.g. fairness.rate=1000")
    srv = Server(store.url, work, args.workers, args.max_call_duration, args.set)
    runners = {"fuzz": scenario_fuzz, "flood": scenario_flood, "stall": scenario_stall,
               "outage": scenario_outage, "kill": scenario_kill}
    try:
        srv.start()
        for name in SCENARIOS:
            if name not in only:
                continue
            say(f"{name}: start")
            t0 = time.monotonic()
            try:
                if not srv.alive():
                    srv.start()
                srv.wait_answering(30)
                res["scenarios"][name] = runners[name](srv, store, args)
            except Exception as exc:   # one scenario's failure is a row, not the end of the suite
                res["scenarios"][name] = {"error": f"{exc.__class__.__name__}: {exc}"}
                args.keep = True
            say(f"{name}: done in {time.monotonic() - t0:.0f} s")
            for row in rows_of({"scenarios": {name: res["scenarios"][name]}}):
                say(row)
    finally:
        srv.stop()
        if not args.keep:
            store.drop()
    res["finished_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    out_dir = Path(args.results)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"chaos-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps(res, indent=2, default=str))
    print(markdown(res), flush=True)
    say(f"results: {out}")
    if args.keep:
        say(f"kept: work directory {work}, database {store.name}")
    else:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    bad = user_visible_failure(res)
    for line in bad:
        say(f"FAILED: {line}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
