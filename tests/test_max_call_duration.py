"""Max call duration per account and per client: the Accept answers the smallest of account,
client and `[limits] max_call_duration` (and what the money buys), and a prepaid client's
balance holds only that worst case per call, so a smaller limit carries more simultaneous calls."""
from __future__ import annotations

from decimal import Decimal as D

import pytest
from pyrad.packet import AccessAccept, AccessReject, AccessRequest, AuthPacket

from radius_packets import DICTIONARY, SECRET
from radius_server import ServerProcess, exchange
from radiusd.cli import main
from radiusd.core.authorize import admit, call_duration_cap
from radiusd.core.decision import Accept, CallPlan, Reject, Usage
from radiusd.core.reasons import RejectReason as R
from radiusd.core.snapshot import AccountInfo, ClientInfo, Rate, build_rate_table

# $0.60 a minute, per second: the README's example
RATE = Rate(1, "44", D("0.60"), minimum_seconds=1, interval_seconds=1)
TABLE = build_rate_table(1, "retail", "USD", [RATE])


def plan(account_limit=None, client_limit=None, credit_limit=D("0")) -> CallPlan:
    client = ClientInfo(1, "acme", credit_limit=credit_limit, orig_rate_table_id=1, max_call_duration=client_limit)
    account = AccountInfo(1, 1, "acme-sip", "name", password="pw", max_call_duration=account_limit)
    return CallPlan(1, account, client, "442071234567", None, "c1", TABLE, RATE, None)


# --- the rule (plain data) -------------------------------------------------------------------

@pytest.mark.parametrize("account, client, configured, expected", [
    (None, None, 7200, 7200),
    (600, None, 7200, 600),
    (None, 600, 7200, 600),
    (900, 600, 7200, 600),
    (300, 600, 7200, 300),
    (900, 600, 120, 120),          # the configured limit still caps every call
])
def test_the_smallest_limit_wins(account, client, configured, expected):
    assert call_duration_cap(account, client, configured) == expected
    accept = admit(plan(account, client), Usage(D("1000"), 0, 0, D("0")), configured)
    assert isinstance(accept, Accept) and accept.max_duration == expected
    assert accept.max_cost == D("0.60") * expected / 60        # what the reservation holds


def test_money_still_shortens_a_call_below_the_limit():
    accept = admit(plan(account_limit=600), Usage(D("2.00"), 0, 0, D("0")), 7200)
    assert (accept.max_duration, accept.max_cost) == (200, D("2.000000"))


def test_unlimited_credit_gets_the_smallest_limit_too():
    accept = admit(plan(client_limit=900, credit_limit=None), Usage(D("-50"), 0, 0, D("0")), 7200)
    assert accept.max_duration == 900 and accept.available is None


def simultaneous(account_limit=None, client_limit=None, configured=7200) -> list[int]:
    """Admit calls one after another while none ends (each holds its worst case): durations."""
    durations, exposure = [], D("0")
    for calls in range(1000):
        decision = admit(plan(account_limit, client_limit), Usage(D("100.00"), calls, calls, exposure), configured)
        if isinstance(decision, Reject):
            assert decision.reason is R.INSUFFICIENT_BALANCE
            return durations
        durations.append(decision.max_duration)
        exposure += decision.max_cost
    raise AssertionError("never ran out of money")


def test_readme_example_100_dollars_at_60_cents_a_minute():
    # each call may last 7,200 s = $72.00: the second gets what is left, a third nothing
    assert simultaneous() == [7200, 2800]
    # at most 600 s = $6.00 each: 16 full calls, a 17th for the last $4.00
    assert simultaneous(client_limit=600) == [600] * 16 + [400]
    assert simultaneous(account_limit=600) == [600] * 16 + [400]
    assert simultaneous(configured=600) == [600] * 16 + [400]


# --- admin CLI and over UDP ----------------------------------------------------------------------

def _cli(url, *argv):
    code = main([*argv, "--database-url", url, "--actor", "ops"])
    assert code == 0, argv


def _login_request(login: str, password: str, n: int) -> bytes:
    pkt = AuthPacket(code=AccessRequest, id=n % 256, secret=SECRET, dict=DICTIONARY)
    pkt.authenticator = pkt.CreateAuthenticator()
    pkt.AddAttribute("User-Password", pkt.PwCrypt(password))
    for name, value in (("User-Name", login), ("Called-Station-Id", "442071234567"),
                        ("h323-conf-id", f"h323-conf-id=0000ABCD 00000000 00000000 {n:08X}")):
        pkt.AddAttribute(name, value)
    pkt.add_message_authenticator()
    return pkt.RequestPacket()


def test_a_smaller_max_call_duration_admits_more_simultaneous_calls(store_url, tmp_path, capsys):
    _cli(store_url, "db", "init")
    _cli(store_url, "nas", "add", "gw", "--address", "127.0.0.1", "--secret", SECRET.decode())
    _cli(store_url, "ratetable", "add", "retail")
    _cli(store_url, "rates", "add", "retail", "--prefix", "44", "--price", "0.60", "--minimum", "1",
         "--interval", "1", "--effective-from", "2020-01-01")
    for client, limit in (("Wide", "none"), ("Narrow", "600"), ("Mixed", "none")):
        _cli(store_url, "client", "add", client, "--balance", "100", "--orig-rate-table", "retail",
             "--max-call-duration", limit)
    _cli(store_url, "account", "add", "wide-sip", "--client", "Wide", "--ident-by", "name", "--password", "Wide-pass-1")
    _cli(store_url, "account", "add", "narrow-sip", "--client", "Narrow", "--ident-by", "name",
         "--password", "Narrow-pass-1", "--max-call-duration", "900")    # the client's 600 is smaller
    _cli(store_url, "account", "add", "mixed-sip", "--client", "Mixed", "--ident-by", "name",
         "--password", "Mixed-pass-1", "--max-call-duration", "300")
    capsys.readouterr()
    assert main(["client", "show", "Narrow", "--json", "--database-url", store_url]) == 0
    assert '"max_call_duration": 600' in capsys.readouterr().out
    assert main(["account", "update", "mixed-sip", "--max-call-duration", "0", "--database-url", store_url]) == 2
    assert capsys.readouterr().err.strip() == "radiusd: error: max_call_duration: must be 1 or more (0)"
    server = ServerProcess(store_url, tmp_path).wait_ready()
    try:
        def place(login, password, first, count) -> list[int]:
            """Access-Requests for `count` new calls, none ending: the Session-Timeout of each Accept."""
            granted = []
            for n in range(first, first + count):
                data = _login_request(login, password, n)
                raw = exchange(data, server.auth_port)
                assert raw is not None, f"no answer to call {n}"
                if raw[0] == AccessReject:
                    continue
                assert raw[0] == AccessAccept
                reply = AuthPacket(packet=raw, secret=SECRET, dict=DICTIONARY)
                granted.append(reply["Session-Timeout"][0])
            return granted

        assert place("wide-sip", "Wide-pass-1", 1, 5) == [7200, 2800]
        assert place("narrow-sip", "Narrow-pass-1", 100, 20) == [600] * 16 + [400]
        assert place("mixed-sip", "Mixed-pass-1", 200, 3) == [300] * 3
    finally:
        assert server.stop() == 0
