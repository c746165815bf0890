"""The admin CLI covers the whole lifecycle (issue 9 §3), on SQLite and PostgreSQL: what can be
created can be changed and deleted (refused while in use, audited), accounts are easy to add and
find, a missing store is never created by accident, long lists say they were cut, and money
prints one way on both stores."""
from __future__ import annotations

import datetime as dt
import subprocess
import sys
from decimal import Decimal

from sqlalchemy import select

from radiusd.cli import main
from radiusd.models import ActiveCall, Cdr, Client, Rate
from test_cli_admin import DEMO, Cli, _one_line_error

import pytest

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.timezone.utc)


@pytest.fixture
def cli(store_url, capsys, monkeypatch):
    cli = Cli(store_url, capsys, monkeypatch)
    cli.ok("db", "init")
    cli.ok("seed", "load", DEMO)
    return cli


def _refused(cli, argv, field, value, *words):
    """Exit 2, one line naming the field and what still uses the object; nothing written."""
    before = cli.fingerprint()
    code, out, err = cli(*argv)
    _one_line_error(code, out, err, field, value)
    for word in words:
        assert word in err, err
    assert cli.fingerprint() == before, argv
    return err


def _audit(cli, **filters):
    argv = ["audit", "list"] + [x for k, v in filters.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    return cli.json(*argv)["rows"]


def test_rate_table_update_and_delete_refused_while_used(cli):
    _refused(cli, ("ratetable", "delete", "retail-usd"), "rate_table", "(retail-usd)",
             "clients Acme Telecom, Beta Voice, Gamma Unlimited, Load Test")
    _refused(cli, ("ratetable", "delete", "wholesale-usd"), "rate_table", "(wholesale-usd)",
             "client Carrier B", "account carrier-b-term")
    record = cli.json("ratetable", "update", "wholesale-usd", "--name", "vendor-usd", "--notes", "renamed")
    assert (record["name"], record["notes"]) == ("vendor-usd", "renamed")
    # free it: the vendor client and account go to no table
    cli.ok("client", "update", "Carrier B", "--term-rate-table", "none")
    cli.ok("account", "update", "carrier-b-term", "--term-rate-table", "none")
    assert cli.json("ratetable", "delete", "vendor-usd") == {"rate_table": "vendor-usd", "id": 2, "rates_deleted": 4}
    assert [t["name"] for t in cli.json("ratetable", "list")] == ["retail-usd"]
    entries = _audit(cli, object_type="rate_table", object_id=2)
    assert [e["action"] for e in entries] == ["update", "delete"]
    assert entries[0]["changes"] == {"name": ["wholesale-usd", "vendor-usd"], "notes": ["demo: vendor prices", "renamed"]}
    assert entries[1]["changes"]["name"] == ["vendor-usd", None] and entries[1]["changes"]["rates"] == [4, None]
    engine, sessions = cli.sessions()
    with sessions() as s:
        assert s.scalars(select(Rate).where(Rate.rate_table_id == 2)).all() == []
    engine.dispose()


def test_one_rate_update_and_delete(cli):
    cli.ok("rates", "add", "retail-usd", "--prefix", "44", "--price", "0.018", "--effective-from", "2030-01-01")
    # two rates for 44 now: which one must be said
    _refused(cli, ("rates", "update", "retail-usd", "--prefix", "44", "--price", "0.05"), "effective_from",
             "missing", "1970-01-01, 2030-01-01")
    updated = cli.json("rates", "update", "retail-usd", "--prefix", "44", "--effective-from", "1970-01-01",
                       "--price", "0.021", "--minimum", "30", "--effective-until", "2030-01-01")
    assert (updated["price_per_minute"], updated["minimum_seconds"], updated["effective_until"]) == (
        "0.021000", 30, "2030-01-01T00:00:00+00:00")
    _refused(cli, ("rates", "update", "retail-usd", "--prefix", "49", "--effective-until", "1969-01-01"),
             "effective_until", "(1969-01-01)")
    _refused(cli, ("rates", "delete", "retail-usd", "--prefix", "999"), "prefix", "(999)")
    # a call in progress rated by the rate keeps it
    engine, sessions = cli.sessions()
    with sessions.begin() as s:
        s.add(ActiveCall(leg_key="k1", call_id="c1", leg="orig", state="active", account_id=1, client_id=1,
                         rate_table_id=1, prefix="49", created_at=NOW, last_seen_at=NOW, started_at=NOW))
    _refused(cli, ("rates", "delete", "retail-usd", "--prefix", "49"), "prefix", "(49)", "call in progress #")
    with sessions.begin() as s:
        s.execute(ActiveCall.__table__.delete())
    engine.dispose()
    deleted = cli.json("rates", "delete", "retail-usd", "--prefix", "49")
    assert deleted["deleted"]["price_per_minute"] == "0.030000" and deleted["deleted"]["connection_fee"] == "0.05"
    prefixes = [r["prefix"] for r in cli.json("ratetable", "show", "retail-usd")["rate_list"]]
    assert prefixes == ["1", "33", "44", "44", "4420"]
    entries = _audit(cli, object_type="rate_table", object_id=1)
    assert [e["action"] for e in entries][-3:] == ["rate-add", "rate-update", "rate-delete"]
    assert entries[-2]["changes"] == {"rate '44' from 1970-01-01T00:00:00+00:00": [
        {"effective_until": None, "minimum_seconds": 1, "price_per_minute": "0.020000"},
        {"effective_until": "2030-01-01T00:00:00+00:00", "minimum_seconds": 30, "price_per_minute": "0.021000"}]}
    assert entries[-1]["changes"]["rate '49'"][0]["price_per_minute"] == "0.030000"


def test_routing_rule_and_plan_delete(cli):
    rules = cli.json("routing", "show", "default")["rule_list"]
    assert [r["id"] for r in rules] == [1, 2]
    _refused(cli, ("routing", "rule-delete", "default", "7"), "rule", "(7)")
    assert cli.json("routing", "rule-delete", "default", "1")["deleted"]["prefix"] == "44"
    assert [r["id"] for r in cli.json("routing", "show", "default")["rule_list"]] == [2]
    _refused(cli, ("routing", "delete", "default"), "routing_plan", "(default)",
             "clients Acme Telecom, Beta Voice, Load Test")
    for client in ("Acme Telecom", "Beta Voice", "Load Test"):
        cli.ok("client", "update", client, "--routing-plan", "none")
    cli.ok("account", "update", "acme-gw", "--orig-routing-plan", "default")
    _refused(cli, ("routing", "delete", "default"), "routing_plan", "(default)", "account acme-gw")
    cli.ok("account", "update", "acme-gw", "--orig-routing-plan", "none")
    assert cli.json("routing", "delete", "default")["rules_deleted"] == 1
    assert cli.json("routing", "list") == []
    entries = _audit(cli, object_type="routing_plan")
    assert [e["action"] for e in entries][-2:] == ["rule-delete", "delete"]
    assert entries[-2]["changes"] == {"rule #1": [
        {"id": 1, "priority": 1, "prefix": "44", "terminator": "carrier-b-term", "share": 100}, None]}


def test_client_delete_refused_with_accounts_or_cdrs(cli):
    _refused(cli, ("client", "delete", "Acme Telecom"), "client", "(Acme Telecom)",
             "accounts acme-gw, acme-gw-0099, acme-sip, acme-ani, acme-v6")
    cli.ok("client", "add", "Epsilon", "--balance", "3.5")
    cli.ok("account", "add", "eps-gw", "--client", "Epsilon", "--ips", "10.77.0.1")
    _refused(cli, ("client", "delete", "Epsilon"), "client", "(Epsilon)", "account eps-gw")
    engine, sessions = cli.sessions()
    with sessions.begin() as s:
        client_id = s.scalar(select(Client.id).where(Client.name == "Epsilon"))
        s.add(Cdr(leg_key="e1", call_id="e1", leg="orig", account_id=None, client_id=client_id,
                  disconnect_time=NOW, result="success", cost=Decimal("0.1")))
    cli.ok("account", "delete", "eps-gw", "--yes")
    _refused(cli, ("client", "delete", "Epsilon"), "client", "(Epsilon)", "1 CDR")
    with sessions.begin() as s:
        s.execute(Cdr.__table__.delete().where(Cdr.client_id == client_id))
    engine.dispose()
    assert cli.json("client", "delete", "Epsilon") == {"client": "Epsilon", "id": client_id, "balance": "3.50",
                                                       "currency": "USD"}
    deletion = _audit(cli, object_type="client", object_id=client_id)[-1]
    assert deletion["action"] == "delete" and deletion["changes"]["balance"] == ["3.50", None]
    code, out, err = cli("client", "show", "Epsilon")
    _one_line_error(code, out, err, "client", "(Epsilon)")


def test_account_add_infers_ident_by_and_refuses_ambiguity(cli):
    assert cli.json("account", "add", "z-ip", "--client", "Beta Voice", "--ips", "10.66.0.0/24")["ident_by"] == "ip"
    assert cli.json("account", "add", "z-ani", "--client", "Beta Voice", "--ani", "15550001111")["ident_by"] == "ani"
    code, out, err = cli("account", "add", "z-sip", "--client", "Beta Voice", "--password-stdin", stdin="Zz-pass-1\n")
    assert code == 0 and "ident_by           name" in out
    # the account is created with what it was given, and says so in the audit
    assert _audit(cli, object_type="account")[-1]["changes"]["ident_by"] == [None, "name"]
    _refused(cli, ("account", "add", "z-2", "--client", "Beta Voice", "--ips", "10.66.1.0/24", "--ani", "15550002222"),
             "ident_by", "(ambiguous)", "ips and ani", "ip or ani")
    _refused(cli, ("account", "add", "z-3", "--client", "Beta Voice"), "ident_by", "(missing)")
    # an explicit --ident-by still decides: an IP account may carry an ANI
    assert cli.json("account", "add", "z-4", "--client", "Beta Voice", "--ident-by", "ip", "--ips", "10.66.2.1",
                    "--ani", "15550003333")["ident_by"] == "ip"


def test_account_list_shows_status_and_search_by_active_gateway_plan(cli):
    cli.ok("account", "deactivate", "acme-ani")
    cli.ok("account", "update", "acme-v6", "--active", "no")
    cli.ok("client", "update", "Gamma Unlimited", "--active", "no")
    cli.ok("account", "update", "acme-sip", "--gateways", "kamailio-lab")
    cli.ok("account", "update", "acme-gw", "--gateways", "localhost")
    cli.ok("account", "update", "beta-gw", "--orig-routing-plan", "none")
    cli.ok("routing", "add", "other")
    cli.ok("account", "update", "acme-gw-0099", "--orig-routing-plan", "other")
    status = {a["name"]: a["status"] for a in cli.json("account", "list")}
    assert (status["acme-gw"], status["acme-ani"], status["acme-v6"], status["gamma-gw"]) == (
        "active", "deactivated", "account inactive", "client inactive")
    table = cli.ok("account", "list", "--client", "Acme Telecom")
    assert table.splitlines()[0].split()[:4] == ["ID", "NAME", "CLIENT", "STATUS"]
    assert "deactivated" in table and "inactive" in table

    def names(*filters):
        return [a["name"] for a in cli.json("account", "search", *filters)]

    assert names("--active", "no") == ["acme-ani", "gamma-gw", "acme-v6"]
    assert "acme-gw" in names("--active", "yes") and "gamma-gw" not in names("--active", "yes")
    on_kamailio = names("--gateway", "kamailio-lab")
    assert "acme-sip" in on_kamailio and "acme-gw" not in on_kamailio and "beta-gw" in on_kamailio
    assert "acme-sip" not in names("--gateway", "localhost") and "acme-gw" in names("--gateway", "localhost")
    # plan: the account's own originator plan, else its client's
    assert names("--routing-plan", "other") == ["acme-gw-0099"]
    by_default = names("--routing-plan", "default")
    assert "acme-gw" in by_default and "beta-gw" in by_default and "acme-gw-0099" not in by_default
    assert names("--routing-plan", "default", "--client", "Beta Voice", "--active", "yes") == ["beta-gw"]
    _refused(cli, ("account", "search", "--gateway", "nope"), "gateway", "(nope)")
    _refused(cli, ("account", "search", "--active", "maybe"), "active", "(maybe)")


def test_commands_do_not_create_a_store(tmp_path, capsys, store_url):
    missing = tmp_path / "typo.sqlite3"
    code = main(["client", "list", "--database-url", f"sqlite:///{missing}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and str(missing) in err and "db init" in err
    assert not missing.exists()
    # a database without our schema (SQLite file or PostgreSQL): named, password hidden, nothing made
    empty = store_url
    if empty.startswith("sqlite"):
        import sqlite3

        sqlite3.connect(empty.split(":///", 1)[1]).execute("CREATE TABLE unrelated (x)").connection.close()
    code = main(["account", "list", "--database-url", empty])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "no radiusd store" in err, err
    if "@" in empty:
        assert ":***@" in err and "radiusd:radiusd@" not in err
    for argv in (["cdr", "list"], ["calls", "list"], ["audit", "list"], ["seed", "load", DEMO]):
        assert main([*argv, "--database-url", empty]) == 2, argv
        assert "no radiusd store" in capsys.readouterr().err
    from sqlalchemy import inspect

    from radiusd.db import make_engine
    engine = make_engine(empty)
    assert inspect(engine).get_table_names() in ([], ["unrelated"])
    engine.dispose()
    if "@" in empty:  # a PostgreSQL database that does not exist at all: one line, the URL named
        gone = empty.rsplit("/", 1)[0] + "/radiusd_no_such_db"
        assert main(["client", "list", "--database-url", gone]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "radiusd_no_such_db" in err and ":***@" in err, err
    # nor does the server: it stops at start, saying why
    served = subprocess.run([sys.executable, "-m", "radiusd", "serve", "--workers", "1", "--metrics-port", "0",
                             "--auth-port", "0", "--acct-port", "0", "--database-url", f"sqlite:///{missing}"],
                            capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    assert served.returncode == 2 and "radiusd db init" in served.stderr and not missing.exists()
    # an unsupported scheme is one line, not a traceback
    for url in ("mysql://u:secret@db/radiusd", "radiusd.sqlite3"):
        code = main(["client", "list", "--database-url", url])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and "sqlite or postgresql" in err and "secret" not in err, err
    # db init is the one that creates
    assert main(["db", "init", "--database-url", empty]) == 0
    assert "store ready" in capsys.readouterr().out
    assert main(["account", "list", "--database-url", empty]) == 0
    assert capsys.readouterr().out.strip() == "(none)"


def test_lists_say_when_limit_cut_them_and_call_id_first_word(cli, store_url):
    engine, sessions = cli.sessions()
    conf = "3D3C5E4A 11D11F0B 8003A2B4 5C2B1A90"
    with sessions.begin() as s:
        for n in range(5):
            s.add(Cdr(leg_key=f"k{n}", call_id=conf if n < 2 else f"sip-{n}@host", leg="orig" if n else "term",
                      account_id=1, client_id=1, disconnect_time=NOW + dt.timedelta(minutes=n), result="success",
                      cost=Decimal("0.5"), price_per_minute=Decimal("0.01"), flags="duration_capped" if n == 4 else ""))
    engine.dispose()
    flagged = cli.json("cdr", "list", "--flagged", "yes")["rows"]
    assert [(r["leg_key"], r["flags"]) for r in flagged] == [("k4", "duration_capped")]
    assert cli.json("cdr", "list", "--flagged", "no")["total"] == 4
    code, out, err = cli("cdr", "list", "--flagged", "perhaps")
    assert code == 2 and "flagged: expected yes or no (perhaps)" in err
    code, out, err = cli("cdr", "list", "--limit", "3")
    assert code == 0 and len(out.strip().splitlines()) == 4  # header + 3
    assert err.strip() == "showing 3 of 5; use --limit 5 to see them all"
    page = cli.json("cdr", "list", "--limit", "3")
    assert page["total"] == 5 and len(page["rows"]) == 3
    code, out, err = cli("cdr", "list")
    assert code == 0 and err == ""  # nothing left out, nothing said
    for given in ("3D3C5E4A", "3d3c5e4a", conf, conf.lower().replace(" ", "  ")):
        rows = cli.json("cdr", "list", "--call-id", given)["rows"]
        assert sorted(r["leg"] for r in rows) == ["orig", "term"], given
    assert cli.json("cdr", "list", "--call-id", "3D3C5E")["rows"] == []  # a word is whole, not any prefix
    assert len(cli.json("cdr", "list", "--call-id", "sip-3@host")["rows"]) == 1
    # audit list says so too
    cli.ok("client", "update", "Beta Voice", "--notes", "audited")
    code, out, err = cli("audit", "list", "--limit", "1")
    assert code == 0 and err.startswith("showing 1 of 2;")
    assert cli.json("audit", "list", "--limit", "1")["total"] == 2


def test_money_prints_one_way_on_both_stores(cli):
    cli.ok("client", "topup", "Beta Voice", "0.000001")
    cli.ok("rates", "add", "retail-usd", "--prefix", "81", "--price", "0.1", "--connection-fee", "0.0150")
    engine, sessions = cli.sessions()
    with sessions.begin() as s:
        s.add(Cdr(leg_key="m1", call_id="m1", leg="orig", account_id=1, client_id=1, disconnect_time=NOW,
                  result="success", cost=Decimal("1.2"), price_per_minute=Decimal("0.0125")))
    engine.dispose()
    clients = {c["name"]: c for c in cli.json("client", "list")}
    assert (clients["Acme Telecom"]["balance"], clients["Acme Telecom"]["credit_limit"],
            clients["Beta Voice"]["balance"]) == ("100.00", "50.00", "0.000001")
    [cdr] = cli.json("cdr", "list")["rows"]
    assert (cdr["cost"], cdr["price_per_minute"]) == ("1.20", "0.012500")
    rates = {r["prefix"]: r for r in cli.json("ratetable", "show", "retail-usd")["rate_list"]}
    assert (rates["1"]["price_per_minute"], rates["49"]["connection_fee"], rates["81"]["connection_fee"]) == (
        "0.010000", "0.05", "0.015")
    table = cli.ok("ratetable", "show", "retail-usd")
    assert "0.010000" in table and "0.015000" in table
    cdr_table = cli.ok("cdr", "list")
    assert " 0.012500 " in cdr_table and " 1.20 " in cdr_table
    added = _audit(cli, object_type="rate_table")[-1]["changes"]["rate '81'"][1]
    assert (added["price_per_minute"], added["connection_fee"]) == ("0.100000", "0.015")
