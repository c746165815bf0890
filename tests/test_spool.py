"""The spool and the accounting writer: group commit, store outages, kill -9, replay exactly once."""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select

from radiusd.config import Settings
from radiusd.core.facts import AcctFacts
from radiusd.core.snapshot import build_snapshot
from radiusd.db import create_schema, make_engine, make_sessionmaker
from radiusd.models import Cdr
from radiusd.pipeline.accounting_writer import AccountingWriter
from radiusd.pipeline.spool import JOURNAL, WORK, Spool, SpoolBusy
from test_accounting_support import CUSTOMER_IP, T0, balance, cdrs, open_calls, seed, snapshot_of

S = dt.timedelta(seconds=1)
ROOT = Path(__file__).resolve().parent.parent


def stop_packet(nas_id: int, n: int, seconds: int = 43) -> AcctFacts:
    """A Stop with no Start: one CDR of 0.08 (43 s on prefix 44) for the customer."""
    return AcctFacts(nas_id=nas_id, status="stop", acct_session_id=f"K{n}", leg_key=f"{nas_id}:K{n}",
                     call_id=f"k{n}", caller_address=CUSTOMER_IP, called_number="441612345678",
                     event_time=T0 + n * S, session_time=seconds)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Acks:
    """Collects on_done results per leg key, thread-safe."""

    def __init__(self):
        self.changed = threading.Condition()
        self.results: dict[str, bool] = {}

    def callback(self, key: str):
        def done(ok: bool):
            with self.changed:
                self.results[key] = ok
                self.changed.notify_all()
        return done

    def wait(self, count: int, timeout: float = 60) -> None:
        with self.changed:
            if not self.changed.wait_for(lambda: len(self.results) >= count, timeout):
                raise AssertionError(f"only {len(self.results)} of {count} records answered")


def wait_for(predicate, timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


# -- the spool file itself ---------------------------------------------------------------------

def test_spool_appends_replays_in_order_and_survives_reopen(tmp_path):
    spool = Spool(tmp_path / "spool")
    packets = [stop_packet(1, n) for n in range(5)]
    assert spool.append(packets[:3]) == [1, 2, 3]
    assert spool.append(packets[3:]) == [4, 5]
    assert spool.depth() == 5
    with pytest.raises(SpoolBusy):
        Spool(tmp_path / "spool")  # one owner per spool directory
    spool.close()
    again = Spool(tmp_path / "spool")
    assert again.depth() == 5 and again.append([stop_packet(1, 9)]) == [6]
    work = again.claim()
    assert work.name == WORK and not (tmp_path / "spool" / JOURNAL).exists()
    read = [(seq, facts) for _, seq, facts, _ in again.read(work)]
    assert [seq for seq, _ in read] == [1, 2, 3, 4, 5, 6]
    assert read[0][1] == packets[0]  # times and all fields round-trip exactly
    again.append([stop_packet(1, 10)])  # arrives during replay: goes to a new journal
    again.replayed(6)
    again.finish(work)
    assert again.depth() == 1 and again.claim().name == WORK
    again.close()


def test_a_half_written_record_is_cut_off_when_the_spool_reopens(tmp_path):
    spool = Spool(tmp_path)
    spool.append([stop_packet(1, 1), stop_packet(1, 2)])
    spool.close()
    with open(tmp_path / JOURNAL, "ab") as fh:
        fh.write(b'{"seq":3,"facts":{"nas_')  # died mid-write, before fsync: never acknowledged
    spool = Spool(tmp_path)
    assert spool.depth() == 2
    spool.append([stop_packet(1, 3)])
    lines = (tmp_path / JOURNAL).read_bytes().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [1, 2, 3]
    spool.close()


# -- the writer ----------------------------------------------------------------------------------

def test_group_commit_acknowledges_every_record_once_committed(sessions, tmp_path):
    ids = seed(sessions, capacity=None, credit_limit=None)
    snap = snapshot_of(sessions)
    writer = AccountingWriter(sessions, lambda: snap, Settings(spool_path=str(tmp_path / "spool")), linger=0.01)
    writer.start()
    acks = Acks()
    packets = [stop_packet(ids["gw-a"], n) for n in range(200)]

    def submit(chunk):
        for facts in chunk:
            writer.submit(facts, acks.callback(facts.leg_key))

    threads = [threading.Thread(target=submit, args=(packets[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    acks.wait(200)
    writer.stop()
    assert all(acks.results.values())
    assert writer.counters["committed"] == 200 and writer.counters["spooled"] == 0
    assert writer.counters["groups"] < 200  # many records per transaction
    assert len(cdrs(sessions)) == 200
    assert balance(sessions, ids["acme"]) == Decimal("100") - 200 * Decimal("0.08")


def test_a_record_the_store_refuses_goes_to_the_dead_letter_file_not_the_group(sessions, tmp_path):
    ids = seed(sessions, capacity=None, credit_limit=None)
    snap = snapshot_of(sessions)
    writer = AccountingWriter(sessions, lambda: snap, Settings(spool_path=str(tmp_path / "spool")), linger=0.05)
    writer.start()
    acks = Acks()
    bad = AcctFacts(nas_id=ids["gw-a"], status="bogus", acct_session_id="B", leg_key="bad", event_time=T0)
    for facts in [stop_packet(ids["gw-a"], 1), bad, stop_packet(ids["gw-a"], 2)]:
        writer.submit(facts, acks.callback(facts.leg_key))
    acks.wait(3)
    writer.stop()
    assert acks.results == {f"{ids['gw-a']}:K1": True, "bad": True, f"{ids['gw-a']}:K2": True}
    assert len(cdrs(sessions)) == 2
    [dead] = (tmp_path / "spool" / "dead-letter.jsonl").read_text().splitlines()
    assert json.loads(dead)["facts"]["leg_key"] == "bad" and "bogus" in json.loads(dead)["error"]


def test_unreachable_store_goes_to_the_spool_and_a_later_writer_replays_it(sessions, tmp_path):
    ids = seed(sessions, capacity=None, credit_limit=None)
    snap = snapshot_of(sessions)
    spool_dir = tmp_path / "spool"
    dead_engine = make_engine(f"postgresql+psycopg2://radiusd:x@127.0.0.1:{free_port()}/none")
    down = AccountingWriter(make_sessionmaker(dead_engine), lambda: snap, Settings(spool_path=str(spool_dir)),
                            retry_interval=60)
    down.start()
    acks = Acks()
    packets = [stop_packet(ids["gw-a"], n) for n in range(50)] + [stop_packet(ids["gw-a"], 7)]  # one repeated
    for facts in packets:
        down.submit(facts, acks.callback(f"{facts.leg_key}#{len(acks.results)}"))
    wait_for(lambda: down.counters["spooled"] == 51, what="records spooled")
    assert down.spool_depth() == 51 and all(acks.results.values())
    down.stop()
    dead_engine.dispose()
    assert cdrs(sessions) == []
    up = AccountingWriter(sessions, lambda: snap, Settings(spool_path=str(spool_dir)), replay_batch=7)
    up.start()
    wait_for(lambda: up.spool_depth() == 0, what="spool replay")
    up.stop()
    assert len(cdrs(sessions)) == 50  # the repeated record changed nothing
    assert balance(sessions, ids["acme"]) == Decimal("100") - 50 * Decimal("0.08")
    assert not (spool_dir / JOURNAL).exists() and not (spool_dir / WORK).exists()


def test_neither_store_nor_spool_means_no_acknowledgement(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    dead_engine = make_engine(f"postgresql+psycopg2://radiusd:x@127.0.0.1:{free_port()}/none")
    writer = AccountingWriter(make_sessionmaker(dead_engine), lambda: build_snapshot(),
                              Settings(spool_path=str(blocker / "spool")))
    writer.start()
    acks = Acks()
    writer.submit(stop_packet(1, 1), acks.callback("k1"))
    acks.wait(1)
    writer.stop()
    dead_engine.dispose()
    assert acks.results == {"k1": False}


# -- a PostgreSQL server of our own, stopped mid-burst ------------------------------------------

PG_BIN = Path("/usr/lib/postgresql/15/bin")


class OwnPostgres:
    """A throwaway PostgreSQL cluster run as user postgres on a free port (never the shared one)."""

    def __init__(self, base: Path):
        self.base = base
        self.data = base / "data"
        self.port = free_port()
        self.url = f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return subprocess.run([*prefix, *cmd], check=check, capture_output=True, text=True, timeout=120)

    def init(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", "postgres:postgres", str(self.base)], check=True)
        self._as_postgres(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                          "--no-sync", "-E", "UTF8")

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c max_connections=30"
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", opts, "-l",
                          str(self.base / "log"), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop",
                          check=False)


@pytest.fixture
def own_postgres():
    if not (PG_BIN / "initdb").exists():
        pytest.skip("PostgreSQL 15 server binaries not installed")
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="radiusd-own-pg-"))
    os.chmod(base, 0o755)
    server = OwnPostgres(base / "cluster")
    server.init()
    server.start()
    try:
        yield server
    finally:
        server.stop("immediate")
        subprocess.run(["rm", "-rf", str(base)], check=False)


def test_postgresql_stopped_mid_burst_every_acknowledged_record_lands_once(own_postgres, tmp_path):
    engine = make_engine(own_postgres.url, pool_size=2)
    create_schema(engine)
    sessions = make_sessionmaker(engine)
    ids = seed(sessions, capacity=None, credit_limit=None)
    snap = snapshot_of(sessions)
    writer = AccountingWriter(sessions, lambda: snap, Settings(spool_path=str(tmp_path / "spool")),
                              retry_interval=0.2, replay_batch=25)
    writer.start()
    acks = Acks()
    a = ids["gw-a"]

    def burst(first: int, count: int) -> None:
        for n in range(first, first + count):
            start = AcctFacts(nas_id=a, status="start", acct_session_id=f"K{n}", leg_key=f"{a}:K{n}",
                              call_id=f"k{n}", caller_address=CUSTOMER_IP, called_number="441612345678",
                              event_time=T0 + n * S)
            for facts, tag in ((start, "start"), (stop_packet(a, n), "stop")):
                writer.submit(facts, acks.callback(f"{tag}:{n}"))

    burst(0, 100)
    acks.wait(200)
    own_postgres.stop("fast")           # the store goes away mid-burst
    burst(100, 100)
    acks.wait(400)
    assert writer.spool_depth() > 0 and writer.counters["spooled"] > 0  # these acks came from the spool
    own_postgres.start()                # back: the replayer drains the spool while traffic continues
    burst(200, 100)
    acks.wait(600)
    wait_for(lambda: writer.spool_depth() == 0 and writer.store_ok, timeout=90, what="spool replay")
    writer.stop()
    assert len(acks.results) == 600 and all(acks.results.values())
    with sessions() as s:
        keys = s.scalars(select(Cdr.leg_key)).all()
        charged = s.scalar(select(func.sum(Cdr.cost)).where(Cdr.client_id == ids["acme"]))
    assert sorted(keys) == sorted(f"{a}:K{n}" for n in range(300))  # each acknowledged call exactly once
    assert open_calls(sessions) == []
    assert Decimal("100") - balance(sessions, ids["acme"]) == Decimal(charged) == 300 * Decimal("0.08")
    engine.dispose()


# -- kill -9 ---------------------------------------------------------------------------------------

CHILD = r"""
import json, sys, time
sys.path.insert(0, ROOT)
from radiusd.config import Settings
from radiusd.core.snapshot import build_snapshot
from radiusd.db import make_engine, make_sessionmaker
from radiusd.pipeline.accounting_writer import AccountingWriter
from radiusd.store.snapshot_loader import load_snapshot_from
sys.path.insert(0, ROOT + "/tests")
from test_spool import stop_packet

args = json.loads(sys.argv[1])
engine = make_engine(args["url"])
sessions = make_sessionmaker(engine)
snap = build_snapshot() if args["mode"] == "produce" else load_snapshot_from(sessions)
writer = AccountingWriter(sessions, lambda: snap, Settings(spool_path=args["spool"]), retry_interval=0.05,
                          replay_batch=args.get("batch", 500), replay_pause=args.get("pause", 0.0))
writer.start()
print("depth", writer.spool_depth(), flush=True)
if args["mode"] == "produce":
    def acked(n):
        return lambda ok: print("ack", n, ok, flush=True)
    for n in range(args["count"]):
        writer.submit(stop_packet(args["nas"], n), acked(n))
        time.sleep(0.002)  # a steady stream, so that the kill lands while acknowledging
    sys.stdin.read()  # until killed (or the test is gone)
else:
    while writer.spool_depth():
        print("depth", writer.spool_depth(), flush=True)
        time.sleep(0.01)
    writer.stop()
    print("done", flush=True)
""".replace("ROOT", repr(str(ROOT)))


def run_child(args: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(args)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=str(ROOT))


def test_kill_9_while_acknowledging_and_mid_replay_loses_and_duplicates_nothing(store_url, sessions, tmp_path):
    ids = seed(sessions, capacity=None, credit_limit=None)
    spool_dir = str(tmp_path / "spool")
    unreachable = f"postgresql+psycopg2://radiusd:x@127.0.0.1:{free_port()}/none"

    # 1. store away: records are acknowledged from the spool; SIGKILL after 150 acks
    producer = run_child({"mode": "produce", "url": unreachable, "spool": spool_dir, "count": 400,
                          "nas": ids["gw-a"]})
    acked = set()
    for line in producer.stdout:
        parts = line.split()
        if parts[0] == "ack" and parts[2] == "True":
            acked.add(int(parts[1]))
        if len(acked) >= 150:
            break
    producer.send_signal(signal.SIGKILL)
    producer.wait(30)
    assert len(acked) >= 150

    # 2. store back: the replay is SIGKILLed half-way (small groups, paused between them)
    replayer = run_child({"mode": "replay", "url": store_url, "spool": spool_dir, "batch": 10, "pause": 0.05})
    initial = None
    for line in replayer.stdout:
        parts = line.split()
        if parts[0] == "depth":
            initial = int(parts[1]) if initial is None else initial
            if int(parts[1]) < initial - 20:
                break
    replayer.send_signal(signal.SIGKILL)
    replayer.wait(30)
    assert initial is not None and initial >= len(acked)
    partly = len(cdrs(sessions))
    assert 0 < partly < initial  # really killed mid-replay

    # 3. restarted: finishes the replay
    finisher = run_child({"mode": "replay", "url": store_url, "spool": spool_dir})
    out, _ = finisher.communicate(timeout=120)
    assert "done" in out and finisher.returncode == 0
    keys = {row.leg_key for row in cdrs(sessions)}
    assert {f"{ids['gw-a']}:K{n}" for n in acked} <= keys      # nothing acknowledged is lost
    assert len(keys) == len(cdrs(sessions)) == initial          # nothing spooled is duplicated
    assert balance(sessions, ids["acme"]) == Decimal("100") - len(keys) * Decimal("0.08")  # one debit each


def test_a_spool_left_by_a_gone_worker_is_replayed_by_the_parent_spool_owner(sessions, tmp_path):
    ids = seed(sessions, capacity=None, credit_limit=None)
    snap = snapshot_of(sessions)
    left = Spool(tmp_path / "spool" / "worker-3")  # a worker of a run with more workers
    left.append([stop_packet(ids["gw-a"], n) for n in range(12)])
    busy = Spool(tmp_path / "spool" / "worker-1")   # a live worker: its spool is its own business
    busy.append([stop_packet(ids["gw-a"], 100)])
    left.close()
    writer = AccountingWriter(sessions, lambda: snap, Settings(spool_path=str(tmp_path / "spool")))
    writer.start()
    try:
        wait_for(lambda: len(cdrs(sessions)) == 12, what="orphan replay")
    finally:
        writer.stop()
        busy.close()
    assert not (tmp_path / "spool" / "worker-3" / JOURNAL).exists()
    assert (tmp_path / "spool" / "worker-1" / JOURNAL).exists()
