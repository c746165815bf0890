"""N radiusd hosts on one PostgreSQL: two `radiusd serve` processes share capacity, CDRs and admin data.

Each server is its own process with its own ports, spool and snapshot, as two hosts would be;
all they share is the database. Real UDP, pyrad clients, the demo seed.
"""
from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
from pyrad.client import Client
from pyrad.packet import AccessAccept, AccessReject, AccessRequest, AccountingResponse, AcctPacket
from sqlalchemy import func, select

from radius_packets import DICTIONARY, SECRET, acct_request
from radius_server import ServerProcess, exchange, seeded_store
from radiusd.config import PROJECT_ROOT
from radiusd.db import make_engine, make_sessionmaker
from radiusd.models import ActiveCall, Cdr

CONF_ID = "h323-conf-id=5CA1E0A7 00000000 00000000 0000{:04X}"
POLL = 1.0  # the product default of [server] snapshot_poll_seconds


@pytest.fixture
def two_hosts(pg_url, tmp_path):
    seeded_store(pg_url)
    hosts = [ServerProcess(pg_url, tmp_path, name=f"host{n}", poll=POLL) for n in (1, 2)]
    try:
        for host in hosts:
            host.wait_ready()
        yield hosts
    finally:
        for host in hosts:
            host.stop()


def ask(host: ServerProcess, attrs, password: str | None = None):
    """One Access-Request through a pyrad client (Message-Authenticator on, verified on the reply)."""
    client = Client(server="127.0.0.1", authport=host.auth_port, secret=SECRET, dict=DICTIONARY, enforce_ma=True)
    client.timeout, client.retries = 5, 1
    pkt = client.CreateAuthPacket(code=AccessRequest)
    for name, value in attrs:
        pkt.AddAttribute(name, value)
    if password is not None:
        pkt["User-Password"] = pkt.PwCrypt(password)
    pkt.add_message_authenticator()
    return client.SendPacket(pkt)


def gamma(n: int):
    """gamma-gw (client Gamma Unlimited: capacity 2, unlimited credit), caller 127.0.0.1 in Cisco form."""
    return [("Called-Station-Id", "442071234567"), ("Calling-Station-Id", "15551239999"),
            ("h323-remote-address", "h323-remote-address=127.0.0.1"), ("h323-conf-id", CONF_ID.format(n))]


def account(host: ServerProcess, attrs) -> int:
    data, _ = acct_request(attrs)
    raw = exchange(data, host.acct_port, timeout=5)
    assert raw is not None and raw[0] == AccountingResponse, "accounting not acknowledged"
    request = AcctPacket(code=4, id=data[1], secret=SECRET, authenticator=data[4:20], dict=DICTIONARY)
    assert request.VerifyReply(request.CreateReply(packet=raw), raw)
    return raw[0]


def test_capacity_is_exact_across_two_hosts_and_cdrs_are_shared(two_hosts, pg_url):
    hosts = two_hosts
    requests = 8
    barrier = threading.Barrier(requests)
    replies: dict[int, object] = {}
    errors: list[str] = []

    def call(n: int):
        try:
            barrier.wait(10)
            replies[n] = ask(hosts[n % 2], gamma(n))
        except Exception as exc:  # reported below
            errors.append(f"{n}: {exc!r}")

    threads = [threading.Thread(target=call, args=(n,)) for n in range(requests)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [] and len(replies) == requests
    accepted = sorted(n for n, r in replies.items() if r.code == AccessAccept)
    rejected = [r for r in replies.values() if r.code == AccessReject]
    assert len(accepted) == 2, f"capacity 2 across both hosts, got {len(accepted)} accepts"
    assert len(rejected) == requests - 2
    assert {r["h323-return-code"][0] for r in rejected} == {"h323-return-code=3"}
    assert {r["Reply-Message"][0] for r in rejected} == {"client capacity reached"}
    # both hosts took part in answering
    # (the log line is written before the reply, but read from the pipe by another thread: wait for it)
    assert all(host.last_event("auth.decision") for host in hosts)

    engine = make_engine(pg_url)
    sessions = make_sessionmaker(engine)
    try:
        with sessions() as s:
            assert s.scalar(select(func.count()).select_from(ActiveCall).where(ActiveCall.client_id == 4)) == 2
        # One accepted call: Start through one host, its Stop through the other and again through the
        # first (a switch failing over): one CDR, and the channel is free for the next call.
        n = accepted[0]
        conf = CONF_ID.format(n)
        common = [("Acct-Session-Id", f"SCALE{n:04X}"), ("Called-Station-Id", "442071234567"),
                  ("Calling-Station-Id", "15551239999"), ("h323-remote-address", "h323-remote-address=127.0.0.1"),
                  ("h323-conf-id", conf), ("h323-call-origin", "h323-call-origin=answer")]
        stop = [("Acct-Status-Type", 2), ("Acct-Session-Time", 30),
                ("h323-disconnect-cause", "h323-disconnect-cause=10")]
        account(hosts[n % 2], [("Acct-Status-Type", 1)] + common)
        account(hosts[(n + 1) % 2], stop + common)
        account(hosts[n % 2], stop + common)
        with sessions() as s:
            rows = s.scalars(select(Cdr).where(Cdr.call_id == conf.split("=", 1)[1])).all()
            assert len(rows) == 1 and rows[0].duration == 30 and rows[0].account_id == 7
            assert s.scalar(select(func.count()).select_from(ActiveCall).where(ActiveCall.client_id == 4)) == 1
    finally:
        engine.dispose()
    third = ask(hosts[1], gamma(0x100))
    assert third.code == AccessAccept, "the channel freed by the Stop is usable from any host"


def acme_sip(n: int):
    return [("User-Name", "acme-sip"), ("Called-Station-Id", "442071234567"), ("h323-conf-id", CONF_ID.format(n))]


def test_admin_change_reaches_every_host_within_two_seconds(two_hosts, pg_url):
    hosts = two_hosts
    # each host polls with its own call id: re-asking refreshes that call's reservation, so the
    # polling itself never runs into Acme's capacity
    for i, host in enumerate(hosts):
        assert ask(host, acme_sip(0x200 + i), "s3cret-pass").code == AccessAccept
    changed = subprocess.run(
        [sys.executable, "-m", "radiusd", "account", "deactivate", "acme-sip", "--database-url", pg_url,
         "--actor", "scale-out-test"],
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=60, stdin=subprocess.DEVNULL)
    assert changed.returncode == 0, changed.stderr
    committed = time.monotonic()
    seen_after: dict[int, float] = {}
    while len(seen_after) < len(hosts) and time.monotonic() - committed < 5:
        for i, host in enumerate(hosts):
            if i in seen_after:
                continue
            reply = ask(host, acme_sip(0x200 + i), "s3cret-pass")
            if reply.code == AccessReject:
                assert reply["Reply-Message"] == ["originator disabled"]
                seen_after[i] = time.monotonic() - committed
        time.sleep(0.05)
    assert sorted(seen_after) == [0, 1], f"hosts that saw the change: {seen_after}"
    assert max(seen_after.values()) <= 2.0, f"seconds until each host applied the change: {seen_after}"
    for host in hosts:
        assert host.events("snapshot.loaded")
