"""One /metrics and /health endpoint for the whole server, whatever its worker count."""
from __future__ import annotations

import os
import signal
import socket
import time

from pyrad.packet import AccessAccept, AccessReject

from radius_server import ServerProcess, seeded_store
from radiusd.metrics import Metrics
from test_server_ops import acme, request



def decisions(srv) -> float:
    """Access-Request decisions (accepts and rejects) counted on the server's one endpoint."""
    return sum(float(line.split()[-1]) for line in srv.metrics().splitlines()
               if line.startswith("radiusd_auth_decisions_total{"))


def _until(condition, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    return condition()


def _answered_from_many_ports(port: int, count: int) -> int:
    """`count` Access-Requests, each from its own source port (SO_REUSEPORT hashes on it, so
    both workers get some); returns how many were answered (accepted or rejected: acme's channels
    run out)."""
    sockets, packets = [], []
    try:
        for n in range(count):
            pkt, data = request(acme(0x500 + n), "s3cret-pass")
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.settimeout(5)
            sock.sendto(data, ("127.0.0.1", port))
            sockets.append(sock)
            packets.append(pkt)
        answered = 0
        for sock, pkt in zip(sockets, packets):
            raw = sock.recv(8192)
            answered += pkt.CreateReply(packet=raw).code in (AccessAccept, AccessReject)
        return answered
    finally:
        for sock in sockets:
            sock.close()


def test_two_workers_one_endpoint_sums_their_counters_and_health_covers_both(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    seeded_store(url)
    srv = ServerProcess(url, tmp_path, workers=2).wait_ready(workers=2)
    directory = srv.last_event("supervisor.started")["metrics_dir"]
    try:
        assert os.path.isdir(directory)
        status, health = _until(lambda: (lambda h: h if h[0] == 200 else None)(srv.health()), 10) or srv.health()
        assert status == 200, health
        assert [w["worker"] for w in health["workers"]] == [0, 1] and {w["status"] for w in health["workers"]} == {"ok"}
        assert health["store"] == "up" and health["snapshot_version"] >= 1
        assert _answered_from_many_ports(srv.auth_port, 24) == 24
        assert _until(lambda: len(srv.events("auth.decision")) >= 24, 10)   # log lines come through a pipe
        by_worker = {}
        for event in srv.events("auth.decision"):
            by_worker[event["worker"]] = by_worker.get(event["worker"], 0) + 1
        assert set(by_worker) == {0, 1}, by_worker          # both workers decided some...
        assert decisions(srv) == 24                   # ...and the one endpoint counts all
        text = srv.metrics()
        assert "radiusd_store_up 1.0" in text and "radiusd_snapshot_version" in text
        assert text.count("# TYPE radiusd_auth_decisions_total counter") == 1

        # a worker dies: /health says which, its counts stay, the restarted worker reports again
        victim = health["workers"][1]["pid"]
        os.kill(victim, signal.SIGKILL)
        status, down = _until(lambda: (lambda h: h if h[0] == 503 else None)(srv.health()), 10) or srv.health()
        assert status == 503 and down["status"] == "unavailable" and "worker 1:" in down["reason"], down
        assert decisions(srv) == 24
        status, back = _until(lambda: (lambda h: h if h[0] == 200 else None)(srv.health()), 30) or srv.health()
        assert status == 200 and back["workers"][1]["pid"] != victim, back
        assert _answered_from_many_ports(srv.auth_port, 6) == 6
        assert decisions(srv) == 30
    finally:
        assert srv.stop() == 0
    assert not os.path.exists(directory)   # the supervisor's metrics directory is gone with it


def test_single_process_serves_its_own_counters(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    seeded_store(url)
    srv = ServerProcess(url, tmp_path).wait_ready()
    try:
        assert _answered_from_many_ports(srv.auth_port, 3) == 3
        assert decisions(srv) == 3
        status, health = srv.health()
        assert status == 200 and health["store"] == "up" and health["worker"] == 0
    finally:
        assert srv.stop() == 0


def test_metrics_counts_and_gauges_in_one_process():
    metrics = Metrics()
    metrics.inc("radiusd_packets_dropped_total", port="auth", reason="unknown_nas")
    metrics.inc("radiusd_packets_dropped_total", 2, reason="unknown_nas", port="auth")   # label order is free
    metrics.inc("radiusd_snapshot_reloads_total")
    depth = [7]
    metrics.gauge("radiusd_spool_depth", lambda: depth[0])
    assert metrics.get("radiusd_packets_dropped_total", port="auth", reason="unknown_nas") == 3
    assert metrics.get("radiusd_packets_dropped_total", port="acct", reason="unknown_nas") == 0
    text = metrics.render()
    assert 'radiusd_packets_dropped_total{port="auth",reason="unknown_nas"} 3.0' in text
    assert "radiusd_snapshot_reloads_total 1.0" in text and "radiusd_spool_depth 7.0" in text
    depth[0] = 2
    assert "radiusd_spool_depth 2.0" in metrics.render()   # read at each scrape
    assert "_created" not in text


def test_busy_metrics_port_is_refused_at_start_with_workers(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    seeded_store(url)
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        port = holder.getsockname()[1]
        srv = ServerProcess(url, tmp_path, workers=2, metrics_port=port)
        assert srv.proc.wait(30) == 2
        srv.stop()
        message = "\n".join(srv.lines)
        assert f"metrics port {port} on 127.0.0.1" in message and "Traceback" not in message
    finally:
        holder.close()


def test_two_workers_losing_the_store_make_health_503_naming_them(pg_url, tmp_path):
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from radiusd.db import make_engine

    seeded_store(pg_url)
    srv = ServerProcess(pg_url, tmp_path, workers=2).wait_ready(workers=2)
    try:
        assert _until(lambda: srv.health()[0] == 200, 10), srv.health()
        admin = make_engine(os.environ["RADIUSD_TEST_PG_URL"], isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:   # the database disappears under the running server
            conn.execute(text(f'DROP DATABASE "{make_url(pg_url).database}" WITH (FORCE)'))
        admin.dispose()
        down = _until(lambda: (lambda h: h if h[0] == 503 and "store" in h[1].get("reason", "") else None)(
            srv.health()), 15)
        assert down, srv.health()
        status, health = down
        assert health["store"] == "unreachable" and "worker" in health["reason"], health
        assert "radiusd_store_up 0.0" in srv.metrics()
    finally:
        assert srv.stop() == 0
