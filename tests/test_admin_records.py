"""Clients, NAS, rate tables (CSV import), routing plans and the audit log through the admin module."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import select

from radiusd.admin import accounts, audit, clients, nas, rates, routing
from radiusd.cli_output import UserError
from radiusd.db import current_store_version
from radiusd.models import AuditEntry, Client, Nas, Rate
from radiusd.secrets_at_rest import load_key_file, nas_secret_place, open_sealed
from radiusd.store.sealing import key_path

UTC = dt.timezone.utc


def _do(sessions, fn, *args, **kwargs):
    with sessions.begin() as s:
        return fn(s, *args, actor="alice", **kwargs)


def _audit(sessions, **filters):
    with sessions() as s:
        return audit.list_entries(s, **filters)


def test_client_lifecycle_is_audited_with_diffs(sessions):
    _do(sessions, rates.create_rate_table, name="retail")
    created = _do(sessions, clients.create_client, name="Acme", balance="10.50", credit_limit="unlimited",
                  orig_rate_table="retail", capacity="4")
    assert (created["balance"], created["credit_limit"], created["capacity"]) == (Decimal("10.50"), None, 4)
    updated = _do(sessions, clients.update_client, "Acme", credit_limit="25", capacity="none", active="no")
    assert (updated["credit_limit"], updated["capacity"], updated["active"]) == (Decimal("25.00"), None, False)
    topup = _do(sessions, clients.adjust_balance, "Acme", "0.000001", notes="wire 42")
    assert topup["balance"] == Decimal("10.500001")
    with sessions() as s:
        assert s.scalars(select(Client.balance)).one() == Decimal("10.500001")
    entries = _audit(sessions, object_type="client")
    assert [e["action"] for e in entries] == ["create", "update", "topup"]
    assert entries[0]["changes"]["credit_limit"] == [None, None]  # created with unlimited credit
    assert entries[0]["changes"]["balance"] == [None, "10.50"]
    assert entries[1]["changes"] == {"active": [True, False], "capacity": [4, None], "credit_limit": [None, "25.00"]}
    assert entries[2]["changes"]["balance"] == ["10.50", "10.500001"]
    assert entries[2]["changes"]["notes"] == [None, "wire 42"]
    assert {e["actor"] for e in entries} == {"alice"}
    with pytest.raises(UserError, match=r"^balance: use `client topup`"):
        _do(sessions, clients.update_client, "Acme", balance="1000")


@pytest.mark.parametrize("values, message", [
    ({"name": "B", "capacity": "-2"}, "capacity: must be 0 or more (-2)"),
    ({"name": "B", "credit_limit": "-1"}, "credit_limit: must be 0 or more (-1)"),
    ({"name": "B", "balance": "12.3456789"}, "balance: more than 6 decimal places (12.3456789)"),
    ({"name": "B", "currency": "dollars"}, "currency: expected a 3-letter currency code (DOLLARS)"),
    ({"name": "B", "routing_plan": "nope"}, "routing_plan: no such routing plan (nope)"),
    ({"name": "Acme"}, "name: already used by client #1 (Acme)"),
])
def test_bad_client_values_are_refused(sqlite_url, values, message):
    from radiusd.db import open_store

    engine, sessions = open_store(sqlite_url)
    _do(sessions, clients.create_client, name="Acme")
    version = _version(sessions)
    with pytest.raises(UserError) as err:
        _do(sessions, clients.create_client, **values)
    assert str(err.value) == message
    assert _version(sessions) == version
    engine.dispose()


def _version(sessions):
    with sessions() as s:
        return current_store_version(s)


def test_nas_secret_never_shown_nor_logged(sessions):
    record = _do(sessions, nas.create_nas, name="edge1", address="192.0.2.1", secret="Sup3r-Secret!",
                 dialect="kamailio", caller_address_source="packet-source")
    assert record["address"] == "192.0.2.1/32" and record["secret"] == "***"
    assert record["message_authenticator"] == "auto" and record["message_authenticator_learned"] is None
    _do(sessions, nas.update_nas, "edge1", secret="An0ther-Secret", address="2001:DB8::/64")
    with sessions() as s:
        stored = s.scalars(select(Nas.secret)).one()
        assert "An0ther-Secret" not in stored  # sealed in the store
        assert open_sealed(stored, nas_secret_place("edge1"), load_key_file(key_path(s))) == "An0ther-Secret"
        shown = nas.show_nas(s, "edge1")
        listed = nas.list_nas(s)
        raw = " ".join(s.scalars(select(AuditEntry.changes)))
    assert shown["secret"] == "***" and listed[0]["secret"] == "***" and shown["address"] == "2001:db8::/64"
    assert "Sup3r-Secret" not in raw and "An0ther-Secret" not in raw
    changes = _audit(sessions, object_type="nas")[1]["changes"]
    assert changes["secret"] == ["***", "(changed)"]
    assert changes["address"] == ["192.0.2.1/32", "2001:db8::/64"]
    with pytest.raises(UserError, match=r"^address: host bits set, did you mean 10\.0\.0\.0/8\? \(10\.1\.1\.1/8\)$"):
        _do(sessions, nas.update_nas, "edge1", address="10.1.1.1/8")
    with pytest.raises(UserError, match=r"^dialect: expected one of"):
        _do(sessions, nas.update_nas, "edge1", dialect="asterisk")


def test_nas_delete_refused_while_sole_gateway(sessions):
    _do(sessions, clients.create_client, name="Acme")
    _do(sessions, nas.create_nas, name="edge1", address="192.0.2.1", secret="s1")
    _do(sessions, nas.create_nas, name="edge2", address="192.0.2.2", secret="s2")
    _do(sessions, accounts.create_account, client="Acme", name="only1", ident_by="ip", ips="10.0.0.1",
        gateways="edge1")
    _do(sessions, accounts.create_account, client="Acme", name="both", ident_by="ip", ips="10.0.0.2",
        gateways="edge1;edge2")
    with pytest.raises(UserError, match=r"^nas: is the only gateway of account\(s\) only1"):
        _do(sessions, nas.delete_nas, "edge1")
    _do(sessions, accounts.update_account, "only1", gateways="edge2")
    result = _do(sessions, nas.delete_nas, "edge1")
    assert result["removed_from_accounts"] == ["both"]
    with sessions() as s:
        assert accounts.show_account(s, "both")["gateways"] == ["edge2"]
    entry = _audit(sessions, object_type="nas")[-1]
    assert entry["action"] == "delete" and entry["changes"]["secret"] == ["***", None]


GOOD_CSV = """prefix,description,price_per_minute,connection_fee,minimum_seconds,interval_seconds,grace_seconds,effective_from,effective_until
44,UK,0.020,,1,1,,,
4420,London,0.015,0.01,30,6,5,2026-01-01,2027-01-01T00:00:00Z
1,USA,0.01,,60,60,0,1970-01-01,
"""


def test_rates_import_good_csv_and_replace(sessions, tmp_path):
    _do(sessions, rates.create_rate_table, name="retail", currency="eur")
    path = tmp_path / "deck.csv"
    path.write_text(GOOD_CSV)
    result = _do(sessions, rates.import_rates, "retail", path)
    assert result["rows_imported"] == 3
    with sessions() as s:
        london = s.scalars(select(Rate).where(Rate.prefix == "4420")).one()
        assert (london.price_per_minute, london.connection_fee, london.minimum_seconds, london.interval_seconds,
                london.grace_seconds) == (Decimal("0.015"), Decimal("0.01"), 30, 6, 5)
        assert london.effective_from == dt.datetime(2026, 1, 1, tzinfo=UTC)
        assert london.effective_until == dt.datetime(2027, 1, 1, tzinfo=UTC)
        uk = s.scalars(select(Rate).where(Rate.prefix == "44")).one()
        assert (uk.effective_from, uk.effective_until, uk.connection_fee) == \
            (dt.datetime(1970, 1, 1, tzinfo=UTC), None, Decimal(0))
        assert rates.show_rate_table(s, "retail")["currency"] == "EUR"
    # importing the same deck again collides; --replace swaps the whole table
    with pytest.raises(UserError, match=r"deck\.csv:2: prefix: table retail already has this prefix"):
        _do(sessions, rates.import_rates, "retail", path)
    path.write_text("prefix,price_per_minute\n49,0.03\n")
    assert _do(sessions, rates.import_rates, "retail", path, replace=True)["rows_imported"] == 1
    with sessions() as s:
        assert s.scalars(select(Rate.prefix)).all() == ["49"]
    entry = _audit(sessions, object_type="rate_table")[-1]
    assert entry["action"] == "import" and entry["changes"]["rates"] == [3, 1]


BAD_CSVS = [
    ("prefix,price_per_minute\n44,0.02\n44x,0.01\n", "bad.csv:3: prefix: only digits are allowed"),
    ("prefix,price_per_minute\n44,0.02\n49,cheap\n", "bad.csv:3: price_per_minute: expected an amount like 12.50 (cheap)"),
    ("prefix,price_per_minute\n44,-0.02\n", "bad.csv:2: price_per_minute: must be 0 or more (-0.02)"),
    ("prefix,price_per_minute,interval_seconds\n44,0.02,0\n", "bad.csv:2: interval_seconds: must be 1 or more (0)"),
    ("prefix,price_per_minute,effective_from\n44,0.02,31/12/2026\n",
     "bad.csv:2: effective_from: expected an ISO-8601 date or date-time (31/12/2026)"),
    ("prefix,price_per_minute,effective_from,effective_until\n44,0.02,2027-01-01,2026-01-01\n",
     "bad.csv:2: effective_until: must be after effective_from (2026-01-01)"),
    ("prefix,price\n44,0.02\n", "bad.csv:1: unknown column (price)"),
    ("prefix,description\n44,UK\n", "bad.csv:1: required column missing (price_per_minute)"),
    ("prefix,price_per_minute\n44,0.02,extra\n", "bad.csv:2: expected 2 values, got 3"),
    ("prefix,price_per_minute\n44,0.02\n\n44,0.03\n", "bad.csv:4: prefix: same prefix and effective_from as line 2 (44)"),
    ("", "bad.csv:1: empty file"),
]


def test_rates_import_bad_csv_imports_nothing(sessions, tmp_path):
    _do(sessions, rates.create_rate_table, name="retail")
    _do(sessions, rates.add_rate, "retail", prefix="1", price_per_minute="0.01")
    version = _version(sessions)
    for text, message in BAD_CSVS:
        path = tmp_path / "bad.csv"
        path.write_text(text)
        with pytest.raises(UserError) as err:
            _do(sessions, rates.import_rates, "retail", path, replace=True)
        assert str(err.value).startswith(str(tmp_path / message)), str(err.value)
        with sessions() as s:
            assert s.scalars(select(Rate.prefix)).all() == ["1"]
        assert _version(sessions) == version


def test_routing_plan_rules(sessions):
    _do(sessions, clients.create_client, name="Vendor")
    _do(sessions, accounts.create_account, client="Vendor", name="v-term", ident_by="ip", ips="198.51.100.1",
        orig_enabled="no", term_enabled="yes", term_protocol="sip", term_port="5060")
    _do(sessions, routing.create_routing_plan, name="main")
    _do(sessions, routing.add_rule, "main", terminator="v-term", prefix="", priority="2")
    _do(sessions, routing.add_rule, "main", terminator="v-term", prefix="44", priority="1", share="50")
    with sessions() as s:
        plan = routing.show_routing_plan(s, "main")
    assert [(r["priority"], r["prefix"], r["terminator"], r["share"]) for r in plan["rule_list"]] == \
        [(1, "44", "v-term", 50), (2, "", "v-term", 100)]
    with pytest.raises(UserError, match=r"^terminator: no such account \(ghost\)$"):
        _do(sessions, routing.add_rule, "main", terminator="ghost")
    with pytest.raises(UserError, match=r"^share: must be 100 or less \(150\)$"):
        _do(sessions, routing.add_rule, "main", terminator="v-term", share="150")


def test_audit_filters(sessions):
    _do(sessions, clients.create_client, name="A")
    with sessions.begin() as s:
        clients.create_client(s, name="B", actor="bob", context="cli")
    _do(sessions, nas.create_nas, name="n1", address="192.0.2.9", secret="x")
    assert [e["object_name"] for e in _audit(sessions, actor="bob")] == ["B"]
    assert [e["object_name"] for e in _audit(sessions, object_type="client")] == ["A", "B"]
    assert [e["object_name"] for e in _audit(sessions, object_type="client", object_id=1)] == ["A"]
    assert len(_audit(sessions, since="2000-01-01", until=dt.datetime.now(UTC) + dt.timedelta(minutes=1))) == 3
    assert _audit(sessions, since=dt.datetime.now(UTC) + dt.timedelta(minutes=1)) == []
    assert [e["object_name"] for e in _audit(sessions, limit=2)] == ["B", "n1"]
    with pytest.raises(UserError, match=r"^since: expected an ISO-8601 date"):
        _audit(sessions, since="yesterday")
    with sessions() as s:
        contexts = s.scalars(select(AuditEntry.context).order_by(AuditEntry.id)).all()
        assert contexts == ["cli", "cli", "cli"]
        assert current_store_version(s) == 3  # every change told the servers to reload


def test_audit_refuses_unknown_context(sqlite_url):
    from radiusd.db import open_store

    engine, sessions = open_store(sqlite_url)
    with pytest.raises(UserError, match=r"^context: expected one of cli, seed, web, api \(mail\)$"):
        with sessions.begin() as s:
            clients.create_client(s, name="A", actor="x", context="mail")
    with sessions() as s:
        assert s.scalars(select(Client)).all() == []
    engine.dispose()
