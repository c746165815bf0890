"""Operating the server: admin changes without restart, SIGHUP, busy ports, workers, PostgreSQL."""
from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time

import pytest
from pyrad.packet import AccessAccept, AccessReject, AccessRequest, AuthPacket
from sqlalchemy import text
from sqlalchemy.engine import make_url

from radius_packets import DICTIONARY, SECRET, acct_request
from radius_server import ServerProcess, exchange, free_port, seeded_store
from radiusd.admin.clients import update_client
from radiusd.admin.nas import create_nas
from radiusd.db import make_engine, open_store

CONF_ID = "h323-conf-id=5A5A5A5A 00000000 00000000 {:08X}"


def request(attrs, password=None):
    pkt = AuthPacket(code=AccessRequest, secret=SECRET, dict=DICTIONARY)
    pkt.authenticator = pkt.CreateAuthenticator()
    if password is not None:
        pkt.AddAttribute("User-Password", pkt.PwCrypt(password))
    for name, value in attrs:
        pkt.AddAttribute(name, value)
    pkt.add_message_authenticator()
    return pkt, pkt.RequestPacket()


def decide(port, attrs, password=None, source=None, timeout=3.0):
    pkt, data = request(attrs, password)
    raw = exchange(data, port, source=source, timeout=timeout)
    if raw is None:
        return None
    reply = pkt.CreateReply(packet=raw)
    assert pkt.VerifyReply(reply, raw, enforce_ma=True)
    return reply


def acme(n):
    return [("User-Name", "acme-sip"), ("Called-Station-Id", "442071234567"), ("h323-conf-id", CONF_ID.format(n))]


def beta(n):
    return [("Called-Station-Id", "442071234567"), ("h323-remote-address", "h323-remote-address=10.9.1.1"),
            ("h323-conf-id", CONF_ID.format(n))]


def gamma(n):
    return [("Called-Station-Id", "442071234567"), ("h323-remote-address", "h323-remote-address=127.0.0.1"),
            ("h323-conf-id", CONF_ID.format(n))]


def _until(check, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    return check()


def test_admin_change_reaches_running_server_within_two_seconds(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    seeded_store(url)
    srv = ServerProcess(url, tmp_path).wait_ready()
    engine, sessions = open_store(url)
    try:
        assert decide(srv.auth_port, acme(1), "s3cret-pass", source="127.0.0.4", timeout=0.5) is None
        before = decide(srv.auth_port, beta(2))
        assert before["h323-return-code"] == ["h323-return-code=4"]
        with sessions.begin() as session:
            create_nas(session, actor="test", name="new-switch", address="127.0.0.4", secret="testing123")
            update_client(session, "Beta Voice", actor="test", active=False)
        changed = time.monotonic()
        reply = _until(lambda: decide(srv.auth_port, acme(3), "s3cret-pass", source="127.0.0.4", timeout=0.3), 2.5)
        assert reply is not None and reply.code == AccessAccept
        after = _until(lambda: (r := decide(srv.auth_port, beta(4)))["h323-return-code"] == ["h323-return-code=7"] and r, 2.5)
        assert after and after.code == AccessReject
        assert time.monotonic() - changed < 2.5
        assert srv.events("snapshot.loaded")
    finally:
        engine.dispose()
        assert srv.stop() == 0


def test_sighup_forces_a_reload(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    seeded_store(url)
    srv = ServerProcess(url, tmp_path, poll=3600).wait_ready()
    engine, sessions = open_store(url)
    try:
        with sessions.begin() as session:
            create_nas(session, actor="test", name="new-switch", address="127.0.0.5", secret="testing123")
        assert decide(srv.auth_port, acme(5), "s3cret-pass", source="127.0.0.5", timeout=0.5) is None
        srv.proc.send_signal(signal.SIGHUP)
        reply = _until(lambda: decide(srv.auth_port, acme(6), "s3cret-pass", source="127.0.0.5", timeout=0.3), 3)
        assert reply is not None and reply.code == AccessAccept
    finally:
        engine.dispose()
        assert srv.stop() == 0


@pytest.mark.parametrize("workers", [1, 2])
def test_busy_port_is_refused_with_a_clear_message(tmp_path, workers):
    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    seeded_store(url)
    auth, acct = free_port(2)
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)   # even a SO_REUSEPORT holder counts
    holder.bind(("127.0.0.1", acct))
    try:
        srv = ServerProcess(url, tmp_path, workers=workers, ports=(auth, acct))
        assert srv.proc.wait(30) == 2
        srv.stop()
        message = "\n".join(srv.lines)
        assert f"acct port {acct} on 127.0.0.1 is already in use" in message
        assert "Traceback" not in message
    finally:
        holder.close()


def test_two_workers_share_the_ports_and_stop_on_sigterm(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    seeded_store(url)
    srv = ServerProcess(url, tmp_path, workers=2).wait_ready(workers=2)
    try:
        for n in range(10, 16):
            reply = decide(srv.auth_port, acme(n), "s3cret-pass")
            assert reply is not None and reply.code == AccessAccept
        data, _ = acct_request([("Acct-Status-Type", 1), ("Acct-Session-Id", "w-1"), ("h323-conf-id", CONF_ID.format(10))])
        raw = exchange(data, srv.acct_port, timeout=5)
        assert raw is not None and raw[0] == 5
        # one metrics endpoint for both workers (tests/test_metrics.py: the sum over workers)
        assert srv.counter('radiusd_auth_decisions_total{outcome="accept",reason="none"}') == 6
        assert "radiusd_snapshot_version" in srv.metrics()
    finally:
        assert srv.stop() == 0
    assert len(srv.events("server.stopped")) == 2
    assert srv.events("supervisor.stopped")


# --- PostgreSQL -----------------------------------------------------------------------------

def test_postgresql_accept_then_store_loss_is_a_service_unavailable_reject(pg_url, tmp_path):
    seeded_store(pg_url)
    srv = ServerProcess(pg_url, tmp_path).wait_ready()
    try:
        reply = decide(srv.auth_port, acme(20), "s3cret-pass")
        assert reply.code == AccessAccept and reply["h323-credit-time"][0].startswith("h323-credit-time=")
        # the database disappears under the running server
        name = make_url(pg_url).database
        admin = make_engine(os.environ["RADIUSD_TEST_PG_URL"], isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()
        reply = decide(srv.auth_port, acme(21), "s3cret-pass", timeout=10)
        assert reply.code == AccessReject and reply["h323-return-code"] == ["h323-return-code=8"]
        status = _until(lambda: srv.health()[0] == 503, 5)
        assert status, srv.health()
        assert srv.counter('radiusd_store_errors_total{operation="reserve_call"}') >= 1
        assert srv.proc.poll() is None
    finally:
        assert srv.stop() == 0


def test_capacity_exact_across_two_server_processes_on_postgresql(pg_url, tmp_path):
    seeded_store(pg_url)
    one = ServerProcess(pg_url, tmp_path, name="one")
    two = ServerProcess(pg_url, tmp_path, name="two")
    one.wait_ready()
    two.wait_ready()
    try:
        sockets, packets = [], []
        for n in range(10):   # gamma-gw: capacity 2
            pkt, data = request(gamma(0x100 + n))
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sockets.append(sock)
            packets.append((pkt, data, (one if n % 2 else two).auth_port))
        for sock, (_, data, port) in zip(sockets, packets):
            sock.sendto(data, ("127.0.0.1", port))
        replies = {}
        deadline = time.monotonic() + 20
        while len(replies) < len(sockets) and time.monotonic() < deadline:
            ready, _, _ = select.select([s for s in sockets if s not in replies], [], [], 0.5)
            for sock in ready:
                replies[sock] = sock.recv(8192)
        assert len(replies) == len(sockets)
        codes = []
        for sock, (pkt, _, _) in zip(sockets, packets):
            reply = pkt.CreateReply(packet=replies[sock])
            codes.append(reply.code)
            if reply.code == AccessReject:
                assert reply["h323-return-code"] == ["h323-return-code=3"]
            sock.close()
        assert codes.count(AccessAccept) == 2, codes
    finally:
        assert one.stop() == 0
        assert two.stop() == 0


def test_demo_command_prints_a_line_that_gets_an_accept(tmp_path, radclient):
    auth, acct = free_port(2)
    proc = subprocess.Popen([sys.executable, "-m", "radiusd", "demo", "--db", str(tmp_path / "demo.sqlite3"),
                             "--auth-port", str(auth), "--acct-port", str(acct), "--metrics-port", "0"],
                            cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, RADIUSD_CONFIG=""))
    try:
        line = None
        deadline = time.monotonic() + 30
        while line is None and time.monotonic() < deadline:
            text_line = proc.stdout.readline()
            if "| radclient" in text_line:
                line = text_line.strip()
        assert line and "Message-Authenticator = 0x00" in line and f"127.0.0.1:{auth}" in line
        out = None
        for _ in range(50):   # the line is printed just before the sockets open
            out = subprocess.run(["sh", "-c", line.replace("radclient", radclient, 1)], capture_output=True, text=True, timeout=30)
            if "Received" in out.stdout:
                break
            time.sleep(0.2)
        assert "Received Access-Accept" in out.stdout, out.stdout + out.stderr
        assert 'h323-credit-time = "h323-credit-time=' in out.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
