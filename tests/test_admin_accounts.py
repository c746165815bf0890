"""Accounts through the admin module: validation, identity clashes, search, deactivate vs delete."""
from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select

from radiusd.admin import accounts, audit, seeds
from radiusd.cli_output import UserError
from radiusd.db import current_store_version
from radiusd.models import Account, AccountNetwork, ActiveCall, AuditEntry, Cdr, Client, RoutingRule
from radiusd.secrets_at_rest import account_password_place, load_key_file, open_sealed
from radiusd.store.sealing import key_path

DEMO = Path(__file__).resolve().parent.parent / "schema" / "seeds" / "demo.sql"
NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.timezone.utc)


@pytest.fixture
def demo(sessions):
    seeds.load_seed(sessions, DEMO, actor="seed")
    return sessions


def _add(sessions, **values):
    with sessions.begin() as s:
        return accounts.create_account(s, actor="alice", context="api", **values)


def _names(records):
    return [r["name"] for r in records]


def _search(sessions, **filters):
    with sessions() as s:
        return _names(accounts.search_accounts(s, **filters))


def test_ip_list_is_normalised_to_cidrs(demo):
    record = _add(demo, client="Acme Telecom", name="acme-new", ident_by="ip",
                  ips="10.20.0.5; 10.30.0.0/16, 2001:DB8:0:0::1  2001:db8:2::/48")
    assert record["ips"] == ["10.20.0.5/32", "10.30.0.0/16", "2001:db8::1/128", "2001:db8:2::/48"]
    with demo() as s:
        stored = s.scalars(select(AccountNetwork.cidr).join(Account).where(Account.name == "acme-new")
                           .order_by(AccountNetwork.position)).all()
    assert stored == record["ips"]


def _unchanged(sessions, before):
    with sessions() as s:
        assert seeds.table_counts(s, ["accounts", "account_networks", "audit_log"]) == before[0]
        assert current_store_version(s) == before[1]


def _state(sessions):
    with sessions() as s:
        return seeds.table_counts(s, ["accounts", "account_networks", "audit_log"]), current_store_version(s)


BASE = {"client": "Acme Telecom", "name": "new-acct", "ident_by": "ip", "ips": "10.50.0.1"}
INVALID = [
    ({"ips": "10.1.2.300"}, "ips: not an IP address or CIDR (10.1.2.300)"),
    ({"ips": "10.1.2.7/24"}, "ips: host bits set, did you mean 10.1.2.0/24? (10.1.2.7/24)"),
    ({"ips": "fe80::zz"}, "ips: not an IP address or CIDR (fe80::zz)"),
    ({"client": "Nobody Inc"}, "client: no such client (Nobody Inc)"),
    ({"orig_rate_table": "gold"}, "orig_rate_table: no such rate table (gold)"),
    ({"term_rate_table": "77"}, "term_rate_table: no such rate table (77)"),
    ({"orig_routing_plan": "nowhere"}, "orig_routing_plan: no such routing plan (nowhere)"),
    ({"gateways": "localhost;ghost-nas"}, "gateways: no such NAS (ghost-nas)"),
    ({"orig_capacity": "-1"}, "orig_capacity: must be 0 or more (-1)"),
    ({"term_capacity": -5}, "term_capacity: must be 0 or more (-5)"),
    ({"term_port": "70000"}, "term_port: must be 65535 or less (70000)"),
    ({"term_port": "0"}, "term_port: must be 1 or more (0)"),
    ({"term_protocol": "iax"}, "term_protocol: expected one of sip, h323 (iax)"),
    ({"tech_prefix": "12a"}, "tech_prefix: only digits, # and * are allowed"),
    ({"ident_by": "mac"}, "ident_by: expected one of ip, name, ani (mac)"),
    ({"ips": ""}, "ips: an IP-identified account needs at least one address or CIDR"),
    ({"ident_by": "name", "ips": None}, "password: a login account (ident_by name) needs a password"),
    ({"ident_by": "ani", "ips": None}, "ani: an ANI-identified account needs an ANI"),
    ({"name": "acme-sip"}, "name: already used by account #3 (acme-sip)"),
    ({"ips": "10.1.2.0/24"}, "ips: account acme-gw already has this network"),
    ({"ips": "10.1.2.0/24", "tech_prefix": "0099"}, "ips: account acme-gw-0099 already has this network"),
    ({"ident_by": "ani", "ips": None, "ani": "15551230000"}, "ani: account acme-ani already has this ANI"),
]


def test_invalid_accounts_are_refused_with_field_and_value(demo):
    before = _state(demo)
    for change, message in INVALID:
        values = {**BASE, **change}
        values = {k: v for k, v in values.items() if v is not None}
        with pytest.raises(UserError) as err:
            _add(demo, **values)
        assert str(err.value).startswith(message), (change, str(err.value))
        _unchanged(demo, before)


def test_same_network_is_allowed_when_prefix_protocol_port_or_gateways_differ(demo):
    _add(demo, client=1, name="acme-gw-7", ident_by="ip", ips="10.1.2.0/24", tech_prefix="7")
    _add(demo, client=1, name="acme-gw-h323", ident_by="ip", ips="10.1.2.0/24", term_protocol="h323", term_port=1720)
    _add(demo, client=1, name="lab-a", ident_by="ip", ips="10.77.0.0/16", gateways="localhost")
    _add(demo, client=1, name="lab-b", ident_by="ip", ips="10.77.0.0/16", gateways="kamailio-lab")
    # overlapping gateways (or "no gateways" = every NAS) clash
    with pytest.raises(UserError, match=r"^ips: account lab-a already has this network .*\(10\.77\.0\.0/16\)$"):
        _add(demo, client=1, name="lab-c", ident_by="ip", ips="10.77.0.0/16", gateways="localhost6;localhost")
    with pytest.raises(UserError, match=r"^ips: account lab-a already has this network"):
        _add(demo, client=1, name="lab-d", ident_by="ip", ips="10.77.0.0/16")
    assert _search(demo, ip="10.77.1.1") == ["lab-a", "lab-b"]


def test_update_checks_the_whole_account_and_keeps_it_on_error(demo):
    with demo.begin() as s:
        with pytest.raises(UserError, match=r"^password: a login account"):
            accounts.update_account(s, "acme-ani", actor="alice", ident_by="name")
    with demo.begin() as s:
        record = accounts.update_account(s, "acme-ani", actor="alice", ident_by="name", password="n3w-pass",
                                         orig_capacity="3", gateways="localhost")
    assert record["ident_by"] == "name" and record["password"] == "***" and record["gateways"] == ["localhost"]
    with demo() as s:
        account = s.scalars(select(Account).where(Account.name == "acme-ani")).one()
        assert account.password != "n3w-pass" and account.orig_capacity == 3  # sealed in the store
        assert open_sealed(account.password, account_password_place("acme-ani"), load_key_file(key_path(s))) == "n3w-pass"
        entry = s.scalars(select(AuditEntry).order_by(AuditEntry.id.desc())).first()
        changes = json.loads(entry.changes)
    assert changes["ident_by"] == ["ani", "name"]
    assert changes["password"] == [None, "***"]
    assert changes["orig_capacity"] == [None, 3]
    assert changes["gateways"] == [[], ["localhost"]]
    assert "n3w-pass" not in entry.changes
    # an IP account turned into a login account loses its address list
    with demo.begin() as s:
        record = accounts.update_account(s, "beta-gw", actor="alice", ident_by="name", password="pw-123456")
    assert record["ips"] == []
    assert _search(demo, ip="10.9.1.1") == []


def test_search_by_ip_inside_a_cidr_and_ipv6(demo):
    assert _search(demo, ip="10.1.2.3") == ["acme-gw", "acme-gw-0099"]
    assert _search(demo, ip="192.0.2.10") == ["acme-gw"]
    assert _search(demo, ip="192.0.2.11") == []
    assert _search(demo, ip="10.9.255.254") == ["beta-gw"]
    assert _search(demo, ip="2001:db8:1:ffff::5") == ["acme-v6"]
    assert _search(demo, ip="::1") == ["gamma-gw", "loadtest-gw"]
    assert _search(demo, ip="10.1.0.0/16") == ["acme-gw", "acme-gw-0099"]  # a network: overlapping accounts
    with pytest.raises(UserError, match=r"^ip: not an IP address or CIDR \(10\.1\.2\)$"):
        _search(demo, ip="10.1.2")


def test_search_by_keyword_tag_rate_table_and_other_fields(demo):
    with demo.begin() as s:
        accounts.update_account(s, "beta-gw", actor="alice", orig_tag="gold", notes="Rack 7 in Frankfurt")
        accounts.update_account(s, "acme-sip", actor="alice", orig_rate_table="wholesale-usd")
    assert _search(demo, keyword="frankfurt") == ["beta-gw"]            # notes, any case
    assert _search(demo, keyword="Beta") == ["beta-gw"]                 # client name
    assert _search(demo, keyword="192.0.2") == ["acme-gw"]              # part of an IP list
    assert _search(demo, keyword="10.9.3.3") == ["beta-gw"]             # an address inside a CIDR
    assert _search(demo, keyword="555123") == ["acme-ani"]              # ANI
    assert _search(demo, keyword="100%") == []                          # LIKE wildcards are literal
    assert _search(demo, tag="gold") == ["beta-gw"]
    assert _search(demo, tag="nothing") == []
    assert _search(demo, rate_table="wholesale-usd") == ["acme-sip", "carrier-b-term"]  # orig or term
    assert _search(demo, tech_prefix="0099") == ["acme-gw-0099"]
    assert _search(demo, ani="15551230000") == ["acme-ani"]
    assert _search(demo, name="GW") == ["acme-gw", "acme-gw-0099", "beta-gw", "gamma-gw", "loadtest-gw"]
    assert _search(demo, client="Acme Telecom", ip="10.1.2.3", tech_prefix="") == ["acme-gw"]
    assert _search(demo, client="Gamma Unlimited") == ["gamma-gw"]


def _cdr(account_id, client_id, n, cost, leg="orig"):
    return Cdr(leg_key=f"k-{account_id}-{n}", call_id=f"c-{account_id}-{n}", leg=leg, account_id=account_id,
               client_id=client_id, disconnect_time=NOW, duration=60, billed_seconds=60, result="success",
               cost=Decimal(cost))


def _call(account_id, client_id, n):
    return ActiveCall(leg_key=f"a-{account_id}-{n}", call_id=f"ac-{account_id}-{n}", state="active",
                      account_id=account_id, client_id=client_id, created_at=NOW, last_seen_at=NOW)


def test_delete_refunds_exactly_the_deleted_cdrs_and_removes_calls(demo):
    costs = ["0.123456", "1.5", "0.000001", "12.345678"]
    with demo.begin() as s:
        s.add_all([_cdr(1, 1, n, c) for n, c in enumerate(costs)])
        s.add_all([_cdr(2, 1, 9, "7.77")])          # another account of the same client: untouched
        # a term leg records a vendor cost that never moved a balance: deleted, not refunded
        s.add_all([_cdr(1, 1, 8, "3.00", leg="term")])
        s.add_all([_call(1, 1, 1), _call(1, 1, 2), _call(2, 1, 3)])
    with demo.begin() as s:
        result = accounts.delete_account(s, "acme-gw", actor="alice", context="api")
    refund = sum(Decimal(c) for c in costs)
    assert refund == Decimal("13.969135")
    assert result["cdrs_deleted"] == 5 and result["active_calls_removed"] == 2
    assert result["refunded"] == refund
    assert result["new_balance"] == Decimal("100") + refund
    with demo() as s:
        assert s.get(Client, 1).balance == Decimal("113.969135")
        assert s.scalar(select(func.count()).select_from(Cdr).where(Cdr.account_id == 1)) == 0
        assert s.scalars(select(Cdr.cost)).all() == [Decimal("7.77")]
        assert s.scalars(select(ActiveCall.account_id)).all() == [2]
        assert s.get(Account, 1) is None
        assert s.scalar(select(func.count()).select_from(AccountNetwork).where(AccountNetwork.account_id == 1)) == 0
        entry = s.scalars(select(AuditEntry).where(AuditEntry.action == "delete")).one()
    assert (entry.object_type, entry.object_id, entry.object_name, entry.actor, entry.context) == \
        ("account", 1, "acme-gw", "alice", "api")
    changes = json.loads(entry.changes)
    assert changes["ips"] == [["10.1.2.0/24", "192.0.2.10/32"], None]      # prior state kept in the log
    assert changes["orig_capacity"] == [5, None]
    assert changes["refunded"] == [None, "13.969135"]
    assert changes["cdrs_deleted"] == [None, 5]
    assert changes["client_balance"] == ["100.00", "113.969135"]


def test_delete_login_account_logs_prior_state_without_password(demo):
    with demo.begin() as s:
        result = accounts.delete_account(s, "acme-sip", actor="alice")
    assert (result["cdrs_deleted"], result["refunded"], result["new_balance"]) == (0, Decimal(0), Decimal(100))
    with demo() as s:
        entry = s.scalars(select(AuditEntry).where(AuditEntry.action == "delete")).one()
    assert "s3cret-pass" not in entry.changes
    assert json.loads(entry.changes)["password"] == ["***", None]


def test_deleting_a_terminator_removes_the_routing_rules_to_it(demo):
    with demo.begin() as s:
        result = accounts.delete_account(s, "carrier-b-term", actor="alice")
    assert result["routing_rules_removed"] == 2
    with demo() as s:
        assert s.scalar(select(func.count()).select_from(RoutingRule)) == 0


def test_deactivate_unticks_both_sides_and_keeps_everything(demo):
    with demo.begin() as s:
        s.add(_cdr(6, 3, 1, "2.5"))
    with demo.begin() as s:
        record = accounts.deactivate_account(s, "carrier-b-term", actor="alice")
    assert (record["orig_enabled"], record["term_enabled"]) == (False, False)
    assert record["ips"] == ["198.51.100.20/32"] and record["term_port"] == 5060
    with demo() as s:
        assert s.scalar(select(func.count()).select_from(Cdr)) == 1
        assert s.get(Client, 3).balance == Decimal(0)
        entries = audit.list_entries(s, object_type="account", object_id=6)
    assert entries[-1]["action"] == "deactivate"
    assert entries[-1]["changes"] == {"term_enabled": [True, False]}
