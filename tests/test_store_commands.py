"""`radiusd calls list|remove` and `radiusd cdr list` against real stores."""
from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

from sqlalchemy import select

from radiusd.cli import main
from radiusd.models import AuditEntry
from test_accounting_support import CUSTOMER_IP, T0, VENDOR_IP, acct, balance, cdrs, feed, open_calls, seed, snapshot_of

S = dt.timedelta(seconds=1)


def run(capsys, url, *argv):
    code = main([*argv, "--database-url", url])
    out, err = capsys.readouterr()
    return code, out, err


def _calls(sessions, ids, now):
    snap = snapshot_of(sessions)
    a, b = ids["gw-a"], ids["gw-b"]
    feed(sessions, snap, acct(a, "start", "C1", call_id="call-1", caller_address=CUSTOMER_IP,
                              called_number="441612345678", event_time=now - 90 * S))
    feed(sessions, snap, acct(b, "start", "C2", leg="term", call_id="call-1", remote_address=VENDOR_IP,
                              called_number="441612345678", event_time=now - 90 * S))
    feed(sessions, snap, acct(a, "stop", "C0", call_id="call-0", caller_address=CUSTOMER_IP,
                              called_number="441612345678", event_time=T0, session_time=43))


def test_calls_list_filters_and_json(store_url, sessions, capsys):
    ids = seed(sessions)
    _calls(sessions, ids, dt.datetime.now(dt.timezone.utc))
    code, out, _ = run(capsys, store_url, "calls", "list", "--json")
    rows = json.loads(out)
    assert code == 0 and {(r["leg"], r["account"], r["nas"]) for r in rows} == {
        ("orig", "acme-gw", "gw-a"), ("term", "vendor-out", "gw-b")}
    code, out, _ = run(capsys, store_url, "calls", "list", "--client", "vendorco", "--json")
    assert [r["account"] for r in json.loads(out)] == ["vendor-out"]
    code, out, _ = run(capsys, store_url, "calls", "list", "--nas", "gw-a")
    assert code == 0 and "acme-gw" in out and "vendor-out" not in out and out.startswith("ID")
    code, _, err = run(capsys, store_url, "calls", "list", "--account", "nobody")
    assert code == 2 and "account" in err and "nobody" in err


def test_calls_remove_writes_the_cdr_debits_and_audits(store_url, sessions, capsys):
    ids = seed(sessions)
    _calls(sessions, ids, dt.datetime.now(dt.timezone.utc))
    [call] = open_calls(sessions, account_id=ids["acme-gw"])
    code, out, _ = run(capsys, store_url, "calls", "remove", str(call.id), "--json", "--actor", "noc-alice")
    result = json.loads(out)
    assert code == 0 and result["removed"] == "call" and result["duration"] >= 90
    [cdr] = cdrs(sessions, leg_key=call.leg_key)
    assert cdr.disconnect_cause == "manual" and cdr.cost == Decimal(result["cost"]) > 0
    assert balance(sessions, ids["acme"]) == Decimal("100") - Decimal("0.08") - cdr.cost
    with sessions() as s:
        entry = s.scalars(select(AuditEntry).where(AuditEntry.object_type == "call")).one()
    assert (entry.actor, entry.action, entry.object_id) == ("noc-alice", "remove", call.id)
    code, _, err = run(capsys, store_url, "calls", "remove", str(call.id))
    assert code == 2 and "no open call" in err
    code, _, err = run(capsys, store_url, "calls", "remove", "abc")
    assert code == 2 and "id" in err


def test_cdr_list_filters_and_json(store_url, sessions, capsys):
    ids = seed(sessions)
    now = dt.datetime.now(dt.timezone.utc)
    _calls(sessions, ids, now)
    code, out, _ = run(capsys, store_url, "cdr", "list", "--json", "--account", "acme-gw")
    [row] = json.loads(out)
    assert code == 0 and (row["call_id"], row["cost"], row["billed_seconds"], row["result"]) == (
        "call-0", "0.08", 48, "success")
    assert row["leg_key"] == f"{ids['gw-a']}:C0"
    code, out, _ = run(capsys, store_url, "cdr", "list", "--json", "--since", "2026-11-25T21:00:00")
    assert json.loads(out) == []
    code, out, _ = run(capsys, store_url, "cdr", "list", "--json", "--until", "2026-11-25T21:00:00+00:00",
                       "--call-id", "call-0", "--nas", "gw-a", "--client", "acme", "--limit", "5")
    assert len(json.loads(out)) == 1
    code, out, _ = run(capsys, store_url, "cdr", "list")
    assert code == 0 and "call-0" in out
    for bad, field in ((["--since", "yesterday"], "since"), (["--limit", "0"], "limit"),
                       (["--nas", "gw-z"], "nas")):
        code, _, err = run(capsys, store_url, "cdr", "list", *bad)
        assert code == 2 and field in err
