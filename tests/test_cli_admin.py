"""The admin CLI end to end on both stores: what an operator types, sees, and what lands in the store."""
from __future__ import annotations

import datetime as dt
import io
import json
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from radiusd.admin import seeds
from radiusd.cli import main
from radiusd.db import current_store_version, open_store
from radiusd.models import AuditEntry, Cdr

DEMO = str(Path(__file__).resolve().parent.parent / "schema" / "seeds" / "demo.sql")
NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.timezone.utc)
SEED_SECRETS = ("testing123", "s3cret-pass")


class Cli:
    """Runs `radiusd ...` in-process against one store and keeps everything it printed."""

    def __init__(self, url, capsys, monkeypatch):
        self.url, self.capsys, self.monkeypatch = url, capsys, monkeypatch
        self.printed: list[str] = []

    def __call__(self, *argv, stdin: str | None = None):
        if stdin is not None:
            self.monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        # half the calls put the common options after the subcommand, as users do
        args = [*argv, "--database-url", self.url, "--actor", "ops"] if len(argv) % 2 else \
            ["--database-url", self.url, "--actor", "ops", *argv]
        code = main(args)
        out, err = self.capsys.readouterr()
        self.printed += [out, err]
        return code, out, err

    def json(self, *argv):
        code, out, err = self(*argv, "--json")
        assert code == 0, err
        return json.loads(out)

    def ok(self, *argv, stdin=None):
        code, out, err = self(*argv, stdin=stdin)
        assert code == 0, err
        return out

    def fingerprint(self):
        engine, sessions = open_store(self.url)
        try:
            with sessions() as s:
                return seeds.table_counts(s), current_store_version(s)
        finally:
            engine.dispose()

    def sessions(self):
        return open_store(self.url)


@pytest.fixture
def cli(store_url, capsys, monkeypatch):
    cli = Cli(store_url, capsys, monkeypatch)
    cli.ok("db", "init")  # the one command that creates a store
    return cli


@pytest.fixture
def demo_cli(cli):
    cli.ok("seed", "load", DEMO)
    return cli


def test_seed_load_reports_rows_and_search_finds_accounts_by_ip(cli):
    out = cli.ok("seed", "load", DEMO)
    assert "accounts          10" in out and "loaded 42 rows" in out
    out = cli.ok("account", "search", "--ip", "10.1.2.3")
    lines = out.strip().splitlines()
    assert lines[0].split()[:5] == ["ID", "NAME", "CLIENT", "STATUS", "IDENT_BY"]
    assert [line.split()[1] for line in lines[1:]] == ["acme-gw", "acme-gw-0099"]
    assert [a["name"] for a in cli.json("account", "search", "--ip", "10.1.2.3")] == ["acme-gw", "acme-gw-0099"]
    assert [a["name"] for a in cli.json("account", "search", "unlimited")] == ["gamma-gw"]  # client name
    assert [a["name"] for a in cli.json("account", "search", "--tag", "none")] == []
    clients = cli.json("client", "list")
    assert [(c["name"], c["balance"], c["credit_limit"]) for c in clients] == [
        ("Acme Telecom", "100.00", "50.00"), ("Beta Voice", "0.00", "0.00"), ("Carrier B", "0.00", None),
        ("Gamma Unlimited", "0.00", None), ("Load Test", "0.00", None)]


def test_every_change_is_audited_and_no_secret_is_ever_printed(demo_cli, tmp_path):
    cli = demo_cli
    deck = tmp_path / "deck.csv"
    deck.write_text("prefix,price_per_minute,minimum_seconds,interval_seconds\n33,0.02,60,60\n")
    cli.ok("client", "add", "Delta Telecom", "--balance", "5", "--credit-limit", "unlimited", "--capacity", "3")
    cli.ok("client", "update", "Delta Telecom", "--capacity", "6", "--notes", "grew")
    cli.ok("client", "topup", "Delta Telecom", "20.25", "--notes", "invoice 7")
    cli.ok("nas", "add", "edge9", "--address", "203.0.113.9", "--secret-stdin", "--dialect", "opensips",
           stdin="N3w-Nas-Secret\n")
    cli.ok("nas", "update", "edge9", "--secret", "Rotated-Secret-9", "--require-message-authenticator", "no")
    cli.ok("ratetable", "add", "promo", "--currency", "USD")
    cli.ok("rates", "import", "promo", str(deck))
    cli.ok("rates", "add", "promo", "--prefix", "34", "--price", "0.05", "--effective-from", "2027-01-01")
    cli.ok("account", "add", "delta-sip", "--client", "Delta Telecom", "--ident-by", "name",
           "--password", "Pa55-word-xyz", "--gateways", "edge9", "--orig-rate-table", "promo")
    cli.ok("account", "update", "delta-sip", "--password-stdin", "--orig-capacity", "2", stdin="Chang3d-pass\n")
    cli.ok("routing", "add", "promo-plan")
    cli.ok("routing", "rule-add", "promo-plan", "--terminator", "carrier-b-term", "--prefix", "34")
    cli.ok("account", "deactivate", "delta-sip")
    cli.ok("account", "delete", "acme-sip", "--yes")
    # look at everything, in both output formats
    for command in (("nas", "list"), ("nas", "show", "edge9"), ("nas", "show", "localhost"), ("account", "list"),
                    ("account", "show", "delta-sip"), ("account", "search", "delta"), ("client", "show", "4"),
                    ("ratetable", "show", "promo"), ("routing", "show", "promo-plan"), ("audit", "list")):
        cli.ok(*command)
        cli.json(*command)

    entries = cli.json("audit", "list")["rows"]
    done = [(e["object_type"], e["object_name"], e["action"]) for e in entries]
    assert done == [
        ("seed", "demo.sql", "import"),
        ("client", "Delta Telecom", "create"), ("client", "Delta Telecom", "update"),
        ("client", "Delta Telecom", "topup"),
        ("nas", "edge9", "create"), ("nas", "edge9", "update"),
        ("rate_table", "promo", "create"), ("rate_table", "promo", "import"), ("rate_table", "promo", "rate-add"),
        ("account", "delta-sip", "create"), ("account", "delta-sip", "update"),
        ("routing_plan", "promo-plan", "create"), ("routing_plan", "promo-plan", "rule-add"),
        ("account", "delta-sip", "deactivate"), ("account", "acme-sip", "delete"),
    ]
    assert {e["actor"] for e in entries} == {"ops"}
    assert {e["context"] for e in entries[1:]} == {"cli"} and entries[0]["context"] == "seed"
    by_action = {(e["object_name"], e["action"]): e["changes"] for e in entries}
    assert by_action[("Delta Telecom", "update")] == {"capacity": [3, 6], "notes": ["", "grew"]}
    assert by_action[("Delta Telecom", "topup")]["balance"] == ["5.00", "25.25"]
    assert by_action[("edge9", "update")] == {"secret": ["***", "(changed)"],
                                               "message_authenticator": ["auto", "no"]}
    assert by_action[("delta-sip", "create")]["password"] == [None, "***"]
    assert by_action[("delta-sip", "update")] == {"password": ["***", "(changed)"], "orig_capacity": [None, 2]}
    assert by_action[("delta-sip", "deactivate")] == {"orig_enabled": [True, False]}
    assert by_action[("acme-sip", "delete")]["password"] == ["***", None]
    assert by_action[("promo", "import")]["rates"] == [0, 1]

    printed = "".join(cli.printed)
    engine, sessions = cli.sessions()
    with sessions() as s:
        logged = " ".join(s.scalars(select(AuditEntry.changes)))
    engine.dispose()
    for secret in SEED_SECRETS + ("N3w-Nas-Secret", "Rotated-Secret-9", "Pa55-word-xyz", "Chang3d-pass"):
        assert secret not in printed, secret
        assert secret not in logged, secret
    assert '"secret": "***"' in printed and '"password": "***"' in printed


def _one_line_error(code, out, err, field, value):
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"radiusd: error: {field}: "), lines[0]
    assert value in lines[0], lines[0]


def test_invalid_input_exits_2_with_one_line_and_writes_nothing(demo_cli, tmp_path):
    cli = demo_cli
    bad_csv = tmp_path / "deck.csv"
    bad_csv.write_text("prefix,price_per_minute\n44,0.01\n49,free\n")
    bad_seed = tmp_path / "more.sql"
    bad_seed.write_text("INSERT INTO clients (id, name) VALUES (50, 'Z');\nINSERT INTO clients (id, nam) VALUES (51, 'Y');\n")
    cases = [
        (("account", "add", "x", "--client", "Acme Telecom", "--ident-by", "ip", "--ips", "10.1.2.300"),
         "ips", "(10.1.2.300)"),
        (("account", "add", "x", "--client", "Acme Telecom", "--ident-by", "ip", "--ips", "10.0.0.0/33"),
         "ips", "(10.0.0.0/33)"),
        (("account", "add", "x", "--client", "Nobody", "--ident-by", "ip", "--ips", "10.3.0.1"), "client", "(Nobody)"),
        (("account", "add", "x", "--client", "1", "--ident-by", "ip", "--ips", "10.1.2.0/24", "--tech-prefix", "0099"),
         "ips", "acme-gw-0099"),
        (("account", "add", "x", "--client", "1", "--ident-by", "ip", "--ips", "10.3.0.1", "--orig-capacity", "-3"),
         "orig_capacity", "(-3)"),
        (("account", "update", "acme-gw", "--term-port", "99999"), "term_port", "(99999)"),
        (("account", "update", "acme-gw", "--ips", "10.1.2.0/24;10.300.0.0/16"), "ips", "(10.300.0.0/16)"),
        (("account", "delete", "acme-gw"), "account", "--yes"),
        (("client", "add", "Acme Telecom"), "name", "(Acme Telecom)"),
        (("client", "update", "Beta Voice", "--capacity", "-1"), "capacity", "(-1)"),
        (("client", "topup", "Beta Voice", "ten"), "amount", "(ten)"),
        (("nas", "add", "n9", "--address", "300.1.1.1", "--secret", "zzz-secret"), "address", "(300.1.1.1)"),
        (("nas", "add", "localhost", "--address", "10.0.0.1", "--secret", "zzz-secret"), "name", "(localhost)"),
        (("rates", "import", "retail-usd", str(bad_csv)), str(bad_csv) + ":3", "(free)"),
        (("rates", "import", "no-such-table", str(bad_csv)), "rate_table", "(no-such-table)"),
        (("seed", "load", str(bad_seed)), str(bad_seed) + ":2", "(nam)"),
        (("audit", "list", "--since", "last week"), "since", "(last week)"),
    ]
    before = cli.fingerprint()
    for argv, field, value in cases:
        _one_line_error(*cli(*argv), field, value)
        assert cli.fingerprint() == before, argv
    assert "zzz-secret" not in "".join(cli.printed)


def test_deactivate_keeps_the_account_delete_refunds_it(demo_cli):
    cli = demo_cli
    engine, sessions = cli.sessions()
    with sessions.begin() as s:
        for n, cost in enumerate(["1.25", "0.333333"]):
            s.add(Cdr(leg_key=f"k{n}", call_id=f"c{n}", leg="orig", account_id=1, client_id=1, disconnect_time=NOW,
                      result="success", cost=Decimal(cost)))
    engine.dispose()
    record = cli.json("account", "deactivate", "acme-gw")
    assert (record["orig_enabled"], record["term_enabled"], record["ips"]) == \
        (False, False, ["10.1.2.0/24", "192.0.2.10/32"])
    assert cli.json("account", "show", "acme-gw")["orig_capacity"] == 5
    assert cli.json("client", "show", "Acme Telecom")["balance"] == "100.00"
    result = cli.json("account", "delete", "acme-gw", "--yes")
    assert (result["cdrs_deleted"], result["refunded"], result["new_balance"]) == (2, "1.583333", "101.583333")
    assert cli.json("client", "show", "Acme Telecom")["balance"] == "101.583333"
    code, out, err = cli("account", "show", "acme-gw")
    _one_line_error(code, out, err, "account", "(acme-gw)")
    deletion = cli.json("audit", "list", "--object-type", "account", "--object-id", "1")["rows"][-1]
    assert deletion["action"] == "delete" and deletion["changes"]["refunded"] == [None, "1.583333"]
    assert deletion["changes"]["ips"] == [["10.1.2.0/24", "192.0.2.10/32"], None]
    out = cli.ok("account", "delete", "beta-gw", "--yes")
    assert "cdrs_deleted" in out and "refunded" in out


def test_db_init_creates_an_empty_store(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    assert main(["db", "init", "--database-url", url]) == 0
    assert "store ready" in capsys.readouterr().out
    assert main(["--database-url", url, "client", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
