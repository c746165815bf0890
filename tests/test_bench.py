"""`radiusd bench` against a small real RADIUS responder (pyrad decode + reply over UDP)."""
from __future__ import annotations

import select
import socket
import threading

import pytest
from pyrad import packet as rp

from radiusd.commands.bench import check_target
from radiusd.bench.engine import BenchOptions, run_bench
from radiusd.bench.population import load_users, write_users
from radiusd.bench.stats import percentile
from radiusd.bench.wire import LoadAccount
from radiusd.cli import main as cli_main
from radiusd.cli_output import UserError
from radiusd.radius.codec import hide_password as pap_encrypt
from radiusd.radius.codec import load_dictionary as dictionary

SECRET = b"bench-secret"


class Responder:
    """A RADIUS server on two ephemeral loopback ports that decodes every request with pyrad.

    Access-Request: verifies Message-Authenticator, decrypts the PAP password and accepts the
    logins in `users` with the right password, and IP accounts whose h323-remote-address is in
    `addresses`. Accounting-Request: verifies the Request Authenticator and answers.
    `drop_first`: ignores the first copy of every request (by Identifier + authenticator).
    `silent`: never answers.
    """

    def __init__(self, users=None, addresses=(), drop_first=False, silent=False):
        self.users = users or {}
        self.addresses = set(addresses)
        self.drop_first = drop_first
        self.silent = silent
        self.dict = dictionary()
        self.seen = set()
        self.received = {"auth": 0, "acct": 0, "copies": 0}
        self.acct = []   # (status, session id, conf id, session time) per distinct request
        self.bad = []
        self.socks = {}
        for kind in ("auth", "acct"):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            s.bind(("127.0.0.1", 0))
            s.settimeout(0.05)
            self.socks[kind] = s
        self.auth_port = self.socks["auth"].getsockname()[1]
        self.acct_port = self.socks["acct"].getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)
        for s in self.socks.values():
            s.close()

    def _run(self):
        kinds = {s: k for k, s in self.socks.items()}
        while not self._stop.is_set():
            ready, _, _ = select.select(list(kinds), [], [], 0.05)
            for sock in ready:
                try:
                    data, addr = sock.recvfrom(4096)
                except (socket.timeout, BlockingIOError):
                    continue
                self._handle(kinds[sock], sock, data, addr)

    def _handle(self, kind, sock, data, addr):
        self.received[kind] += 1
        key = (addr, data[1], data[4:20])
        first = key not in self.seen
        self.seen.add(key)
        if not first:
            self.received["copies"] += 1
        if self.silent or (self.drop_first and first):
            return
        if kind == "auth":
            pkt = rp.AuthPacket(packet=data, secret=SECRET, dict=self.dict)
            if not pkt.message_authenticator or not pkt.verify_message_authenticator():
                self.bad.append("message-authenticator")
                return
            ok = False
            if "User-Password" in pkt:
                name = pkt["User-Name"][0]
                ok = self.users.get(name) == pkt.PwDecrypt(pkt["User-Password"][0])
            elif "h323-remote-address" in pkt:
                ok = pkt["h323-remote-address"][0].split("=", 1)[1] in self.addresses
            reply = pkt.CreateReply()
            reply.code = rp.AccessAccept if ok else rp.AccessReject
        else:
            pkt = rp.AcctPacket(packet=data, secret=SECRET, dict=self.dict)
            if not pkt.VerifyAcctRequest():
                self.bad.append("request-authenticator")
                return
            if first:
                self.acct.append((pkt["Acct-Status-Type"][0], pkt["Acct-Session-Id"][0],
                                  pkt["h323-conf-id"][0], pkt.get("Acct-Session-Time", [None])[0]))
            reply = pkt.CreateReply()
        sock.sendto(reply.ReplyPacket(), addr)


def options(resp, mode, accounts, **kw):
    kw.setdefault("count", 100)
    kw.setdefault("timeout", 0.3)
    kw.setdefault("retries", 1)
    return BenchOptions(mode=mode, accounts=accounts, secret=SECRET, auth_port=resp.auth_port,
                        acct_port=resp.acct_port, **kw)


ALICE = LoadAccount("login", "alice", "good-pass", "4420")
MALLORY = LoadAccount("login", "mallory", "wrong-pass", "49")
GATEWAY = LoadAccount("ip", "127.0.0.8/30", "", "777#44")


def test_percentile_of_known_data():
    values = list(range(1, 101))  # 1..100
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile(values, 0) == 1 and percentile(values, 100) == 100
    assert percentile([10.0], 95) == 10.0
    assert percentile([1.0, 3.0], 50) == 2.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile(values, 101)


def test_pap_hiding_matches_pyrad():
    pkt = rp.AuthPacket(secret=SECRET, authenticator=bytes(range(16)), dict=dictionary())
    for password in (b"", b"s3cret-pass", b"x" * 16, b"y" * 33):
        assert pap_encrypt(password, SECRET, bytes(range(16))) == pkt.PwCrypt(password)


def test_auth_counts_accepts_and_rejects():
    with Responder(users={"alice": "good-pass"}, addresses={"127.0.0.9", "127.0.0.10"}) as resp:
        result = run_bench(options(resp, "auth", [ALICE, MALLORY, GATEWAY], count=300))
    auth = result["by_kind"]["auth"]
    # round robin over the population: alice and the gateway accepted, mallory rejected
    assert auth["sent"] == 300 and auth["responses"] == 300
    assert auth["accepts"] == 200 and auth["rejects"] == 100
    assert result["requests"]["lost"] == 0 and result["requests"]["retransmits"] == 0
    lat = auth["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert resp.bad == []
    assert result["generator"]["cpu_pct_of_wall"] is not None


def test_ip_account_varies_remote_address_within_its_network():
    acc = LoadAccount("ip", "10.1.0.0/29")
    assert [acc.caller_address(i) for i in range(7)] == [f"10.1.0.{i}" for i in (1, 2, 3, 4, 5, 6, 1)]
    assert LoadAccount("ip", "10.2.3.4").caller_address(5) == "10.2.3.4"


def test_calls_mode_sends_auth_start_stop_with_unique_sessions():
    with Responder(users={"alice": "good-pass"}) as resp:
        result = run_bench(options(resp, "calls", [ALICE], count=50, legs=2))
    assert result["calls"]["completed"] == 50
    kinds = result["by_kind"]
    assert kinds["auth"]["accepts"] == 50
    assert kinds["acct-start"]["acct_responses"] == 100 and kinds["acct-stop"]["acct_responses"] == 100
    starts = [a for a in resp.acct if a[0] == "Start"]
    stops = [a for a in resp.acct if a[0] == "Stop"]
    assert len({s[1] for s in starts}) == 100                    # unique Acct-Session-Id per leg
    assert len({s[2] for s in starts}) == 50                     # one h323-conf-id per call, both legs
    assert {s[1] for s in stops} == {s[1] for s in starts}
    assert all(s[3] and s[3] >= 1 for s in stops)               # Stops carry Acct-Session-Time
    assert resp.bad == []


def test_rejected_call_sends_no_accounting():
    with Responder(users={}) as resp:
        result = run_bench(options(resp, "calls", [MALLORY], count=20))
    assert result["calls"]["rejected"] == 20 and result["calls"]["completed"] == 0
    assert resp.received["acct"] == 0


def test_retransmits_when_the_first_copy_is_dropped():
    with Responder(users={"alice": "good-pass"}, drop_first=True) as resp:
        result = run_bench(options(resp, "acct", [ALICE], count=10, timeout=0.1, retries=2))
    r = result["requests"]
    assert r["responses"] == 20 and r["lost"] == 0
    assert r["retransmits"] == 20 and r["timeouts"] == 20
    assert resp.received["copies"] == 20     # the retransmission is the same packet
    assert result["sessions"]["completed"] == 10


def test_lost_when_the_server_never_answers():
    with Responder(silent=True) as resp:
        result = run_bench(options(resp, "auth", [ALICE], count=5, timeout=0.05, retries=1))
    r = result["requests"]
    assert r["responses"] == 0 and r["lost"] == 5 and r["retransmits"] == 5
    assert result["by_kind"]["auth"]["latency_ms"]["p50"] is None


def test_rate_mode_and_duration_stop_by_themselves():
    with Responder(users={"alice": "good-pass"}) as resp:
        result = run_bench(options(resp, "auth", [ALICE], count=None, duration=0.5, rate=200, window=64))
    # about 100 requests; bounds are loose because the machine is shared
    assert 40 <= result["requests"]["sent"] <= 110
    assert result["requests"]["lost"] == 0


def test_two_generator_processes_split_the_count():
    with Responder(users={"alice": "good-pass"}) as resp:
        result = run_bench(options(resp, "auth", [ALICE], count=101), procs=2)
    assert result["by_kind"]["auth"]["accepts"] == 101
    assert result["generator"]["procs"] == 2


@pytest.mark.parametrize("server", ["10.0.0.1", "192.0.2.7", "2001:db8::1", "example.com"])
def test_refuses_non_loopback_target(server):
    with pytest.raises(UserError, match="server"):
        check_target(server, allow_remote=False)


def test_loopback_targets_accepted():
    assert check_target("127.0.0.1", False) == "127.0.0.1"
    assert check_target("::1", False) == "::1"
    assert check_target("localhost", False) == "127.0.0.1"
    assert check_target("10.0.0.1", True) == "10.0.0.1"


def test_cli_refuses_remote_target_with_one_line(capsys):
    assert cli_main(["bench", "auth", "--server", "10.0.0.1", "--count", "1"]) == 2
    err = capsys.readouterr().err
    assert "server: 10.0.0.1 is not a loopback address" in err


def test_cli_runs_with_users_file_and_json(tmp_path, capsys):
    users = tmp_path / "users.csv"
    write_users(str(users), [("login", "alice", "good-pass", "44"), ("ip", "127.0.0.5", "", "1")])
    with Responder(users={"alice": "good-pass"}, addresses={"127.0.0.5"}) as resp:
        rc = cli_main(["bench", "auth", "--users", str(users), "--count", "40", "--json", "--quiet",
                       "--secret", SECRET.decode(), "--auth-port", str(resp.auth_port)])
    assert rc == 0
    import json

    out = json.loads(capsys.readouterr().out)
    assert out["by_kind"]["auth"]["accepts"] == 40
    assert SECRET.decode() not in json.dumps(out)


def test_users_file_errors_name_line_and_field(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("kind,id,password,called\nlogin,alice,pw,44\nip,not-an-ip,,44\n")
    with pytest.raises(ValueError, match="line 3: id: 'not-an-ip'"):
        load_users(str(bad))
    bad.write_text("radius,alice,pw,44\n")
    with pytest.raises(ValueError, match="line 1: kind"):
        load_users(str(bad))
    assert cli_main(["bench", "auth", "--users", str(tmp_path / "missing.csv"), "--count", "1"]) == 2


def test_more_outstanding_than_identifiers_waits_for_free_ids():
    # one socket has 256 Identifiers; a window of 300 must queue, not reuse an id in flight
    with Responder(users={"alice": "good-pass"}) as resp:
        result = run_bench(options(resp, "auth", [ALICE], count=400, window=300, sockets=1, timeout=2.0))
    assert result["by_kind"]["auth"]["accepts"] == 400
    assert result["stray_replies"] == 0 and result["requests"]["lost"] == 0


def test_progress_line_every_second():
    import io

    out = io.StringIO()
    with Responder(users={"alice": "good-pass"}) as resp:
        run_bench(options(resp, "auth", [ALICE], count=None, duration=1.2, rate=50, progress=out))
    lines = out.getvalue().splitlines()
    assert lines and lines[0].startswith("[bench auth]") and "answered" in lines[0]


def test_packets_decode_as_a_cisco_gateway_would_send_them():
    from radiusd.bench.wire import PacketFactory

    f = PacketFactory(SECRET)
    raw, _ = f.access_request(7, GATEWAY, 0, "AAAA0001 00000000 00000001 0000B3C4")
    pkt = rp.AuthPacket(packet=raw, secret=SECRET, dict=dictionary())
    assert pkt.id == 7 and pkt.verify_message_authenticator()
    assert raw[20] == 80                                   # Message-Authenticator first
    assert pkt["User-Name"] == ["127.0.0.9"]
    assert pkt["h323-remote-address"] == ["h323-remote-address=127.0.0.9"]
    assert pkt["h323-conf-id"] == ["h323-conf-id=AAAA0001 00000000 00000001 0000B3C4"]
    assert pkt["Called-Station-Id"][0].startswith("777#44") and len(pkt["Called-Station-Id"][0]) == 12
    assert pkt["NAS-IP-Address"] == ["127.0.0.1"] and "User-Password" not in pkt

    raw, _ = f.accounting_request(9, ALICE, 3, "X", "sess-3", 2, "originate", 42, 1_700_000_000.0)
    acct = rp.AcctPacket(packet=raw, secret=SECRET, dict=dictionary())
    assert acct.VerifyAcctRequest()
    assert acct["Acct-Status-Type"] == ["Stop"] and acct["Acct-Session-Time"] == [42]
    assert acct["Acct-Session-Id"] == ["sess-3"] and acct["User-Name"] == ["alice"]
    assert acct["h323-call-origin"] == ["h323-call-origin=originate"]
    assert acct["h323-disconnect-cause"] == ["h323-disconnect-cause=10"]
    assert acct["h323-disconnect-time"] == ["h323-disconnect-time=22:13:20.000 UTC Tue Nov 14 2023"]
    assert acct["Event-Timestamp"] == [1_700_000_000]
