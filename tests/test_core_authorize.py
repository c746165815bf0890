"""Authorization: every reject reason in its place, rate and routing choice, capacity and money."""
from __future__ import annotations

import datetime as dt
import hashlib
from decimal import Decimal as D

import pytest

from radiusd.core.authorize import admit, plan_call
from radiusd.core.decision import Accept, CallPlan, Reject, Usage
from radiusd.core.facts import AuthFacts, ChapCredentials, DigestCredentials, PapCredentials
from radiusd.core.reasons import RejectReason as R
from radiusd.core.snapshot import (
    AccountInfo,
    ClientInfo,
    NasInfo,
    Rate,
    RoutingPlanInfo,
    RoutingRuleInfo,
    build_rate_table,
    build_snapshot,
)

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
CLIENT_TABLE, ACCOUNT_TABLE = 10, 11


def make_snapshot(clients=None, accounts=None, plans=()):
    clients = clients or [
        ClientInfo(1, "acme", credit_limit=D("0"), orig_rate_table_id=CLIENT_TABLE, routing_plan_id=100),
    ]
    accounts = accounts or [
        AccountInfo(1, 1, "acme-ip", "ip", networks=("10.1.2.0/24",)),
        AccountInfo(2, 1, "alice", "name", password="s3cret"),
    ]
    tables = [
        build_rate_table(CLIENT_TABLE, "client table", "USD", [
            Rate(CLIENT_TABLE, "49", D("0.60"), minimum_seconds=30, interval_seconds=6),
            Rate(CLIENT_TABLE, "4930", D("1.20"), minimum_seconds=30, interval_seconds=6),
            Rate(CLIENT_TABLE, "33", D("0.30"), effective_from=NOW + dt.timedelta(days=1)),
            Rate(CLIENT_TABLE, "44", D("0.30"), effective_until=NOW),
        ]),
        build_rate_table(ACCOUNT_TABLE, "account table", "USD", [
            Rate(ACCOUNT_TABLE, "49", D("0.06")),
        ]),
    ]
    return build_snapshot(
        version=1,
        nas=[NasInfo(1, "sw1", "192.0.2.1/32", b"secret")],
        clients=clients,
        accounts=accounts,
        rate_tables=tables,
        routing_plans=list(plans),
    )


def facts(**kw):
    base = dict(nas_id=1, caller_address="10.1.2.3", called_number="4921234567", calling_number="4930555",
                call_id="c1")
    base.update(kw)
    return AuthFacts(**base)


def rejected(result, reason):
    assert isinstance(result, Reject), result
    assert result.reason is reason, result
    return result


def planned(result) -> CallPlan:
    assert isinstance(result, CallPlan), result
    return result


# --- plan_call: reject reasons in order -----------------------------------------------

@pytest.mark.parametrize("called", [None, "", "   "])
def test_no_called_number_is_invalid_request(called):
    rejected(plan_call(facts(called_number=called), make_snapshot(), NOW), R.INVALID_REQUEST)


def test_unknown_account():
    r = rejected(plan_call(facts(caller_address="192.168.9.9"), make_snapshot(), NOW), R.UNKNOWN_ACCOUNT)
    assert r.reason.return_code == 1


def test_ambiguous_account():
    s = make_snapshot(accounts=[AccountInfo(1, 1, "a", "ip", networks=("10.1.2.0/24",)),
                                AccountInfo(2, 1, "b", "ip", networks=("10.1.2.0/24",))])
    rejected(plan_call(facts(), s, NOW), R.AMBIGUOUS_ACCOUNT)


def test_login_account_with_right_pap_password():
    plan = planned(plan_call(facts(user_name="alice", credentials=PapCredentials("s3cret")), make_snapshot(), NOW))
    assert plan.account.name == "alice"


def test_login_account_wrong_password():
    r = rejected(plan_call(facts(user_name="alice", credentials=PapCredentials("nope")), make_snapshot(), NOW),
                 R.BAD_PASSWORD)
    assert (r.account_id, r.client_id, r.reason.return_code) == (2, 1, 2)


def test_login_account_without_credentials_is_bad_password():
    rejected(plan_call(facts(caller_address=None, user_name="alice"), make_snapshot(), NOW), R.BAD_PASSWORD)


def test_login_account_with_chap():
    challenge = b"\x11" * 16
    response = hashlib.md5(b"\x07" + b"s3cret" + challenge).digest()
    creds = ChapCredentials(b"\x07", response, challenge)
    assert planned(plan_call(facts(user_name="alice", credentials=creds), make_snapshot(), NOW)).account.id == 2
    bad = ChapCredentials(b"\x07", hashlib.md5(b"\x07wrong" + challenge).digest(), challenge)
    rejected(plan_call(facts(user_name="alice", credentials=bad), make_snapshot(), NOW), R.BAD_PASSWORD)


def test_login_account_with_sip_digest():
    def h(s):
        return hashlib.md5(s.encode()).hexdigest()
    ha1, ha2 = h("alice:sip.example:s3cret"), h("INVITE:sip:4921234567@sip.example")
    creds = DigestCredentials(response=h(f"{ha1}:n1:00000001:c1:auth:{ha2}"), username="alice", realm="sip.example",
                              nonce="n1", method="INVITE", uri="sip:4921234567@sip.example", qop="auth",
                              cnonce="c1", nonce_count="00000001")
    assert planned(plan_call(facts(user_name="alice", credentials=creds), make_snapshot(), NOW)).account.id == 2


def test_ip_account_ignores_credentials():
    plan = planned(plan_call(facts(user_name="whoever", credentials=PapCredentials("x")), make_snapshot(), NOW))
    assert plan.account.id == 1


def test_client_inactive():
    s = make_snapshot(clients=[ClientInfo(1, "acme", active=False, orig_rate_table_id=CLIENT_TABLE)])
    r = rejected(plan_call(facts(), s, NOW), R.CLIENT_INACTIVE)
    assert r.reason.return_code == 7


def test_account_inactive():
    s = make_snapshot(accounts=[AccountInfo(1, 1, "a", "ip", networks=("10.1.2.0/24",), active=False)])
    rejected(plan_call(facts(), s, NOW), R.ACCOUNT_INACTIVE)


def test_inactive_client_reported_before_inactive_account():
    s = make_snapshot(clients=[ClientInfo(1, "acme", active=False, orig_rate_table_id=CLIENT_TABLE)],
                      accounts=[AccountInfo(1, 1, "a", "ip", networks=("10.1.2.0/24",), active=False)])
    rejected(plan_call(facts(), s, NOW), R.CLIENT_INACTIVE)


def test_originator_disabled():
    s = make_snapshot(accounts=[AccountInfo(1, 1, "a", "ip", networks=("10.1.2.0/24",), orig_enabled=False)])
    rejected(plan_call(facts(), s, NOW), R.ORIGINATOR_DISABLED)


def test_wrong_password_reported_before_inactive_account():
    s = make_snapshot(accounts=[AccountInfo(2, 1, "alice", "name", password="s3cret", active=False)])
    rejected(plan_call(facts(user_name="alice", credentials=PapCredentials("x")), s, NOW), R.BAD_PASSWORD)


def test_called_number_that_is_only_the_tech_prefix():
    s = make_snapshot(accounts=[AccountInfo(1, 1, "a", "ip", networks=("10.1.2.0/24",), tech_prefix="99")])
    rejected(plan_call(facts(called_number="99"), s, NOW), R.INVALID_REQUEST)


@pytest.mark.parametrize("called", ["3312345", "4412345", "1234"])
def test_no_rate_for_destination(called):
    # 33 only becomes effective tomorrow, 44 expired at NOW, 1 was never priced
    r = rejected(plan_call(facts(called_number=called), make_snapshot(), NOW), R.NO_RATE)
    assert r.reason.return_code == 9


def test_no_rate_table_at_all_is_no_rate():
    s = make_snapshot(clients=[ClientInfo(1, "acme")])
    rejected(plan_call(facts(), s, NOW), R.NO_RATE)


# --- plan_call: rate and routing ---------------------------------------------------------

def test_client_rate_table_longest_prefix():
    plan = planned(plan_call(facts(called_number="4930123"), make_snapshot(), NOW))
    assert (plan.rate_table.id, plan.rate.prefix, plan.rate.price_per_minute) == (CLIENT_TABLE, "4930", D("1.20"))
    plan = planned(plan_call(facts(called_number="4940123"), make_snapshot(), NOW))
    assert plan.rate.prefix == "49"


def test_account_rate_table_overrides_client_table():
    s = make_snapshot(accounts=[AccountInfo(1, 1, "a", "ip", networks=("10.1.2.0/24",),
                                            orig_rate_table_id=ACCOUNT_TABLE)])
    plan = planned(plan_call(facts(called_number="4930123"), s, NOW))
    assert (plan.rate_table.id, plan.rate.price_per_minute) == (ACCOUNT_TABLE, D("0.06"))


def test_rate_is_looked_up_without_tech_prefix():
    s = make_snapshot(accounts=[AccountInfo(1, 1, "a", "ip", networks=("10.1.2.0/24",), tech_prefix="33")])
    plan = planned(plan_call(facts(called_number="334930123"), s, NOW))
    assert (plan.called_number, plan.rate.prefix) == ("4930123", "4930")


def test_plan_carries_the_call_facts():
    plan = planned(plan_call(facts(), make_snapshot(), NOW))
    assert (plan.nas_id, plan.client.id, plan.calling_number, plan.call_id) == (1, 1, "4930555", "c1")


def terminator(id, client_id=2, **kw):
    base = dict(term_enabled=True, term_protocol="sip", term_proxy=f"gw{id}.example", term_port=5060)
    base.update(kw)
    return AccountInfo(id, client_id, f"term{id}", "ip", networks=(f"203.0.113.{id}/32",), **base)


def test_routes_from_client_plan_and_account_plan_override():
    plans = [
        RoutingPlanInfo(100, "client plan", (RoutingRuleInfo(1, "", 21),)),
        RoutingPlanInfo(101, "account plan", (RoutingRuleInfo(1, "", 22),)),
    ]
    clients = [ClientInfo(1, "acme", orig_rate_table_id=CLIENT_TABLE, routing_plan_id=100), ClientInfo(2, "vendor")]
    s = make_snapshot(clients=clients, plans=plans, accounts=[
        AccountInfo(1, 1, "a", "ip", networks=("10.1.2.0/24",)),
        AccountInfo(3, 1, "b", "ip", networks=("10.1.3.0/24",), orig_routing_plan_id=101),
        terminator(21), terminator(22),
    ])
    plan = planned(plan_call(facts(), s, NOW))
    assert plan.routing_plan.id == 100 and [r.account_id for r in plan.routes] == [21]
    assert plan.routes[0].host == "gw21.example" and plan.routes[0].protocol == "sip"
    plan = planned(plan_call(facts(caller_address="10.1.3.1"), s, NOW))
    assert plan.routing_plan.id == 101 and [r.account_id for r in plan.routes] == [22]


def test_no_routing_plan_is_not_a_reject():
    s = make_snapshot(clients=[ClientInfo(1, "acme", orig_rate_table_id=CLIENT_TABLE)])
    plan = planned(plan_call(facts(), s, NOW))
    assert plan.routing_plan is None and plan.routes == ()


# --- admit: capacity ---------------------------------------------------------------------

def plan_for(client: ClientInfo | None = None, account: AccountInfo | None = None, rate: Rate | None = None):
    client = client or ClientInfo(1, "acme", credit_limit=D("0"), orig_rate_table_id=CLIENT_TABLE)
    account = account or AccountInfo(1, 1, "a", "ip", networks=("10.1.2.0/24",))
    rate = rate or Rate(CLIENT_TABLE, "49", D("0.60"), minimum_seconds=30, interval_seconds=6)
    table = build_rate_table(CLIENT_TABLE, "t", "USD", [rate])
    return CallPlan(1, account, client, "4930", None, "c1", table, rate, None)


def usage(balance="100", account_calls=0, client_calls=0, exposure="0"):
    return Usage(D(balance), account_calls, client_calls, D(exposure))


def test_account_capacity():
    p = plan_for(account=AccountInfo(1, 1, "a", "ip", orig_capacity=2))
    assert isinstance(admit(p, usage(account_calls=1, client_calls=1), 7200), Accept)
    r = rejected(admit(p, usage(account_calls=2, client_calls=2), 7200), R.CAPACITY_ACCOUNT)
    assert r.reason.return_code == 3


def test_client_capacity_stricter_than_account():
    p = plan_for(client=ClientInfo(1, "acme", credit_limit=D("0"), capacity=10),
                 account=AccountInfo(1, 1, "a", "ip", orig_capacity=100))
    assert isinstance(admit(p, usage(account_calls=5, client_calls=9), 7200), Accept)
    rejected(admit(p, usage(account_calls=5, client_calls=10), 7200), R.CAPACITY_CLIENT)


def test_zero_capacity_blocks_all_calls():
    p = plan_for(account=AccountInfo(1, 1, "a", "ip", orig_capacity=0))
    rejected(admit(p, usage(), 7200), R.CAPACITY_ACCOUNT)


def test_no_capacity_set_means_no_limit():
    assert isinstance(admit(plan_for(), usage(account_calls=10_000, client_calls=10_000), 7200), Accept)


def test_capacity_checked_before_money():
    p = plan_for(account=AccountInfo(1, 1, "a", "ip", orig_capacity=1))
    rejected(admit(p, usage(balance="0", account_calls=1), 7200), R.CAPACITY_ACCOUNT)


# --- admit: money ------------------------------------------------------------------------

def test_max_duration_from_balance():
    # 1.00 at 0.60/min, 30/6: 96 s billed 96 s = 0.96
    a = admit(plan_for(), usage(balance="1.00"), 7200)
    assert isinstance(a, Accept)
    assert (a.max_duration, a.max_cost, a.available) == (96, D("0.960000"), D("1.00"))


def test_credit_limit_adds_to_balance():
    p = plan_for(client=ClientInfo(1, "acme", credit_limit=D("0.50")))
    a = admit(p, usage(balance="0.50"), 7200)
    assert (a.max_duration, a.available) == (96, D("1.00"))


def test_negative_balance_within_credit():
    p = plan_for(client=ClientInfo(1, "acme", credit_limit=D("5")))
    a = admit(p, usage(balance="-4.00"), 7200)
    assert a.max_duration == 96


def test_exposure_of_calls_in_progress_reduces_duration():
    a = admit(plan_for(), usage(balance="1.00", exposure="0.40"), 7200)
    # 0.60 left buys exactly 60 s (30 + 5 * 6)
    assert (a.max_duration, a.max_cost, a.available) == (60, D("0.600000"), D("0.60"))


def test_zero_balance_is_balance_exhausted_code_4():
    r = rejected(admit(plan_for(), usage(balance="0"), 7200), R.BALANCE_EXHAUSTED)
    assert r.reason.return_code == 4


def test_balance_below_first_step_is_balance_exhausted():
    # the 30 s minimum costs 0.30
    rejected(admit(plan_for(), usage(balance="0.29"), 7200), R.BALANCE_EXHAUSTED)
    assert isinstance(admit(plan_for(), usage(balance="0.30"), 7200), Accept)


def test_balance_used_up_by_calls_in_progress_is_insufficient_code_12():
    r = rejected(admit(plan_for(), usage(balance="1.00", exposure="0.80", client_calls=1), 7200),
                 R.INSUFFICIENT_BALANCE)
    assert r.reason.return_code == 12


def test_unlimited_credit_gets_configured_cap():
    p = plan_for(client=ClientInfo(1, "acme", credit_limit=None))
    a = admit(p, usage(balance="-1000", exposure="999"), 7200)
    assert isinstance(a, Accept)
    # worst case 7200 s at 0.60/min = 72.00
    assert (a.max_duration, a.max_cost, a.available) == (7200, D("72.000000"), None)
    assert admit(p, usage(balance="0"), 3600).max_duration == 3600


def test_large_balance_is_capped():
    a = admit(plan_for(), usage(balance="1000000"), 7200)
    assert (a.max_duration, a.max_cost) == (7200, D("72.000000"))


def test_connection_fee_counts_in_max_cost():
    rate = Rate(CLIENT_TABLE, "49", D("0.60"), connection_fee=D("0.05"), minimum_seconds=30, interval_seconds=6)
    a = admit(plan_for(rate=rate), usage(balance="1.00"), 7200)
    assert (a.max_duration, a.max_cost) == (90, D("0.950000"))
    assert a.max_cost <= a.available


def test_full_flow_plan_then_admit():
    plan = planned(plan_call(facts(called_number="4930123"), make_snapshot(), NOW))  # 1.20/min
    a = admit(plan, usage(balance="1.20"), 7200)
    assert isinstance(a, Accept) and a.max_duration == 60 and a.plan is plan

