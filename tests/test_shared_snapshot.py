"""`--workers N`: the workers answer from the one snapshot the supervisor loaded before forking them,
and an admin change reaches every worker by replacing them, one at a time, without losing requests."""
from __future__ import annotations

import signal
import socket
import threading
import time

from pyrad.packet import AccessAccept, AccessReject

from radius_server import ServerProcess, seeded_store
from radius_packets import SECRET
from radiusd.bench.engine import BenchOptions, run_bench
from radiusd.bench.wire import LoadAccount
from radiusd.admin.nas import create_nas
from radiusd.db import open_store
from test_server_ops import _until, acme, decide, request


def test_workers_answer_from_the_supervisors_snapshot_and_a_change_replaces_them(store_url, tmp_path):
    seeded_store(store_url)
    srv = ServerProcess(store_url, tmp_path, workers=2, poll=0.2).wait_ready(workers=2)
    engine, sessions = open_store(store_url)
    try:
        # one load, by the supervisor, before the workers exist; no worker loads its own
        loaded = srv.events("supervisor.snapshot_loaded")
        assert len(loaded) == 1 and loaded[0]["accounts"] > 0
        assert srv.events("snapshot.loaded") == []
        status, health = srv.health()
        assert status == 200 and {w["snapshot_version"] for w in health["workers"]} == {loaded[0]["version"]}
        old_pids = {w["pid"] for w in health["workers"]}
        # fresh source ports reach both workers; each answers (the NAS and its secret, the account:
        # all from the inherited snapshot). Acme's capacity of 10 channels turns the rest into rejects.
        codes = [decide(srv.auth_port, acme(n), "s3cret-pass").code for n in range(12)]
        assert codes.count(AccessAccept) == 10 and codes.count(AccessReject) == 2, codes

        # while the workers are replaced, a NAS that retransmits (pyrad/radclient style) gets every answer
        unanswered, sent, rolling = [], [0], threading.Event()

        def traffic():
            n = 100
            while rolling.is_set():
                pkt, data = request(acme(n), "s3cret-pass")
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                    for _ in range(4):   # the same datagram from the same port, 1 s apart
                        sock.settimeout(1.0)
                        sock.sendto(data, ("127.0.0.1", srv.auth_port))
                        try:
                            sock.recv(8192)
                            break
                        except socket.timeout:
                            continue
                    else:
                        unanswered.append(n)
                sent[0] += 1
                n += 1
                time.sleep(0.02)

        rolling.set()
        sender = threading.Thread(target=traffic, daemon=True)
        sender.start()
        try:
            with sessions.begin() as session:
                create_nas(session, actor="test", name="new-switch", address="127.0.0.4", secret="testing123")
            replaced = _until(lambda: len(srv.events("supervisor.worker_replaced")) >= 2, 30)
            assert replaced, "\n".join(srv.lines[-30:])
            _until(lambda: srv.health()[0] == 200 and {w["pid"] for w in srv.health()[1]["workers"]}.isdisjoint(old_pids), 10)
        finally:
            rolling.clear()
            sender.join(30)
        assert sent[0] > 0 and unanswered == [], (unanswered, sent)

        # both new workers know the NAS added to the store, and answer from the new snapshot
        status, health = srv.health()
        assert status == 200, health
        assert {w["pid"] for w in health["workers"]}.isdisjoint(old_pids)
        new_version = srv.events("snapshot.loaded")[-1]["version"]
        assert new_version > loaded[0]["version"]
        assert {w["snapshot_version"] for w in health["workers"]} == {new_version}
        for n in range(200, 212):   # an unknown NAS would get no answer at all
            reply = decide(srv.auth_port, acme(n), "s3cret-pass", source="127.0.0.4")
            assert reply is not None and reply.code in (AccessAccept, AccessReject), "\n".join(srv.lines[-40:])
        assert not srv.events("supervisor.worker_died")
        assert srv.counter("radiusd_snapshot_reloads_total") == 2   # one per worker, as when each reloaded
    finally:
        engine.dispose()
        assert srv.stop() == 0


def test_sighup_to_the_supervisor_reloads_every_worker(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    seeded_store(url)
    srv = ServerProcess(url, tmp_path, workers=2, poll=3600).wait_ready(workers=2)
    engine, sessions = open_store(url)
    try:
        with sessions.begin() as session:
            create_nas(session, actor="test", name="new-switch", address="127.0.0.5", secret="testing123")
        assert decide(srv.auth_port, acme(1), "s3cret-pass", source="127.0.0.5", timeout=0.5) is None
        srv.proc.send_signal(signal.SIGHUP)
        assert _until(lambda: len(srv.events("supervisor.worker_replaced")) >= 2, 30), "\n".join(srv.lines[-30:])
        for n in range(2, 14):   # fresh source ports: both workers know the NAS now
            reply = decide(srv.auth_port, acme(n), "s3cret-pass", source="127.0.0.5")
            assert reply is not None and reply.code in (AccessAccept, AccessReject), n
    finally:
        engine.dispose()
        assert srv.stop() == 0


def test_replaced_workers_hand_over_without_losing_a_request(tmp_path):
    """A replaced worker keeps serving until a quiet moment before it closes its sockets: under
    steady traffic, a switch that never retransmits still gets every answer across reloads."""
    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    seeded_store(url)
    srv = ServerProcess(url, tmp_path, workers=2, poll=3600).wait_ready(workers=2)
    result: dict = {}
    load = BenchOptions(mode="auth", accounts=[LoadAccount("login", "acme-sip", "s3cret-pass", "442071234567")],
                        secret=SECRET,
                        auth_port=srv.auth_port, acct_port=srv.acct_port, rate=1500, duration=8.0,
                        window=256, timeout=2.0, retries=0, sockets=16)
    sender = threading.Thread(target=lambda: result.update(run_bench(load)), daemon=True)
    try:
        sender.start()
        for round_ in (1, 2):   # two reloads: four workers replaced while the traffic runs
            time.sleep(1.5)
            srv.proc.send_signal(signal.SIGHUP)
            assert _until(lambda: len(srv.events("supervisor.worker_replaced")) >= 2 * round_, 30), \
                "\n".join(srv.lines[-30:])
        sender.join(60)
        auth = result["by_kind"]["auth"]
        assert auth["sent"] > 1000 and auth["responses"] == auth["sent"], auth
        assert srv.counter('radiusd_packets_dropped_total{port="auth",reason="handover"}') == 0
    finally:
        assert srv.stop() == 0
