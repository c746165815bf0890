"""The JSON API (/api/v1) on SQLite and PostgreSQL: tokens and roles, validation, audit, money, lists.

Most tests drive the API in-process (Starlette's TestClient: real ASGI requests, real store);
one runs it under uvicorn on a loopback port and talks plain HTTP to it.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from radiusd.admin import users
from radiusd.models import Account, ApiToken, AuditEntry, Cdr, Client, Nas, Rate
from radiusd.web.api import router
from radius_server import free_port
from test_accounting_support import CUSTOMER_IP, T0, VENDOR_IP, acct, feed, open_calls, seed, snapshot_of

S = dt.timedelta(seconds=1)
ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery"


def make_app(sessions) -> FastAPI:
    app = FastAPI(title="radiusd test")
    app.state.sessions = sessions
    app.include_router(router)
    return app


class Api:
    def __init__(self, sessions):
        self.sessions = sessions
        with sessions.begin() as s:
            users.add_user(s, "alice", PASSWORD, "admin", "root", "cli")
            users.add_user(s, "victor", PASSWORD, "viewer", "root", "cli")
            self.admin_token = users.issue_token(s, "alice", "crm", "root", "cli")
            self.viewer_token = users.issue_token(s, "victor", "reports", "root", "cli")
        self.http = TestClient(make_app(sessions))

    def call(self, method: str, path: str, token: str | None = "admin", **kw):
        headers = kw.pop("headers", {})
        if token == "admin":
            headers["Authorization"] = f"Bearer {self.admin_token}"
        elif token == "viewer":
            headers["Authorization"] = f"Bearer {self.viewer_token}"
        elif token is not None:
            headers["Authorization"] = token
        return self.http.request(method, "/api/v1" + path, headers=headers, **kw)

    def count(self, model) -> int:
        with self.sessions() as s:
            return s.scalar(select(func.count()).select_from(model))

    def audit(self, **where) -> list[AuditEntry]:
        with self.sessions() as s:
            query = select(AuditEntry).order_by(AuditEntry.id)
            for key, value in where.items():
                query = query.where(getattr(AuditEntry, key) == value)
            return list(s.scalars(query))


@pytest.fixture
def api(sessions):
    return Api(sessions)


def error_of(response) -> tuple[int, str | None]:
    body = response.json()
    assert set(body) == {"error"} and body["error"]["message"], body
    return response.status_code, body["error"]["field"]


def test_admin_token_creates_client_and_account_audited_as_api(api):
    r = api.call("POST", "/clients", json={"name": "acme", "balance": "10.50", "credit_limit": None,
                                           "capacity": 20})
    assert r.status_code == 201, r.text
    assert r.json()["balance"] == "10.50" and r.json()["credit_limit"] is None
    r = api.call("POST", "/accounts", json={"client": "acme", "name": "acme-gw", "ident_by": "ip",
                                            "ips": ["198.51.100.10", "2001:db8::/64"], "tech_prefix": "1234#"})
    assert r.status_code == 201, r.text
    assert r.json()["ips"] == ["198.51.100.10/32", "2001:db8::/64"]
    # what another object already has is a conflict (409), named like any other field error
    assert error_of(api.call("POST", "/clients", json={"name": "acme"})) == (409, "name")
    r = api.call("POST", "/accounts", json={"client": "acme", "name": "acme-gw2", "ident_by": "ip",
                                            "ips": "198.51.100.10", "tech_prefix": "1234#"})
    assert error_of(r) == (409, "ips")
    shown = api.call("GET", "/accounts/acme-gw", token="viewer")
    assert shown.status_code == 200 and shown.json()["client"] == "acme" and shown.json()["tech_prefix"] == "1234#"
    client = api.call("GET", "/clients/acme", token="viewer").json()
    assert client["accounts"] == ["acme-gw"] and client["capacity"] == 20
    entries = api.audit(context="api")
    assert [(e.object_type, e.action, e.actor) for e in entries] == [
        ("client", "create", "alice"), ("account", "create", "alice")]


def test_viewer_token_reads_but_cannot_change_anything(api):
    assert api.call("POST", "/clients", json={"name": "acme"}).status_code == 201
    audit_before = len(api.audit())
    for method, path, body in (
            ("POST", "/clients", {"name": "other"}),
            ("PATCH", "/clients/acme", {"capacity": 5}),
            ("POST", "/clients/acme/topups", {"amount": "100"}),
            ("POST", "/accounts", {"client": "acme", "name": "gw", "ident_by": "ip", "ips": "10.9.9.9"}),
            ("POST", "/nas", {"name": "sw", "address": "10.0.0.9", "secret": "x" * 12}),
            ("POST", "/rate-tables", {"name": "retail"}),
            ("POST", "/calls/1/end", None),
            ("DELETE", "/accounts/acme", None)):
        r = api.call(method, path, token="viewer", json=body)
        assert error_of(r) == (403, "authorization"), (method, path, r.text)
        assert "viewer" in r.json()["error"]["message"]
    assert api.count(Client) == 1 and len(api.audit()) == audit_before
    with api.sessions() as s:
        assert s.scalar(select(Client.capacity).where(Client.name == "acme")) is None
        assert s.scalar(select(Client.balance).where(Client.name == "acme")) == 0
    listed = api.call("GET", "/clients", token="viewer")
    assert listed.status_code == 200 and [c["name"] for c in listed.json()["items"]] == ["acme"]
    assert api.call("GET", "/me", token="viewer").json() == {"name": "victor", "role": "viewer"}


def test_invalid_ip_is_400_naming_the_field_and_writes_nothing(api):
    api.call("POST", "/clients", json={"name": "acme"})
    audit_before = len(api.audit())
    r = api.call("POST", "/accounts", json={"client": "acme", "name": "gw", "ident_by": "ip",
                                            "ips": ["198.51.100.10", "10.1.2"]})
    assert error_of(r) == (400, "ips") and "10.1.2" in r.json()["error"]["message"]
    r = api.call("POST", "/nas", json={"name": "sw", "address": "10.0.0.300", "secret": "s" * 12})
    assert error_of(r) == (400, "address")
    r = api.call("PATCH", "/clients/acme", json={"credit_limit": "ten"})
    assert error_of(r) == (400, "credit_limit")
    r = api.call("POST", "/clients", json={"name": "x", "colour": "red"})
    assert error_of(r) == (400, "colour")
    r = api.call("POST", "/clients", content=b"{not json", headers={"Content-Type": "application/json"})
    assert error_of(r) == (400, "body")
    r = api.call("POST", "/clients", content=b'{"name": "' + b"x" * (2 << 20) + b'"}')
    assert error_of(r) == (413, "body")
    assert api.count(Account) == 0 and api.count(Nas) == 0 and api.count(Client) == 1
    assert len(api.audit()) == audit_before
    with api.sessions() as s:
        assert s.scalar(select(Client.credit_limit).where(Client.name == "acme")) == 0


def test_missing_or_bad_token_is_401_and_writes_nothing(api):
    with api.sessions.begin() as s:
        revoked = users.issue_token(s, "alice", "old", "root", "cli")
        users.revoke_token(s, s.scalar(select(func.max(ApiToken.id))), "root", "cli")
        users.add_user(s, "gone", PASSWORD, "admin", "root", "cli")
        gone = users.issue_token(s, "gone", "", "root", "cli")
        users.update_user(s, "gone", "root", "cli", active=False)
    audit_before = len(api.audit())
    for token in (None, "Bearer", "Basic YWxpY2U6cHc=", "Bearer rdt_not-a-token", f"Bearer {api.admin_token}x",
                  f"Bearer {revoked}", f"Bearer {gone}"):
        r = api.call("POST", "/clients", token=token, json={"name": "acme"})
        assert error_of(r) == (401, "authorization"), token
        assert r.headers["www-authenticate"] == "Bearer"
        assert api.call("GET", "/clients", token=token).status_code == 401
    # the token is judged before the body: a caller without a token learns nothing about validation
    assert error_of(api.call("POST", "/clients", token=None, content=b"{not json")) == (401, "authorization")
    assert error_of(api.call("POST", "/accounts", token="viewer", json={"ips": "10.1.2"})) == (403, "authorization")
    assert api.count(Client) == 0 and len(api.audit()) == audit_before


def test_topup_changes_the_balance_exactly(api):
    api.call("POST", "/clients", json={"name": "acme", "balance": "10.10"})
    amounts = ["0.2", 0.1, "0.000001", "-5.30"]  # a JSON number is read exactly, not as a float
    for amount in amounts:
        r = api.call("POST", "/clients/acme/topups", json={"amount": amount, "notes": "wire 42"})
        assert r.status_code == 201, r.text
    assert r.json()["balance"] == "5.100001" and r.json()["balance_before"] == "10.400001"
    with api.sessions() as s:
        assert s.scalar(select(Client.balance).where(Client.name == "acme")) == Decimal("5.100001")
    assert api.call("GET", "/clients/acme").json()["balance"] == "5.100001"
    for bad in ("0", "abc", "1.0000001", None):
        assert error_of(api.call("POST", "/clients/acme/topups", json={"amount": bad})) == (400, "amount")
    assert error_of(api.call("POST", "/clients/acme/topups", json={})) == (400, "amount")
    assert error_of(api.call("PATCH", "/clients/acme", json={"balance": "1000"})) == (400, "balance")
    assert error_of(api.call("POST", "/clients/nobody/topups", json={"amount": "1"})) == (404, "client")
    topups = api.audit(object_type="client", context="api")
    assert [e.action for e in topups] == ["create", "topup", "topup", "topup", "adjust"]
    assert json.loads(topups[1].changes)["notes"] == [None, "wire 42"]


def _calls_and_cdrs(sessions, ids):
    now = dt.datetime.now(dt.timezone.utc)
    snap = snapshot_of(sessions)
    a, b = ids["gw-a"], ids["gw-b"]
    feed(sessions, snap, acct(a, "start", "C1", call_id="call-1", caller_address=CUSTOMER_IP,
                              called_number="441612345678", event_time=now - 90 * S))
    feed(sessions, snap, acct(a, "stop", "C0", call_id="call-0", caller_address=CUSTOMER_IP,
                              called_number="441612345678", event_time=T0, session_time=43))
    feed(sessions, snap, acct(b, "stop", "C2", leg="term", call_id="call-0", remote_address=VENDOR_IP,
                              called_number="441612345678", event_time=T0 + S, session_time=43))
    feed(sessions, snap, acct(a, "stop", "C3", call_id="call-3", caller_address=CUSTOMER_IP,
                              called_number="441612345678", event_time=T0 + 3600 * S, session_time=10))


def test_cdr_list_filters_as_the_cli(api):
    ids = seed(api.sessions)
    _calls_and_cdrs(api.sessions, ids)

    def cdrs(**params):
        r = api.call("GET", "/cdrs", token="viewer", params=params)
        assert r.status_code == 200, r.text
        return r.json()

    everything = cdrs()
    assert everything["total"] == 3 and [c["call_id"] for c in everything["items"]] == ["call-3", "call-0", "call-0"]
    first = everything["items"][-1]
    assert (first["account"], first["client"], first["nas"], first["cost"], first["billed_seconds"]) == (
        "acme-gw", "acme", "gw-a", "0.08", 48)
    assert [c["call_id"] for c in cdrs(account="acme-gw")["items"]] == ["call-3", "call-0"]
    assert [c["leg"] for c in cdrs(client="vendorco")["items"]] == ["term"]
    assert cdrs(nas="gw-b")["total"] == 1
    assert cdrs(call_id="call-0")["total"] == 2
    assert cdrs(since=(T0 + 1800 * S).isoformat())["total"] == 1
    assert cdrs(until="2026-11-25T20:00:01Z")["total"] == 1  # until is exclusive
    assert cdrs(flagged="no")["total"] == 3 and cdrs(flagged="yes")["total"] == 0
    assert everything["items"][0]["flags"] == ""
    page = cdrs(limit=1, offset=1)
    assert page["total"] == 3 and page["limit"] == 1 and [c["call_id"] for c in page["items"]] == ["call-0"]
    for params, field in (({"since": "yesterday"}, "since"), ({"limit": "0"}, "limit"), ({"nas": "gw-z"}, "nas"),
                          ({"offset": "-1"}, "offset"), ({"colour": "red"}, "colour")):
        assert error_of(api.call("GET", "/cdrs", params=params)) == (400, field)


def test_calls_list_and_end_a_call(api):
    ids = seed(api.sessions)
    _calls_and_cdrs(api.sessions, ids)
    listed = api.call("GET", "/calls", token="viewer").json()
    assert listed["total"] == 1 and listed["items"][0]["account"] == "acme-gw"
    assert api.call("GET", "/calls", params={"client": "vendorco"}).json()["total"] == 0
    call_id = listed["items"][0]["id"]
    assert error_of(api.call("POST", f"/calls/{call_id}/end", token="viewer")) == (403, "authorization")
    r = api.call("POST", f"/calls/{call_id}/end")
    assert r.status_code == 200 and r.json()["removed"] == "call" and r.json()["duration"] >= 90
    assert open_calls(api.sessions) == []
    cdrs = api.call("GET", "/cdrs", params={"call_id": "call-1"}).json()["items"]
    assert len(cdrs) == 1 and cdrs[0]["disconnect_cause"] == "manual" and Decimal(cdrs[0]["cost"]) > 0
    assert error_of(api.call("POST", f"/calls/{call_id}/end")) == (404, "id")
    [entry] = api.audit(object_type="call")
    assert (entry.actor, entry.context, entry.action) == ("alice", "api", "remove")


def test_secrets_and_passwords_are_never_returned(api):
    seed(api.sessions)  # NAS secrets s3cret-*, account alice's password alice-pw
    r = api.call("POST", "/nas", json={"name": "sw9", "address": "10.0.9.0/24", "secret": "TopSecret-9"})
    assert r.status_code == 201 and r.json()["secret"] == "***"
    r = api.call("PATCH", "/nas/sw9", json={"secret": "TopSecret-10"})
    assert r.status_code == 200 and r.json()["secret"] == "***"
    r = api.call("PATCH", "/accounts/alice", json={"password": "NewPass-11"})
    assert r.status_code == 200 and r.json()["password"] == "***"
    bodies = [api.call("GET", path).text for path in (
        "/nas", "/nas/gw-a", "/nas/sw9", "/accounts", "/accounts/alice", "/accounts?keyword=alice")]
    bodies.append(json.dumps([e.changes for e in api.audit()]))
    for text in bodies:
        for secret in ("s3cret-a", "s3cret-b", "s3cret-k", "TopSecret-9", "TopSecret-10", "alice-pw", "NewPass-11"):
            assert secret not in text


def test_rate_tables_rates_and_csv_import(api):
    r = api.call("POST", "/rate-tables", json={"name": "retail", "currency": "EUR"})
    assert r.status_code == 201 and r.json()["currency"] == "EUR"
    r = api.call("POST", "/rate-tables/retail/rates", json={"prefix": "44", "price_per_minute": "0.0125",
                                                            "interval_seconds": 60})
    assert r.status_code == 201 and r.json()["price_per_minute"] == "0.012500"  # rates: always 6 places
    r = api.call("POST", "/rate-tables/retail/rates/import", content=b"prefix,price_per_minute\n4420,0.02\n49,0.03\n",
                 headers={"Content-Type": "text/csv"})
    assert r.status_code == 200 and r.json()["rates_in_table"] == 3
    bad = api.call("POST", "/rate-tables/retail/rates/import", content=b"prefix,price_per_minute\n33,0.01\n34,x\n",
                   headers={"Content-Type": "text/csv"})
    assert bad.status_code == 400 and ":3: price_per_minute" in bad.json()["error"]["message"]
    assert api.count(Rate) == 3
    page = api.call("GET", "/rate-tables/retail/rates", token="viewer", params={"prefix": "44"}).json()
    assert page["total"] == 2 and [r["prefix"] for r in page["items"]] == ["44", "4420"]
    rate_id = page["items"][0]["id"]
    r = api.call("PATCH", f"/rate-tables/retail/rates/{rate_id}", json={"effective_until": "2027-01-01"})
    assert r.status_code == 200, r.text
    tables = api.call("GET", "/rate-tables").json()
    assert tables["total"] == 1 and tables["items"][0]["rates"] == 3
    assert error_of(api.call("GET", "/rate-tables/nope/rates")) == (404, "rate_table")
    assert error_of(api.call("POST", "/rate-tables/retail/rates", json={"prefix": "4a", "price_per_minute": "1"})) == (
        400, "prefix")


def test_routing_plans_and_rules(api):
    seed(api.sessions)
    r = api.call("POST", "/routing-plans", json={"name": "uk", "notes": "UK traffic"})
    assert r.status_code == 201 and r.json()["name"] == "uk"
    r = api.call("POST", "/routing-plans/uk/rules", json={"terminator": "vendor-out", "prefix": "44", "share": 60})
    assert r.status_code == 201 and (r.json()["terminator"], r.json()["share"]) == ("vendor-out", 60)
    assert error_of(api.call("POST", "/routing-plans/uk/rules", json={"terminator": "nobody"})) == (400, "terminator")
    assert error_of(api.call("POST", "/routing-plans/uk/rules", json={"terminator": "vendor-out", "share": 101})) == (
        400, "share")
    assert error_of(api.call("POST", "/routing-plans/nope/rules", json={"terminator": "vendor-out"})) == (
        404, "routing_plan")
    plan = api.call("GET", "/routing-plans/uk", token="viewer").json()
    assert [(r["prefix"], r["terminator"]) for r in plan["rule_list"]] == [("44", "vendor-out")]
    assert api.call("GET", "/routing-plans", token="viewer").json()["items"][0]["rules"] == 1
    r = api.call("PATCH", "/accounts/acme-gw", json={"orig_routing_plan": "uk"})
    assert r.status_code == 200 and r.json()["orig_routing_plan"] == "uk"


def test_lists_are_pages_with_a_total(api):
    for n in range(5):
        assert api.call("POST", "/clients", json={"name": f"client-{n}"}).status_code == 201
    page = api.call("GET", "/clients", params={"limit": 2, "offset": 2}).json()
    assert page["total"] == 5 and (page["offset"], page["limit"]) == (2, 2)
    assert [c["name"] for c in page["items"]] == ["client-2", "client-3"]
    for n in range(3):
        api.call("POST", "/accounts", json={"client": "client-1", "name": f"gw-{n}", "ident_by": "ip",
                                            "ips": f"10.1.0.{n}"})
    accounts = api.call("GET", "/accounts", params={"client": "client-1", "sort": "name", "descending": "yes",
                                                    "limit": 2}).json()
    assert accounts["total"] == 3 and [a["name"] for a in accounts["items"]] == ["gw-2", "gw-1"]
    assert api.call("GET", "/accounts", params={"ip": "10.1.0.1"}).json()["total"] == 1
    assert error_of(api.call("GET", "/clients", params={"limit": "5000"})) == (400, "limit")
    assert error_of(api.call("GET", "/accounts", params={"sort": "colour"})) == (400, "sort")


def test_account_update_deactivate_and_delete_with_refund(api):
    ids = seed(api.sessions)
    _calls_and_cdrs(api.sessions, ids)
    before = Decimal(api.call("GET", "/clients/acme").json()["balance"])
    r = api.call("PATCH", "/accounts/acme-gw", json={"orig_capacity": 3, "notes": "moved"})
    assert r.status_code == 200 and r.json()["orig_capacity"] == 3
    r = api.call("POST", "/accounts/acme-gw/deactivate")
    assert r.status_code == 200 and (r.json()["orig_enabled"], r.json()["term_enabled"]) == (False, False)
    preview = api.call("GET", "/accounts/acme-gw/delete-preview", token="viewer").json()
    assert preview["cdrs"] == 2
    r = api.call("DELETE", "/accounts/acme-gw")
    assert r.status_code == 200, r.text
    refunded = Decimal(r.json()["refunded"])
    assert refunded == Decimal(preview["refund"]) > 0 and r.json()["cdrs_deleted"] == 2
    assert Decimal(api.call("GET", "/clients/acme").json()["balance"]) == before + refunded
    assert error_of(api.call("GET", "/accounts/acme-gw")) == (404, "account")
    assert error_of(api.call("DELETE", "/accounts/acme-gw")) == (404, "account")
    with api.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Cdr).where(Cdr.account_id == ids["acme-gw"])) == 0
    actions = [(e.action, e.actor, e.context) for e in api.audit(object_type="account")]
    assert actions == [("update", "alice", "api"), ("deactivate", "alice", "api"), ("delete", "alice", "api")]


# ---------------------------------------------------------------- over real HTTP

@pytest.fixture
def served(store_url, sessions, tmp_path):
    """`radiusd web` itself, in a process of its own on a free loopback port, for one test."""
    (port,) = free_port()
    log = open(tmp_path / "web.log", "w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "radiusd", "web", "--bind", "127.0.0.1", "--port", str(port),
         "--database-url", store_url],
        cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                with urllib.request.urlopen(base + "/api/v1/openapi.json", timeout=5):
                    break
            except (urllib.error.URLError, ConnectionError):
                log.seek(0)
                assert process.poll() is None, f"radiusd web exited: {log.read()}"
                assert time.monotonic() < deadline, "radiusd web did not answer within 60 s"
                time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)
        log.close()


def _http(base: str, method: str, path: str, token: str | None, body=None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + "/api/v1" + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_over_real_http_admin_creates_an_account_and_a_viewer_cannot(sessions, served):
    """Against `radiusd web` as an operator runs it: plain HTTP on a socket."""
    base = served
    tokens = Api(sessions)  # its users and tokens; the requests go over the socket
    admin, viewer = tokens.admin_token, tokens.viewer_token
    assert _http(base, "POST", "/clients", admin, {"name": "acme", "balance": "5.00"})[0] == 201
    status, account = _http(base, "POST", "/accounts", admin,
                            {"client": "acme", "name": "acme-gw", "ident_by": "ip", "ips": "198.51.100.10"})
    assert status == 201 and account["ips"] == ["198.51.100.10/32"]
    status, refused = _http(base, "POST", "/accounts", viewer,
                            {"client": "acme", "name": "acme-gw2", "ident_by": "ip", "ips": "198.51.100.11"})
    assert status == 403 and refused["error"]["field"] == "authorization"
    assert _http(base, "GET", "/accounts", None)[0] == 401
    status, listed = _http(base, "GET", "/accounts", viewer)
    assert status == 200 and [a["name"] for a in listed["items"]] == ["acme-gw"]
    status, bad = _http(base, "POST", "/accounts", admin,
                        {"client": "acme", "name": "acme-gw3", "ident_by": "ip", "ips": "198.51.100.300"})
    assert status == 400 and bad["error"]["field"] == "ips"
    with sessions() as s:
        assert set(s.scalars(select(Account.name))) == {"acme-gw"}


def test_the_application_serves_an_openapi_document_of_the_resources(served):
    with urllib.request.urlopen(served + "/api/v1/openapi.json", timeout=20) as response:
        doc = json.loads(response.read())
    paths = set(doc["paths"])
    for path in ("/api/v1/clients", "/api/v1/clients/{ref}", "/api/v1/clients/{ref}/topups", "/api/v1/accounts",
                 "/api/v1/accounts/{ref}", "/api/v1/nas", "/api/v1/nas/{ref}", "/api/v1/rate-tables",
                 "/api/v1/rate-tables/{ref}/rates", "/api/v1/rate-tables/{ref}/rates/import", "/api/v1/calls",
                 "/api/v1/calls/{call_id}/end", "/api/v1/cdrs", "/api/v1/routing-plans"):
        assert path in paths, path
    assert all(p.startswith("/api/v1/") for p in paths), "web pages are no part of the API document"
    assert doc["components"]["securitySchemes"]["token"]["scheme"].lower() == "bearer"
    body = doc["paths"]["/api/v1/accounts"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "ips" in body["properties"] and body["required"] == ["client", "name", "ident_by"]


def test_concurrent_topups_over_http_add_up_exactly(sessions, served):
    """Top-ups race each other (and the servers' charging) on the balance row: none may be lost."""
    from concurrent.futures import ThreadPoolExecutor

    tokens = Api(sessions)
    assert _http(served, "POST", "/clients", tokens.admin_token, {"name": "acme", "balance": "0.01"})[0] == 201
    amounts = [f"{n}.{n:02d}" for n in range(1, 13)] + ["-0.37", "0.000001"]
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda a: _http(served, "POST", "/clients/acme/topups", tokens.admin_token,
                                                {"amount": a}), amounts))
    assert [status for status, _ in answers] == [201] * len(amounts), answers
    expected = Decimal("0.01") + sum(Decimal(a) for a in amounts)
    status, client = _http(served, "GET", "/clients/acme", tokens.viewer_token)
    assert status == 200 and Decimal(client["balance"]) == expected
    with sessions() as s:
        assert s.scalar(select(Client.balance).where(Client.name == "acme")) == expected
