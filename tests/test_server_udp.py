"""The server over real UDP (SQLite store with the demo seed): pyrad-built packets and radclient."""
from __future__ import annotations

import hashlib
import socket
import struct
import subprocess
import time

import pytest
from pyrad.client import Client
from pyrad.packet import (
    AccessAccept, AccessReject, AccessRequest, AccountingResponse, AcctPacket, AuthPacket, StatusServer,
)

from radius_packets import DICTIONARY, SECRET, acct_request
from radius_server import ServerProcess, exchange, seeded_store
from radiusd.commands.serve import demo_radclient_line

CONF_ID = "h323-conf-id=1A2B3C4D 00000000 00000000 000000{:02X}"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("udp")
    url = f"sqlite:///{tmp / 'store.sqlite3'}"
    seeded_store(url)
    srv = ServerProcess(url, tmp).wait_ready()
    yield srv
    assert srv.stop() == 0, "SIGTERM must stop the server cleanly (exit 0)"
    assert srv.events("server.stopped")


def _n(server):
    """Decisions expected in the log so far (one per answered, non-duplicate Access-Request)."""
    return server.counter('radiusd_auth_decisions_total{outcome="accept",reason="none"}') + sum(
        float(line.split()[-1]) for line in server.metrics().splitlines()
        if line.startswith('radiusd_auth_decisions_total{outcome="reject"'))


def request(attrs=(), password=None, secret=SECRET, ma=True, raw=None, id=None):
    pkt = AuthPacket(code=AccessRequest, id=id if id is not None else (int(time.monotonic_ns()) % 256),
                     secret=secret, dict=DICTIONARY)
    pkt.authenticator = pkt.CreateAuthenticator()
    if password is not None:
        pkt.AddAttribute("User-Password", pkt.PwCrypt(password))
    for name, value in attrs:
        pkt.AddAttribute(name, value)
    for code, values in (raw or {}).items():
        pkt[code] = values
    if ma:
        pkt.add_message_authenticator()
    return pkt, pkt.RequestPacket()


def decide(server, attrs, password=None, **kw):
    pkt, data = request(attrs, password, **kw)
    raw_reply = exchange(data, server.auth_port, source=kw.get("source"))
    assert raw_reply is not None, "no answer"
    reply = pkt.CreateReply(packet=raw_reply)
    assert pkt.VerifyReply(reply, raw_reply, enforce_ma=True)
    assert raw_reply[20] == 80, "Message-Authenticator must be the first attribute"
    return reply


def acme(called="442071234567", n=1, password="s3cret-pass"):
    return [("User-Name", "acme-sip"), ("Called-Station-Id", called), ("Calling-Station-Id", "15551230001"),
            ("h323-conf-id", CONF_ID.format(n))], password


def test_accept_for_login_account_with_credit_time(server):
    attrs, password = acme(n=1)
    reply = decide(server, attrs, password)
    assert reply.code == AccessAccept
    assert reply["h323-return-code"] == ["h323-return-code=0"]
    seconds = int(reply["h323-credit-time"][0].split("=")[1])
    assert 0 < seconds <= 7200 and reply["Session-Timeout"] == [seconds]
    assert reply["h323-currency"] == ["h323-currency=USD"]
    assert "xpgk-dst-number-out=442071234567" in reply["Cisco-AVPair"]
    decision = server.last_event("auth.decision", _n(server))
    assert decision["outcome"] == "accept" and decision["account"] == "acme-sip" and decision["nas"] == "localhost"
    assert "s3cret-pass" not in "\n".join(server.lines)


def test_accept_with_pyrad_client_over_ipv6(server):
    client = Client(server="::1", authport=server.auth_port, secret=SECRET, dict=DICTIONARY, enforce_ma=True)
    client.timeout, client.retries = 3, 1
    pkt = client.CreateAuthPacket(code=AccessRequest, User_Name="acme-sip")
    pkt["User-Password"] = pkt.PwCrypt("s3cret-pass")
    pkt.AddAttribute("Called-Station-Id", "4915112345678")
    pkt.AddAttribute("h323-conf-id", CONF_ID.format(2))
    pkt.add_message_authenticator()
    reply = client.SendPacket(pkt)
    assert reply.code == AccessAccept
    assert server.last_event("auth.decision", _n(server))["nas"] == "localhost6"


@pytest.mark.parametrize("attrs, password, code, message", [
    (acme(n=3)[0], "wrong-pass", 2, "invalid password"),
    ([("User-Name", "nobody"), ("Called-Station-Id", "442071234567")], "whatever", 1, "unknown account"),
    # Beta Voice (beta-gw, 10.9.0.0/16) has no money; the caller address comes from h323-remote-address
    ([("Called-Station-Id", "442071234567"), ("h323-remote-address", "h323-remote-address=10.9.1.1"),
      ("h323-conf-id", CONF_ID.format(4))], None, 4, None),
    # France's rate only starts in 2030; 7... has no rate at all
    (acme(called="33123456789", n=5)[0], "s3cret-pass", 9, "no rate for destination"),
    (acme(called="79161234567", n=6)[0], "s3cret-pass", 9, "no rate for destination"),
    ([("User-Name", "acme-sip"), ("h323-conf-id", CONF_ID.format(0x30))], "s3cret-pass", 11, None),
])
def test_each_reject_reason(server, attrs, password, code, message):
    reply = decide(server, attrs, password)
    assert reply.code == AccessReject
    assert reply["h323-return-code"] == [f"h323-return-code={code}"]
    if message:
        assert reply["Reply-Message"] == [message]
    assert server.last_event("auth.decision", _n(server))["h323_return_code"] == code


def test_capacity_reached_after_two_calls_of_gamma(server):
    def gamma(n):
        return [("Called-Station-Id", "442071234567"), ("h323-remote-address", "h323-remote-address=127.0.0.1"),
                ("h323-conf-id", CONF_ID.format(n))]
    assert decide(server, gamma(0x21)).code == AccessAccept
    assert decide(server, gamma(0x22)).code == AccessAccept
    third = decide(server, gamma(0x23))
    assert third.code == AccessReject and third["h323-return-code"] == ["h323-return-code=3"]
    # the same call asking again refreshes its own reservation instead of taking a third channel
    assert decide(server, gamma(0x21)).code == AccessAccept


def test_unknown_nas_is_dropped_and_counted(server):
    before = server.counter('radiusd_packets_dropped_total{port="auth",reason="unknown_nas"}')
    _, data = request(*acme(n=7))
    assert exchange(data, server.auth_port, source="127.0.0.3", timeout=0.5) is None
    assert server.counter('radiusd_packets_dropped_total{port="auth",reason="unknown_nas"}') == before + 1
    deadline = time.monotonic() + 3
    while not any(e["source"] == "127.0.0.3" and e["reason"] == "unknown_nas" for e in server.events("packet.dropped")):
        assert time.monotonic() < deadline, "no log line for the dropped packet"
        time.sleep(0.05)


def test_missing_message_authenticator_is_dropped(server):
    # the demo NAS is `auto`: once it has sent a Message-Authenticator, requests without one are dropped
    assert decide(server, *acme(n=8)).code == AccessAccept
    _, data = request(*acme(n=8), ma=False)
    assert exchange(data, server.auth_port, timeout=0.5) is None
    assert server.counter('radiusd_packets_dropped_total{port="auth",reason="missing_message_authenticator"}') >= 1


def test_wrong_secret_is_dropped(server):
    _, data = request(*acme(n=9), secret=b"not-the-secret")
    assert exchange(data, server.auth_port, timeout=0.5) is None
    assert server.counter('radiusd_packets_dropped_total{port="auth",reason="bad_message_authenticator"}') >= 1
    data, _ = acct_request([("Acct-Status-Type", 1), ("Acct-Session-Id", "x")], secret=b"not-the-secret")
    assert exchange(data, server.acct_port, timeout=0.5) is None
    assert server.counter('radiusd_packets_dropped_total{port="acct",reason="bad_authenticator"}') >= 1


def test_garbage_is_dropped_without_hurting_the_server(server):
    for junk in (b"", b"\x01", b"\x01\x02\x00\x10" + b"A" * 16, b"\x01\x02\x00\x20" + b"A" * 16 + b"\x50\x01" + b"x" * 10,
                 b"\x2a" * 40):
        assert exchange(junk, server.auth_port, timeout=0.2) is None
    assert decide(server, *acme(n=10)).code == AccessAccept
    assert server.proc.poll() is None
    assert not [line for line in server.lines if "Traceback" in line]


def test_malformed_requests_are_dropped_counted_and_logged(server):
    """RFC 2865 limits: 4,096 octets, attributes inside the packet, §5.44 counts (issue 11)."""
    before = server.counter('radiusd_packets_dropped_total{port="auth",reason="malformed"}')
    attrs, password = acme(n=12)
    filler = [("Cisco-AVPair", "x-filler=" + "f" * 230)] * 18       # signed, ~4,500 octets
    _, oversized = request(attrs + filler, password)
    assert len(oversized) > 4096
    _, data = request(*acme(n=13))
    overrun = data + b"\x1e\x30" + b"4420"
    overrun = overrun[:2] + len(overrun).to_bytes(2, "big") + overrun[4:]
    _, two_passwords = request(attrs, password, raw={2: [b"p" * 16, b"q" * 16]})
    for junk in (oversized, overrun, two_passwords):
        assert exchange(junk, server.auth_port, timeout=0.3) is None
    assert server.counter('radiusd_packets_dropped_total{port="auth",reason="malformed"}') == before + 3
    deadline = time.monotonic() + 3
    while not any(e["reason"] == "malformed" and "longer than the RADIUS limit" in e.get("detail", "")
                  for e in server.events("packet.dropped")):
        assert time.monotonic() < deadline, "no log line for the oversized request"
        time.sleep(0.05)
    acct, _ = acct_request([("Acct-Status-Type", 1), ("Acct-Session-Id", "over-1")])
    acct_overrun = acct + b"\x1f\x09123"
    acct_overrun = acct_overrun[:2] + len(acct_overrun).to_bytes(2, "big") + acct_overrun[4:]
    assert exchange(acct_overrun, server.acct_port, timeout=0.3) is None
    assert server.counter('radiusd_packets_dropped_total{port="acct",reason="malformed"}') >= 1


def test_retransmission_gets_the_same_bytes_without_a_second_decision(server):
    _, data = request(*acme(n=11))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        first = exchange(data, server.auth_port, sock=sock)
        decisions = _n(server)     # counted before the reply is sent: exact here
        second = exchange(data, server.auth_port, sock=sock)
    assert first is not None and first == second
    assert _n(server) == decisions
    assert server.counter('radiusd_duplicates_total{kind="replayed",port="auth"}') >= 1


@pytest.mark.parametrize("port_name, reply_code", [("auth_port", AccessAccept), ("acct_port", AccountingResponse)])
def test_status_server_answered_on_both_ports(server, port_name, reply_code):
    pkt = AcctPacket(code=StatusServer, secret=SECRET, dict=DICTIONARY)
    data = pkt.RequestPacket()   # random authenticator + Message-Authenticator (RFC 5997)
    raw_reply = exchange(data, getattr(server, port_name))
    assert raw_reply is not None and raw_reply[0] == reply_code
    assert pkt.VerifyReply(pkt.CreateReply(packet=raw_reply), raw_reply, enforce_ma=True)
    # unknown NAS: silence
    assert exchange(AcctPacket(code=StatusServer, secret=SECRET, dict=DICTIONARY).RequestPacket(),
                    getattr(server, port_name), source="127.0.0.3", timeout=0.3) is None


def test_status_server_without_message_authenticator_is_dropped(server):
    pkt = AuthPacket(code=StatusServer, secret=SECRET, dict=DICTIONARY)
    pkt.authenticator = pkt.CreateAuthenticator()
    assert exchange(pkt.RequestPacket(), server.auth_port, timeout=0.3) is None


def test_cisco_accounting_start_stop_answered(server):
    attrs, password = acme(n=12)
    assert decide(server, attrs, password).code == AccessAccept
    common = [("Acct-Session-Id", "0000ABCD"), ("User-Name", "acme-sip"), ("Called-Station-Id", "442071234567"),
              ("Calling-Station-Id", "15551230001"), ("h323-conf-id", CONF_ID.format(12)),
              ("h323-call-origin", "h323-call-origin=answer"),
              ("h323-setup-time", "h323-setup-time=20:24:19.703 GMT Wed Nov 25 2026")]
    for status, extra in ((1, []), (2, [("Acct-Session-Time", 30), ("h323-disconnect-cause", "h323-disconnect-cause=10"),
                                        ("h323-connect-time", "h323-connect-time=20:24:21.000 GMT Wed Nov 25 2026"),
                                        ("h323-disconnect-time", "h323-disconnect-time=20:24:51.000 GMT Wed Nov 25 2026")])):
        data, _ = acct_request([("Acct-Status-Type", status)] + common + extra)
        raw_reply = exchange(data, server.acct_port, timeout=5)
        assert raw_reply is not None and raw_reply[0] == AccountingResponse
        request_pkt = AcctPacket(code=4, id=data[1], secret=SECRET, authenticator=data[4:20], dict=DICTIONARY)
        assert request_pkt.VerifyReply(request_pkt.CreateReply(packet=raw_reply), raw_reply)
    server.last_event("accounting.recorded", 2)
    assert [e["status"] for e in server.events("accounting.recorded")][-2:] == ["start", "stop"]


def test_accounting_retransmission_is_answered_again(server):
    data, _ = acct_request([("Acct-Status-Type", 3), ("Acct-Session-Id", "0000BEEF"), ("Acct-Session-Time", 60),
                            ("h323-conf-id", CONF_ID.format(13)), ("h323-call-origin", "answer")])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        first = exchange(data, server.acct_port, sock=sock, timeout=5)
        second = exchange(data, server.acct_port, sock=sock, timeout=5)
    assert first is not None and first == second and first[0] == AccountingResponse


def _digest_response(user, realm, password, method, uri, nonce, nc, cnonce, qop="auth"):
    ha1 = hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()
    ha2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()
    return hashlib.md5(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}".encode()).hexdigest()


def _sub(t, text):
    return bytes([t, len(text) + 2]) + text.encode()


def test_kamailio_style_digest_request_and_accounting(server):
    uri = "sip:442071234567@sip.example.com"
    response = _digest_response("acme-sip", "sip.example.com", "s3cret-pass", "INVITE", uri, "n0nce", "00000001", "c0ffee")
    attrs = [("User-Name", "acme-sip"), ("Service-Type", 15), ("Called-Station-Id", uri),
             ("Calling-Station-Id", "sip:15551230001@10.0.0.1"), ("Sip-Uri-User", "442071234567"),
             ("Cisco-AVPair", "call-id=kam-1@10.0.0.1"), ("NAS-Identifier", "kamailio")]
    raw = {206: [response.encode()],
           207: [_sub(10, "acme-sip"), _sub(1, "sip.example.com"), _sub(2, "n0nce"), _sub(4, uri),
                 _sub(3, "INVITE"), _sub(5, "auth"), _sub(9, "00000001"), _sub(8, "c0ffee")]}
    pkt, data = request(attrs, raw=raw)
    raw_reply = exchange(data, server.auth_port, source="127.0.0.2")
    reply = pkt.CreateReply(packet=raw_reply)
    assert reply.code == AccessAccept, reply.get("Reply-Message")
    seconds = int(reply["h323-credit-time"][0].split("=")[1])
    assert reply["SIP-AVP"] == [f"session_max_time#{seconds}"]
    assert server.last_event("auth.decision", _n(server))["nas"] == "kamailio-lab"
    # Kamailio accounting: private 101-105, Event-Timestamp as a float string, Acct-Session-Id = Call-ID
    data, _ = acct_request([("Acct-Status-Type", 1), ("Service-Type", 15), ("Acct-Session-Id", "kam-1@10.0.0.1"),
                            ("Calling-Station-Id", "sip:15551230001@10.0.0.1"), ("Called-Station-Id", uri)],
                           raw={101: [struct.pack("!I", 1)], 102: [struct.pack("!I", 200)],
                                104: [b"to-tag"], 105: [b"from-tag"], 55: [f"{time.time():17.6f}".encode()]})
    raw_reply = exchange(data, server.acct_port, source="127.0.0.2", timeout=5)
    assert raw_reply is not None and raw_reply[0] == AccountingResponse


def _radclient(radclient, server, attrs: str, secret="testing123"):
    return subprocess.run([radclient, "-x", "-r", "1", "-t", "3", f"127.0.0.1:{server.auth_port}", "auth", secret],
                          input=attrs, capture_output=True, text=True, timeout=30)


def test_radclient_demo_line_gets_accept_with_credit_time(server, radclient):
    line = demo_radclient_line(server.auth_port)
    out = subprocess.run(["sh", "-c", line.replace("radclient", radclient, 1)], capture_output=True, text=True, timeout=30)
    assert "Received Access-Accept" in out.stdout, out.stdout + out.stderr
    assert 'h323-credit-time = "h323-credit-time=' in out.stdout
    assert 'h323-return-code = "h323-return-code=0"' in out.stdout
    # radclient prints the reply's attributes in wire order: Message-Authenticator first
    received = out.stdout.split("Received Access-Accept", 1)[1].splitlines()[1].strip()
    assert received.startswith("Message-Authenticator = 0x")


def test_radclient_reject_with_return_code(server, radclient):
    out = _radclient(radclient, server, 'User-Name = acme-sip, User-Password = nope, Called-Station-Id = 442071234567, '
                                        'Message-Authenticator = 0x00')
    assert "Received Access-Reject" in out.stdout, out.stdout + out.stderr
    assert 'h323-return-code = "h323-return-code=2"' in out.stdout
    assert 'Reply-Message = "invalid password"' in out.stdout


def test_radclient_wrong_secret_gets_no_answer(server, radclient):
    out = _radclient(radclient, server, "User-Name = acme-sip, User-Password = s3cret-pass, Message-Authenticator = 0x00",
                     secret="wrong")
    assert "Received" not in out.stdout
    assert out.returncode != 0


def test_metrics_and_health(server):
    status, health = server.health()
    assert status == 200 and health["status"] == "ok" and health["store"] == "up"
    assert health["snapshot_version"] >= 1 and "spool_depth" in health
    text = server.metrics()
    assert 'radiusd_auth_decisions_total{outcome="accept",reason="none"}' in text
    assert "radiusd_snapshot_version" in text and "radiusd_store_up 1" in text
