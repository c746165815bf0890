"""SQL seed loading: the demo seed on both stores, and bad files that must leave nothing behind."""
from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from radiusd.admin import clients, seeds
from radiusd.cli_output import UserError
from radiusd.db import current_store_version
from radiusd.models import Account, AuditEntry, Client, Nas, Rate

DEMO = Path(__file__).resolve().parent.parent / "schema" / "seeds" / "demo.sql"
UTC = dt.timezone.utc

DEMO_COUNTS = {
    "nas": 3, "rate_tables": 2, "rates": 9, "routing_plans": 1, "clients": 5, "accounts": 10,
    "account_networks": 10, "routing_rules": 2,
}


def _rate(session, table_id, prefix):
    return session.scalars(select(Rate).where(Rate.rate_table_id == table_id, Rate.prefix == prefix)).one()


def test_demo_seed_loads_with_exact_values(sessions):
    loaded = seeds.load_seed(sessions, DEMO, actor="tester")
    assert loaded == DEMO_COUNTS
    with sessions() as s:
        assert {k: v for k, v in seeds.table_counts(s, list(DEMO_COUNTS)).items()} == DEMO_COUNTS
        acme, beta, carrier, gamma = (s.get(Client, i) for i in (1, 2, 3, 4))
        assert (acme.name, acme.balance, acme.credit_limit, acme.capacity) == \
            ("Acme Telecom", Decimal("100.00"), Decimal("50.00"), 10)
        assert (acme.orig_rate_table_id, acme.routing_plan_id) == (1, 1)
        assert (beta.balance, beta.credit_limit) == (Decimal(0), Decimal(0))
        assert carrier.credit_limit is None and carrier.term_rate_table_id == 2
        assert gamma.credit_limit is None and gamma.capacity == 2
        london = _rate(s, 1, "4420")
        assert (london.price_per_minute, london.minimum_seconds, london.interval_seconds, london.grace_seconds) == \
            (Decimal("0.015"), 30, 6, 5)
        germany = _rate(s, 1, "49")
        assert (germany.connection_fee, germany.minimum_seconds, germany.interval_seconds) == (Decimal("0.05"), 60, 60)
        assert _rate(s, 1, "33").effective_from == dt.datetime(2030, 1, 1, tzinfo=UTC)
        assert _rate(s, 2, "44").price_per_minute == Decimal("0.012")
        lab = s.get(Nas, 3)
        assert (lab.name, lab.address, lab.dialect, lab.caller_address_source) == \
            ("kamailio-lab", "127.0.0.2/32", "kamailio", "packet-source")
        assert s.get(Nas, 2).address == "::1/128"
        term = s.get(Account, 6)
        assert (term.orig_enabled, term.term_enabled, term.term_rate_table_id, term.term_protocol, term.term_proxy,
                term.term_port, term.term_capacity) == (False, True, 2, "sip", "198.51.100.20", 5060, 30)
        assert [n.cidr for n in s.get(Account, 7).networks] == ["127.0.0.1/32", "::1/128"]
        assert s.get(Account, 2).tech_prefix == "0099"
        assert s.get(Account, 1).orig_capacity == 5
        entry = s.scalars(select(AuditEntry)).one()
        assert (entry.object_type, entry.context, entry.actor, entry.object_name) == \
            ("seed", "seed", "tester", "demo.sql")
        assert json.loads(entry.changes)["accounts"] == [None, 10]
        assert current_store_version(s) == 1
    # PostgreSQL sequences must have moved past the seed's explicit ids
    with sessions.begin() as s:
        record = clients.create_client(s, actor="tester", name="Delta")
    assert record["id"] == 6


def _write(tmp_path, text: str) -> Path:
    path = tmp_path / "bad.sql"
    path.write_text(text)
    return path


GOOD_FIRST = (
    "-- a good statement first: it must be rolled back too\n"
    "INSERT INTO rate_tables (id, name, currency) VALUES (1, 'rt', 'USD');\n"
)


BAD_STATEMENTS = [
    ("INSERT INTO clients (id, name, colour) VALUES (1, 'A', 'red');", "no column (colour)"),
    ("INSERT INTO clients (id, name, balance) VALUES (1, 'A', 'lots');", "clients.balance"),
    ("INSERT INTO accounts (id, client_id, name, ident_by, tech_prefix) VALUES (1, 1, 'a', 'ip', 0099);",
     "expected text in single quotes (0099)"),
    ("INSERT INTO nas (id, name, address, secret) VALUES (1, 'n', '10.0.0.300', 'xyz');", "nas.address"),
    ("INSERT INTO clients (id, name, orig_rate_table_id) VALUES (1, 'A', 99);", "clients"),
    ("INSERT INTO clients (id, name, active) VALUES (1, 'A', maybe);", "unsupported value"),
    ("INSERT INTO clients (id, name) VALUES (1, 'A);", "unterminated string"),
    ("DELETE FROM clients;", "only INSERT"),
    ("INSERT INTO nowhere (id) VALUES (1);", "unknown table (nowhere)"),
]


def test_bad_statement_aborts_whole_file_and_names_the_line(sessions, tmp_path):
    # one store per backend for all cases: each failed load must leave it exactly empty
    for bad_statement, reason in BAD_STATEMENTS:
        path = _write(tmp_path, GOOD_FIRST + "\n" + bad_statement + "\n")
        with pytest.raises(UserError) as err:
            seeds.load_seed(sessions, path, actor="tester")
        message = str(err.value)
        assert message.startswith(f"{path}:4: "), message
        assert reason in message, message
        with sessions() as s:
            counts = seeds.table_counts(s, ["rate_tables", "clients", "accounts", "nas", "audit_log"])
            assert set(counts.values()) == {0}, (bad_statement, counts)
            assert current_store_version(s) == 0


def test_bad_value_in_a_multi_line_statement_names_its_own_line(sessions, tmp_path):
    path = _write(tmp_path, (
        "INSERT INTO rate_tables (id, name, currency) VALUES\n"
        "  (1, 'a', 'USD'),\n"
        "  (2, 'b', 'USD');\n"
        "INSERT INTO rates (id, rate_table_id, prefix, price_per_minute, effective_from) VALUES\n"
        "  (1, 1, '44', 0.01, '1970-01-01'),\n"
        "  (2, 1, '49', 0.02, 'last tuesday');\n"
    ))
    with pytest.raises(UserError, match=r"bad\.sql:6: rates\.effective_from: expected an ISO-8601 date"):
        seeds.load_seed(sessions, path, actor="tester")
    with sessions() as s:
        assert seeds.table_counts(s, ["rate_tables", "rates"]) == {"rate_tables": 0, "rates": 0}


def test_loading_the_demo_twice_fails_and_keeps_the_first_load(sessions):
    seeds.load_seed(sessions, DEMO, actor="tester")
    with pytest.raises(UserError, match=r"demo\.sql:8: nas\.id: already used by NAS #1 \(1\)"):
        seeds.load_seed(sessions, DEMO, actor="tester")
    with sessions() as s:
        assert seeds.table_counts(s, list(DEMO_COUNTS)) == DEMO_COUNTS
        assert seeds.table_counts(s, ["audit_log"]) == {"audit_log": 1}


def test_seed_accepts_comments_transaction_lines_and_quotes(sessions, tmp_path):
    path = _write(tmp_path, (
        "BEGIN;\n"
        "/* block\n comment */\n"
        "INSERT INTO clients (id, name, notes, balance) VALUES (1, 'O''Brien Telecom', 'semi; colon -- not a comment', -1.5);\n"
        "COMMIT;\n"
    ))
    assert seeds.load_seed(sessions, path, actor="tester") == {"clients": 1}
    with sessions() as s:
        client = s.get(Client, 1)
        assert (client.name, client.notes, client.balance) == \
            ("O'Brien Telecom", "semi; colon -- not a comment", Decimal("-1.5"))
