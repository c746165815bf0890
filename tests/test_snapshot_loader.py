"""Loading the snapshot from a real store (SQLite file and PostgreSQL) and using its indexes."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

from sqlalchemy import null

from radiusd.core.authorize import plan_call
from radiusd.core.decision import CallPlan
from radiusd.core.facts import AuthFacts, PapCredentials
from radiusd.core.identify import find_terminator, identify
from radiusd.core.rating import find_rate
from radiusd.core.snapshot import AccountInfo
from radiusd.core.snapshot import Rate as RateInfo
from radiusd.db import bump_store_version
from radiusd.models import (
    Account,
    AccountNetwork,
    Client,
    Nas,
    Rate,
    RateTable,
    RoutingPlan,
    RoutingRule,
)
from radiusd.store.sealing import seal_column
from radiusd.store.snapshot_loader import load_snapshot, load_snapshot_from

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def seed(sessions):
    with sessions() as s, s.begin():
        nas1 = Nas(name="sw1", address="192.0.2.1/32", secret="sw1-secret", dialect="cisco")
        nas2 = Nas(name="sw2", address="2001:db8:ffff::/48", secret="sw2-sëcret", dialect="kamailio",
                   message_authenticator="no", caller_address_source="framed-ip-address")
        table = RateTable(name="retail", currency="EUR", rates=[
            Rate(prefix="49", price_per_minute=D("0.012345"), minimum_seconds=30, interval_seconds=6,
                 effective_from=NOW - dt.timedelta(days=30)),
            Rate(prefix="4930", price_per_minute=D("0.02"), connection_fee=D("0.000001"), grace_seconds=3,
                 effective_from=NOW - dt.timedelta(days=30), effective_until=NOW + dt.timedelta(days=1)),
            Rate(prefix="4930", price_per_minute=D("0.03"), effective_from=NOW + dt.timedelta(days=1)),
        ])
        plan = RoutingPlan(name="default")
        s.add_all([nas1, nas2, table, plan])
        for row in (nas1, nas2):
            seal_column(s, row, "secret")  # as the admin layer stores it
        s.flush()
        acme = Client(name="acme", balance=D("10"), credit_limit=D("2.5"), orig_rate_table_id=table.id,
                      routing_plan_id=plan.id, capacity=20)
        # null(): a plain None would let the column default (0) apply
        vendor = Client(name="vendor", credit_limit=null())
        s.add_all([acme, vendor])
        s.flush()
        ip = Account(client_id=acme.id, name="acme-ip", ident_by="ip", tech_prefix="77", orig_capacity=5,
                     networks=[AccountNetwork(cidr="10.1.2.0/24", position=0),
                               AccountNetwork(cidr="2001:db8:1::/48", position=1)],
                     gateways=[nas1])
        login = Account(client_id=acme.id, name="alice", ident_by="name", password="s3cret")
        ani = Account(client_id=acme.id, name="acme-ani", ident_by="ani", ani="4930555", active=False)
        term = Account(client_id=vendor.id, name="carrier-x", ident_by="ip", orig_enabled=False,
                       term_enabled=True, term_protocol="sip", term_proxy="203.0.113.9", term_port=5060,
                       networks=[AccountNetwork(cidr="203.0.113.9/32")])
        s.add_all([ip, login, ani, term])
        seal_column(s, login, "password")
        s.flush()
        s.add(RoutingRule(routing_plan_id=plan.id, priority=1, prefix="49", terminator_account_id=term.id, share=70))
        bump_store_version(s)
        return {"nas1": nas1.id, "nas2": nas2.id, "ip": ip.id, "login": login.id, "ani": ani.id,
                "term": term.id, "acme": acme.id, "vendor": vendor.id, "table": table.id, "plan": plan.id}


def test_loaded_snapshot_has_every_record(sessions):
    ids = seed(sessions)
    snap = load_snapshot_from(sessions)

    assert snap.version == 1
    assert snap.nas[ids["nas1"]].secret == b"sw1-secret"
    nas2 = snap.nas[ids["nas2"]]
    assert (nas2.secret, nas2.dialect, nas2.message_authenticator, nas2.caller_address_source) == \
        ("sw2-sëcret".encode(), "kamailio", "no", "framed-ip-address")

    acme = snap.clients[ids["acme"]]
    assert (acme.credit_limit, acme.currency, acme.capacity, acme.routing_plan_id) == \
        (D("2.5"), "USD", 20, ids["plan"])
    assert snap.clients[ids["vendor"]].credit_limit is None

    # every field compared by name: the loader builds records positionally for speed
    assert snap.accounts[ids["ip"]] == AccountInfo(
        id=ids["ip"], client_id=ids["acme"], name="acme-ip", ident_by="ip",
        networks=("10.1.2.0/24", "2001:db8:1::/48"), tech_prefix="77", password=None, ani=None,
        gateway_ids=frozenset({ids["nas1"]}), active=True, orig_enabled=True, orig_rate_table_id=None,
        orig_routing_plan_id=None, orig_tag="", orig_capacity=5, term_enabled=False, term_rate_table_id=None,
        term_tag="", term_capacity=None, term_protocol=None, term_proxy=None, term_port=None,
    )
    assert snap.accounts[ids["term"]] == AccountInfo(
        id=ids["term"], client_id=ids["vendor"], name="carrier-x", ident_by="ip", networks=("203.0.113.9/32",),
        orig_enabled=False, term_enabled=True, term_protocol="sip", term_proxy="203.0.113.9", term_port=5060,
    )
    assert snap.accounts[ids["login"]].password == "s3cret"
    assert snap.accounts[ids["ani"]].ani == "4930555"
    assert snap.accounts[ids["login"]].gateway_ids == frozenset()
    assert snap.accounts[ids["ani"]].active is False

    table = snap.rate_tables[ids["table"]]
    assert table.currency == "EUR"
    assert len(table.rates_by_prefix["4930"]) == 2
    assert snap.routing_plans[ids["plan"]].rules[0].terminator_account_id == ids["term"]
    assert snap.routing_plans[ids["plan"]].rules[0].share == 70


def test_indexes_find_accounts_and_rates(sessions):
    ids = seed(sessions)
    snap = load_snapshot_from(sessions)

    account, number = identify(AuthFacts(ids["nas1"], "10.1.2.3", called_number="774930123"), snap)
    assert (account.id, number) == (ids["ip"], "4930123")
    account, _ = identify(AuthFacts(ids["nas1"], "2001:db8:1::7", called_number="774930123"), snap)
    assert account.id == ids["ip"]
    account, _ = identify(AuthFacts(ids["nas1"], None, user_name="alice", credentials=PapCredentials("x"),
                                    called_number="4930"), snap)
    assert account.id == ids["login"]
    account, _ = identify(AuthFacts(ids["nas1"], None, calling_number="+4930555", called_number="4930"), snap)
    assert account.id == ids["ani"]
    assert find_terminator(snap, ids["nas1"], "203.0.113.9", "sip", 5060).id == ids["term"]

    table = snap.rate_tables[ids["table"]]
    assert find_rate(table, "4930123", NOW) == RateInfo(
        rate_table_id=ids["table"], prefix="4930", price_per_minute=D("0.02"), connection_fee=D("0.000001"),
        minimum_seconds=0, interval_seconds=1, grace_seconds=3, effective_from=NOW - dt.timedelta(days=30),
        effective_until=NOW + dt.timedelta(days=1), description="",
    )
    assert find_rate(table, "4930123", NOW + dt.timedelta(days=2)).price_per_minute == D("0.03")
    rate = find_rate(table, "4940", NOW)
    assert (rate.prefix, rate.minimum_seconds, rate.interval_seconds) == ("49", 30, 6)


def test_loaded_snapshot_authorizes_a_call(sessions):
    ids = seed(sessions)
    snap = load_snapshot_from(sessions)
    plan = plan_call(AuthFacts(ids["nas1"], "10.1.2.3", called_number="774930123", call_id="x"), snap, NOW)
    assert isinstance(plan, CallPlan)
    assert [r.account_id for r in plan.routes] == [ids["term"]]
    assert plan.routes[0].host == "203.0.113.9"


def test_gateway_restriction_survives_loading(sessions):
    ids = seed(sessions)
    snap = load_snapshot_from(sessions)
    result = identify(AuthFacts(ids["nas2"], "10.1.2.3", called_number="774930123"), snap)
    assert not isinstance(result, tuple)


def test_empty_store_loads_empty_snapshot(sessions):
    with sessions() as s:
        snap = load_snapshot(s)
    assert (snap.version, snap.accounts, snap.nas, snap.rate_tables) == (0, {}, {}, {})


def test_reload_sees_admin_changes(sessions):
    ids = seed(sessions)
    before = load_snapshot_from(sessions)
    with sessions() as s, s.begin():
        s.get(Account, ids["ip"]).active = False
        bump_store_version(s)
    after = load_snapshot_from(sessions)
    assert after.version == before.version + 1
    assert before.accounts[ids["ip"]].active and not after.accounts[ids["ip"]].active
