"""Message-Authenticator policy per NAS (yes | no | auto, default auto): the pure rule, the admin
CLI, and over real UDP the learned state shared by workers and kept across restarts."""
from __future__ import annotations

import json
import time

import pytest
from pyrad.packet import AccessAccept, AccessRequest, AuthPacket

from radius_packets import DICTIONARY, SECRET
from radius_server import ServerProcess, exchange, seeded_store
from radiusd.cli import main
from radiusd.core import message_authenticator as ma

# --- the rule (plain data) -------------------------------------------------------------------

ACCEPT, LEARN = ma.Verdict(True), ma.Verdict(True, learn=True)


@pytest.mark.parametrize("policy, learned, has_ma, ma_valid, proxy_state, expected", [
    # a Message-Authenticator present is always verified
    ("yes", False, True, False, False, ma.Verdict(False, ma.BAD)),
    ("no", False, True, False, False, ma.Verdict(False, ma.BAD)),
    ("auto", False, True, False, False, ma.Verdict(False, ma.BAD)),
    ("auto", True, True, False, True, ma.Verdict(False, ma.BAD)),
    # yes: required
    ("yes", False, False, False, False, ma.Verdict(False, ma.MISSING)),
    ("yes", False, True, True, True, ACCEPT),
    # no: never required, but Proxy-State without it is the BlastRADIUS signature
    ("no", False, False, False, False, ACCEPT),
    ("no", True, False, False, False, ACCEPT),
    ("no", False, False, False, True, ma.Verdict(False, ma.PROXY_STATE)),
    ("no", False, True, True, False, ACCEPT),                  # "no" never learns
    # auto, not learned yet: like no; the first valid one is learned
    ("auto", False, False, False, False, ACCEPT),
    ("auto", False, False, False, True, ma.Verdict(False, ma.PROXY_STATE)),
    ("auto", False, True, True, False, LEARN),
    ("auto", False, True, True, True, LEARN),
    # auto, learned: like yes
    ("auto", True, False, False, False, ma.Verdict(False, ma.MISSING)),
    ("auto", True, False, False, True, ma.Verdict(False, ma.MISSING)),
    ("auto", True, True, True, False, ACCEPT),
])
def test_policy_decides_accept_drop_or_learn(policy, learned, has_ma, ma_valid, proxy_state, expected):
    assert ma.check(policy, learned, has_ma, ma_valid, proxy_state) == expected


def test_required_now():
    assert [ma.required(p, learned) for p in ma.POLICIES for learned in (False, True)] == \
        [True, True, False, False, False, True]
    assert ma.DEFAULT_POLICY == "auto"


# --- admin CLI ---------------------------------------------------------------------------------

def _cli(capsys, url, *argv):
    code = main([*argv, "--database-url", url, "--actor", "ops"])
    out, err = capsys.readouterr()
    return code, out, err


def test_nas_add_defaults_to_auto_and_explains_the_policy(sqlite_url, capsys):
    with pytest.raises(SystemExit):
        main(["nas", "add", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--message-authenticator yes|no|auto" in help_text
    assert "auto (default)" in help_text and "Kamailio" in help_text and "Proxy-State" in help_text

    assert _cli(capsys, sqlite_url, "db", "init")[0] == 0
    code, out, err = _cli(capsys, sqlite_url, "nas", "add", "sw1", "--address", "192.0.2.1", "--secret", "s1-secret",
                          "--json")
    assert code == 0, err
    record = json.loads(out)
    assert (record["message_authenticator"], record["message_authenticator_learned"]) == ("auto", None)
    assert "until the NAS sends one" in record["message_authenticator_now"]

    code, out, err = _cli(capsys, sqlite_url, "nas", "add", "sw2", "--address", "192.0.2.2", "--secret", "s2-secret",
                          "--message-authenticator", "yes", "--json")
    assert code == 0 and json.loads(out)["message_authenticator"] == "yes"
    # the former boolean flag still works and means the policy of that name
    code, out, err = _cli(capsys, sqlite_url, "nas", "update", "sw2", "--require-message-authenticator", "no", "--json")
    assert code == 0 and json.loads(out)["message_authenticator"] == "no"

    code, out, err = _cli(capsys, sqlite_url, "nas", "update", "sw2", "--message-authenticator", "sometimes")
    assert code == 2 and err.strip() == \
        "radiusd: error: message_authenticator: expected one of yes, no, auto (sometimes)"
    code, out, err = _cli(capsys, sqlite_url, "nas", "update", "sw2", "--message-authenticator", "yes",
                          "--require-message-authenticator", "yes")
    assert code == 2 and "give only --message-authenticator" in err


# --- over UDP: learn, share between workers, survive a restart, reset -------------------------

CONF = "h323-conf-id=5A5A0000 00000000 00000000 {:08X}"


def _request(n: int, ma_attr: bool, proxy_state: bool = False) -> bytes:
    pkt = AuthPacket(code=AccessRequest, id=n % 256, secret=SECRET, dict=DICTIONARY)
    pkt.authenticator = pkt.CreateAuthenticator()
    pkt.AddAttribute("User-Password", pkt.PwCrypt("s3cret-pass"))
    for name, value in (("User-Name", "acme-sip"), ("Called-Station-Id", "442071234567"),
                        ("Calling-Station-Id", "15551230001"), ("h323-conf-id", CONF.format(n))):
        pkt.AddAttribute(name, value)
    if proxy_state:
        pkt.AddAttribute("Proxy-State", b"forged-by-a-man-in-the-middle")
    if ma_attr:
        pkt.add_message_authenticator()
    return pkt.RequestPacket()


def _answered(server, n, **kw) -> bool:
    reply = exchange(_request(n, **kw), server.auth_port, timeout=0.7)
    assert reply is None or reply[0] == AccessAccept
    return reply is not None


def _gauge(server, name: str) -> float:
    for line in server.metrics().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


def _wait(condition, what: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_auto_learns_once_shares_it_between_workers_and_keeps_it_across_restarts(store_url, tmp_path, capsys):
    seeded_store(store_url)   # the demo NAS "localhost" (127.0.0.1) is left at its default: auto
    learned_gauge = "radiusd_nas_message_authenticator_learned"
    server = ServerProcess(store_url, tmp_path, workers=2, name="w2").wait_ready(workers=2)
    try:
        # a switch that cannot send Message-Authenticator is served ...
        assert _answered(server, 1, ma_attr=False)
        # ... but never a request carrying Proxy-State without it
        assert not _answered(server, 2, ma_attr=False, proxy_state=True)
        _wait(lambda: [e for e in server.events("packet.dropped")
                       if e["reason"] == "proxy_state_without_message_authenticator"], "the drop is logged")
        assert _gauge(server, learned_gauge) == 0 and not server.events("snapshot.loaded")

        # the NAS sends one: the worker that saw it requires it at once and stores it; the other
        # worker reads it with its next store poll (about a second), and no worker is replaced
        assert _answered(server, 3, ma_attr=True)
        _wait(lambda: [e["nas"] for e in server.events("nas.message_authenticator_shared")] == ["localhost"],
              "the other worker reads the learned state from the store")
        assert not server.events("supervisor.worker_replaced") and not server.events("snapshot.loaded")
        # workers report their gauges to the one /metrics endpoint about once a second
        _wait(lambda: _gauge(server, learned_gauge) == 1, "the learned gauge reaches /metrics")
        for n in range(4, 10):   # fresh source ports: the kernel spreads them over both workers
            assert not _answered(server, n, ma_attr=False), f"request {n} without Message-Authenticator answered"
        assert _answered(server, 10, ma_attr=True)
    finally:
        assert server.stop() == 0
    # one log line per NAS for each way it went (read once the server has stopped: all lines are in)
    learned_lines = [e for e in server.events("nas.message_authenticator") if e["learned"]]
    assert [(e["nas"], e["policy"]) for e in learned_lines] == [("localhost", "auto")]
    assert [e["nas"] for e in server.events("nas.message_authenticator") if not e["learned"]] == ["localhost"]

    code, out, err = _cli(capsys, store_url, "nas", "show", "localhost", "--json")
    shown = json.loads(out)
    assert code == 0 and shown["message_authenticator"] == "auto" and shown["message_authenticator_learned"]
    assert shown["message_authenticator_now"].startswith("required")

    server = ServerProcess(store_url, tmp_path, name="again").wait_ready()
    try:
        assert _gauge(server, learned_gauge) == 1 and _gauge(server, "radiusd_nas_message_authenticator_required") == 1
        assert not _answered(server, 11, ma_attr=False)      # remembered across the restart
        # the operator replaces the switch by one that cannot send it: setting the policy again forgets
        assert _cli(capsys, store_url, "nas", "update", "localhost", "--message-authenticator", "auto")[0] == 0
        _wait(lambda: _gauge(server, learned_gauge) == 0, "the reset reaches the running server")
        assert _answered(server, 12, ma_attr=False)
        # and `yes` requires it from the first request
        assert _cli(capsys, store_url, "nas", "update", "localhost", "--message-authenticator", "yes")[0] == 0
        _wait(lambda: _gauge(server, "radiusd_nas_message_authenticator_required") == 1, "policy yes loaded")
        assert not _answered(server, 13, ma_attr=False)
        assert _gauge(server, learned_gauge) == 0
    finally:
        assert server.stop() == 0
