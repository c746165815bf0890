"""The web admin's daily screens in-process (real ASGI requests through the whole application, real
store on SQLite and PostgreSQL): clients and top-ups, NAS, rate tables with CSV import, routing
plans, active calls, CDRs with CSV export, the audit log, the dashboard, paging and sorting."""
from __future__ import annotations

import datetime as dt
import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from radiusd.admin import accounts, users
from radiusd.admin.dashboard import asr_acd
from radiusd.config import load_settings
from radiusd.models import AuditEntry, Client, Nas, Rate, RoutingPlan, RoutingRule
from radiusd.secrets_at_rest import load_key_file, nas_secret_place, open_sealed
from radiusd.store.sealing import key_path
from radiusd.web.app import create_app
from test_accounting_support import CUSTOMER_IP, acct, feed, open_calls, seed, snapshot_of

PASSWORD = "correct horse battery"
S = dt.timedelta(seconds=1)


class Browser:
    """A logged-in user of the pages (cookies kept, CSRF token sent with every POST)."""

    def __init__(self, app, name: str):
        self.http = TestClient(app, follow_redirects=False)
        page = self.http.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        reply = self.http.post("/login", data={"name": name, "password": PASSWORD, "csrf_token": token})
        assert reply.status_code == 303, reply.text
        self.csrf = re.search(r'name="csrf_token" value="([^"]+)"', self.http.get("/").text).group(1)

    def get(self, path: str, **kw):
        return self.http.get(path, **kw)

    def post(self, path: str, data=None, **kw):
        return self.http.post(path, data=dict(data or {}, csrf_token=self.csrf), **kw)


@pytest.fixture
def web(sessions, tmp_path):
    ids = seed(sessions)
    with sessions.begin() as s:
        users.add_user(s, "alice", PASSWORD, "admin", "test", "cli")
        users.add_user(s, "victor", PASSWORD, "viewer", "test", "cli")
    settings = load_settings(database_url="sqlite://", web_secret_key_file=str(tmp_path / "key"))
    app = create_app(settings, sessions=sessions)
    return app, ids


def count(sessions, model, *where) -> int:
    with sessions() as s:
        return s.scalar(select(func.count()).select_from(model).where(*where))


def audit_entries(sessions, **where) -> list[AuditEntry]:
    with sessions() as s:
        return list(s.scalars(select(AuditEntry).filter_by(**where).order_by(AuditEntry.id)))


def test_client_create_topup_with_note_and_field_errors(web, sessions):
    app, ids = web
    admin = Browser(app, "alice")
    bad = admin.post("/clients/new", {"name": "Delta", "credit_limit": "lots", "currency": "USD", "active": "yes"})
    assert bad.status_code == 422
    assert 'data-field="credit_limit"' in bad.text and "expected an amount like 12.50 (lots)" in bad.text
    assert count(sessions, Client, Client.name == "Delta") == 0
    made = admin.post("/clients/new", {"name": "Delta", "credit_limit": "25", "currency": "EUR", "capacity": "4",
                                       "orig_rate_table": "retail", "active": "yes"})
    assert made.status_code == 303
    client_id = int(made.headers["location"].split("/")[2].split("?")[0])
    topup = admin.post(f"/clients/{client_id}/topup", {"amount": "12.50", "notes": "invoice 2026-117"})
    assert topup.status_code == 303
    page = admin.get(f"/clients/{client_id}").text
    assert "12.50 EUR" in page and "retail" in page
    entry = audit_entries(sessions, object_type="client", object_id=client_id, action="topup")[0]
    assert (entry.actor, entry.context) == ("alice", "web") and "invoice 2026-117" in entry.changes
    zero = admin.post(f"/clients/{client_id}/topup", {"amount": "0"})
    assert zero.status_code == 422 and 'data-field="amount"' in zero.text
    # the client page lists its accounts
    page = admin.get(f"/clients/{ids['acme']}").text
    assert "acme-gw" in page and "alice" not in re.sub(r"<header.*?</header>", "", page, flags=re.S)


def test_nas_secret_is_write_only_and_address_checked(web, sessions):
    app, _ = web
    admin = Browser(app, "alice")
    bad = admin.post("/nas/new", {"name": "sbc-1", "address": "10.9.9.7/24", "secret": "s3cret-new",
                                  "dialect": "kamailio", "caller_address_source": "packet-source", "active": "yes"})
    assert bad.status_code == 422 and "host bits set, did you mean 10.9.9.0/24?" in bad.text
    assert "s3cret-new" not in bad.text and count(sessions, Nas, Nas.name == "sbc-1") == 0
    good = admin.post("/nas/new", {"name": "sbc-1", "address": "10.9.9.0/24", "secret": "s3cret-new",
                                   "dialect": "kamailio", "caller_address_source": "packet-source",
                                   "message_authenticator": "yes", "active": "yes"})
    assert good.status_code == 303
    with sessions() as s:
        nas = s.scalars(select(Nas).where(Nas.name == "sbc-1")).one()
    listing = admin.get("/nas").text
    assert "10.9.9.0/24" in listing and "s3cret" not in listing and "yes <small" in listing
    # saving without typing a secret keeps it; the edit page never shows it
    edit = admin.get(f"/nas/{nas.id}").text
    assert "s3cret-new" not in edit
    kept = admin.post(f"/nas/{nas.id}", {"name": "sbc-1", "address": "10.9.9.0/24", "dialect": "kamailio",
                                         "caller_address_source": "packet-source", "active": "yes", "secret": ""})
    assert kept.status_code == 303
    with sessions() as s:
        nas = s.get(Nas, nas.id)
        assert nas.message_authenticator == "yes" and "s3cret-new" not in nas.secret  # sealed in the store
        assert open_sealed(nas.secret, nas_secret_place("sbc-1"), load_key_file(key_path(s))) == "s3cret-new"


CSV_BAD = "prefix,description,price_per_minute\n49,Germany,0.03\n4930,Berlin,cheap\n"
CSV_GOOD = "prefix,description,price_per_minute,effective_from\n49,Germany,0.03,2026-01-01\n4930,Berlin,0.025,2026-01-01\n"


def test_rate_csv_import_preview_line_errors_and_end_date(web, sessions):
    app, ids = web
    admin = Browser(app, "alice")
    table = ids["retail"]
    before = count(sessions, Rate, Rate.rate_table_id == table)
    bad = admin.post(f"/rate-tables/{table}/import", files={"file": ("deck.csv", CSV_BAD, "text/csv")})
    assert bad.status_code == 422 and "deck.csv:3: price_per_minute: expected an amount like 12.50 (cheap)" in bad.text
    preview = admin.post(f"/rate-tables/{table}/import", files={"file": ("deck.csv", CSV_GOOD, "text/csv")})
    assert preview.status_code == 200 and "<strong>2</strong> rates checked" in preview.text
    assert count(sessions, Rate, Rate.rate_table_id == table) == before, "a preview writes nothing"
    done = admin.post(f"/rate-tables/{table}/import", {"confirm": "1", "filename": "deck.csv", "csv_text": CSV_GOOD})
    assert done.status_code == 303 and count(sessions, Rate, Rate.rate_table_id == table) == before + 2
    # searchable by prefix
    page = admin.get(f"/rate-tables/{table}", params={"prefix": "493"}).text
    assert "Berlin" in page and "Germany" not in page
    # end-date one rate
    with sessions() as s:
        berlin = s.scalars(select(Rate).where(Rate.rate_table_id == table, Rate.prefix == "4930")).one()
    form = admin.get(f"/rate-tables/{table}/rates/{berlin.id}").text
    assert "0.025" in form
    values = {"prefix": "4930", "description": "Berlin", "price_per_minute": "0.025", "effective_from": "2026-01-01",
              "effective_until": "2025-12-31"}
    wrong = admin.post(f"/rate-tables/{table}/rates/{berlin.id}", values)
    assert wrong.status_code == 422 and "must be after effective_from" in wrong.text
    ended = admin.post(f"/rate-tables/{table}/rates/{berlin.id}", dict(values, effective_until="2026-06-30"))
    assert ended.status_code == 303
    with sessions() as s:
        assert s.get(Rate, berlin.id).effective_until == dt.datetime(2026, 6, 30, tzinfo=dt.timezone.utc)
    assert audit_entries(sessions, object_type="rate_table", action="rate-update")[0].context == "web"


def test_routing_plan_and_rule(web, sessions):
    app, _ = web
    admin = Browser(app, "alice")
    assert admin.post("/routing-plans/new", {"name": "uk-first"}).status_code == 303
    with sessions() as s:
        plan_id = s.scalars(select(RoutingPlan.id).where(RoutingPlan.name == "uk-first")).one()
    bad = admin.post(f"/routing-plans/{plan_id}/rules", {"terminator": "nobody", "prefix": "44"})
    assert bad.status_code == 422 and "terminator: no such account (nobody)" in bad.text
    good = admin.post(f"/routing-plans/{plan_id}/rules", {"terminator": "vendor-out", "prefix": "44", "priority": "1"})
    assert good.status_code == 303
    page = admin.get("/routing-plans").text
    assert "uk-first" in page and "vendor-out" in page
    # a plan a client routes with: its delete is refused, naming who uses it
    assert admin.post("/routing-plans/new", {"name": "in-use"}).status_code == 303
    with sessions.begin() as s:
        client = s.scalars(select(Client).order_by(Client.id)).first()
        used_id = s.scalars(select(RoutingPlan.id).where(RoutingPlan.name == "in-use")).one()
        client.routing_plan_id = used_id
    refused = admin.post(f"/routing-plans/{used_id}/delete", {})
    assert refused.status_code == 422 and "still used" in refused.text
    with sessions() as s:
        rule_id = s.scalars(select(RoutingRule.id).where(RoutingRule.routing_plan_id == plan_id)).one()
        assert s.get(RoutingPlan, used_id) is not None
    assert admin.post(f"/routing-plans/{plan_id}/rules/{rule_id}/delete", {}).status_code == 303
    assert admin.post(f"/routing-plans/{plan_id}/delete", {}).status_code == 303
    with sessions() as s:
        assert s.get(RoutingPlan, plan_id) is None and s.get(RoutingRule, rule_id) is None
    viewer = Browser(app, "victor")
    assert viewer.post(f"/routing-plans/{used_id}/delete", {}).status_code == 403


def test_active_calls_end_a_call_cdrs_csv_and_dashboard(web, sessions):
    app, ids = web
    admin = Browser(app, "alice")
    now = dt.datetime.now(dt.timezone.utc)
    snap = snapshot_of(sessions)
    feed(sessions, snap, acct(ids["gw-a"], "start", "C1", call_id="call-1", caller_address=CUSTOMER_IP,
                              called_number="441612345678", event_time=now - 90 * S), now - 90 * S)
    feed(sessions, snap, acct(ids["gw-a"], "stop", "C0", call_id="call-0", caller_address=CUSTOMER_IP,
                              called_number="441612345678", event_time=now - 600 * S, session_time=120),
         now - 600 * S)
    calls = admin.get("/calls").text
    assert "acme-gw" in calls and "no calls in progress" not in calls
    dashboard = admin.get("/").text
    assert re.search(r'id="kpi-active">1<', dashboard)
    assert re.search(r'id="kpi-asr">100.0 %<', dashboard) and re.search(r'id="kpi-acd">2:00<', dashboard)
    assert "<svg" in dashboard and "acme" in dashboard
    [call] = open_calls(sessions)
    viewer = Browser(app, "victor")
    assert viewer.post(f"/calls/{call.id}/end").status_code == 403
    ended = admin.post(f"/calls/{call.id}/end")
    assert ended.status_code == 303 and open_calls(sessions) == []
    cdrs = admin.get("/cdrs", params={"client": "acme"}).text
    assert "manual" in cdrs and "1–2 of 2" in cdrs
    export = admin.get("/cdrs.csv", params={"client": "acme"})
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    lines = export.text.strip().splitlines()
    assert lines[0].startswith("id,leg,nas,account,client,call_id") and len(lines) == 3
    assert all(",acme," in line for line in lines[1:])
    bad = admin.get("/cdrs", params={"since": "yesterday"})
    assert "since: expected an ISO-8601 date or date-time (yesterday)" in bad.text


def test_asr_and_acd_arithmetic():
    assert asr_acd(0, 0, 0) == (None, None)
    assert asr_acd(4, 3, 270) == (75.0, 90.0)


def test_accounts_table_pages_and_sorts_in_sql(web, sessions):
    app, ids = web
    with sessions.begin() as s:
        for n in range(120):
            accounts.create_account(s, actor="test", client="acme", name=f"bulk-{n:03d}", ident_by="ani",
                                    ani=f"1555000{n:04d}")
    viewer = Browser(app, "victor")
    first = viewer.get("/accounts").text
    assert "1–50 of 123" in first and first.count('data-account="') == 50
    last = viewer.get("/accounts", params={"page": "3"}).text
    assert "101–123 of 123" in last and last.count('data-account="') == 23
    by_name = viewer.get("/accounts", params={"sort": "name", "dir": "desc"}).text
    assert re.findall(r'data-account="([^"]+)"', by_name)[0] == "vendor-out"
    quick = viewer.get("/accounts", params={"q": "15550000119"}).text
    assert re.findall(r'data-account="([^"]+)"', quick) == ["bulk-119"]
    by_ip = viewer.get("/accounts", params={"ip": CUSTOMER_IP}).text
    assert re.findall(r'data-account="([^"]+)"', by_ip) == ["acme-gw"]
    # valid on gw-a: no account lists gateways, so every IP account is valid on every NAS
    gateway = viewer.get("/accounts", params={"gateway": "gw-a", "ident_by": "ip"}).text
    assert "acme-gw" in re.findall(r'data-account="([^"]+)"', gateway)
    bad = viewer.get("/accounts", params={"ip": "10.1.2.300"}).text
    assert "ip: not an IP address or CIDR (10.1.2.300)" in bad
    # a viewer sees the form read-only: the fieldset is disabled and there is no OK button
    form = viewer.get(f"/accounts/{ids['acme-gw']}").text
    assert "<fieldset disabled" in form and 'id="save"' not in form


def test_audit_log_shows_field_diffs_per_object(web, sessions):
    app, ids = web
    admin = Browser(app, "alice")
    with sessions.begin() as s:
        accounts.update_account(s, ids["acme-gw"], actor="bob", context="cli", tech_prefix="0055")
    page = admin.get("/audit", params={"object_type": "account", "object_id": ids["acme-gw"]}).text
    assert "tech_prefix" in page and '<td class="new">0055</td>' in page and "bob" in page
    other = admin.get("/audit", params={"object_type": "account", "object_id": ids["alice"]}).text
    assert "0055" not in other


def test_login_redirect_stays_on_the_site(web):
    app, _ = web
    http = TestClient(app, follow_redirects=False)
    token = re.search(r'name="csrf_token" value="([^"]+)"', http.get("/login").text).group(1)
    reply = http.post("/login", data={"name": "alice", "password": PASSWORD, "csrf_token": token,
                                      "next": "//evil.example/"})
    assert reply.status_code == 303 and reply.headers["location"] == "/"
    assert http.post("/login", data={"name": "alice", "password": PASSWORD}).status_code == 403


def test_role_change_and_deactivation_apply_to_a_live_session(web, sessions):
    app, _ = web
    admin = Browser(app, "alice")
    with sessions.begin() as s:
        users.update_user(s, "alice", "root", "cli", role="viewer")
    assert admin.post("/clients/1/topup", {"amount": "5"}).status_code == 403
    with sessions.begin() as s:
        users.update_user(s, "alice", "root", "cli", role="admin", active=False)
    page = admin.get("/accounts")
    assert page.status_code == 303 and page.headers["location"].startswith("/login")


def test_a_rate_deck_over_a_megabyte_goes_through_preview_and_confirm(web, sessions):
    app, ids = web
    admin = Browser(app, "alice")
    deck = "prefix,description,price_per_minute\n" + "".join(
        f"7{n:07d},{'Destination number ' + str(n):<40},0.0{n % 9 + 1}\n" for n in range(20000))
    assert len(deck) > 1024 * 1024
    preview = admin.post(f"/rate-tables/{ids['vendor']}/import", files={"file": ("big.csv", deck, "text/csv")})
    assert preview.status_code == 200 and "<strong>20000</strong> rates checked" in preview.text
    done = admin.post(f"/rate-tables/{ids['vendor']}/import", {"confirm": "1", "filename": "big.csv",
                                                               "csv_text": deck})
    assert done.status_code == 303, done.text[:300]
    assert count(sessions, Rate, Rate.rate_table_id == ids["vendor"]) == 20001


def test_session_cookie_secure_over_tls_and_key_kept_across_restarts(sessions, tmp_path):
    import os
    import stat

    seed(sessions)
    with sessions.begin() as s:
        users.add_user(s, "alice", PASSWORD, "admin", "test", "cli")
    key = tmp_path / "web.key"
    settings = load_settings(database_url="sqlite://", web_secret_key_file=str(key))
    first = create_app(settings, sessions=sessions)
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600 and len(bytes.fromhex(key.read_text().strip())) == 32
    over_tls = TestClient(first, base_url="https://testserver", follow_redirects=False)
    assert "secure" in over_tls.get("/login").headers["set-cookie"].lower()
    plain_http = TestClient(first, follow_redirects=False)
    cookie = plain_http.get("/login").headers["set-cookie"].lower()
    assert "secure" not in cookie and "httponly" in cookie and "samesite=strict" in cookie
    forced = create_app(load_settings(database_url="sqlite://", web_secret_key_file=str(key),
                                      web_secure_cookies="true"), sessions=sessions)
    assert "secure" in TestClient(forced).get("/login").headers["set-cookie"].lower()
    # a restarted application reads the same key: a session made before the restart still works
    browser = Browser(first, "alice")
    again = TestClient(create_app(settings, sessions=sessions), follow_redirects=False)
    again.cookies = browser.http.cookies
    assert again.get("/accounts").status_code == 200
    other_key = create_app(load_settings(database_url="sqlite://", web_secret_key_file=str(tmp_path / "other")),
                           sessions=sessions)
    stranger = TestClient(other_key, follow_redirects=False)
    stranger.cookies = browser.http.cookies
    assert stranger.get("/accounts").status_code == 303, "a cookie signed with another key is worthless"


def test_web_command_refuses_a_busy_port_and_an_unreachable_store(tmp_path):
    import socket
    import subprocess
    import sys

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken = subprocess.run([sys.executable, "-m", "radiusd", "web", "--database-url",
                                f"sqlite:///{tmp_path / 'w.sqlite3'}", "--port", str(port)],
                               capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    assert taken.returncode == 2 and f"web 127.0.0.1:{port}: Address already in use" in taken.stderr
    from radius_server import free_port

    down = subprocess.run([sys.executable, "-m", "radiusd", "web", "--database-url",
                           "postgresql://nobody:secret@127.0.0.1:1/none", "--port", str(free_port()[0])],
                          capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    assert down.returncode == 2 and "database_url: cannot open the store" in down.stderr
    assert "secret" not in down.stderr and "Traceback" not in down.stderr


def test_cdrs_flagged_by_the_sanity_checks_are_shown_and_filtered(web, sessions):
    app, ids = web
    admin = Browser(app, "alice")
    now = dt.datetime.now(dt.timezone.utc)
    snap = snapshot_of(sessions)
    # a Stop with no Start claiming ~31 years: stored as sent, billed at most the maximum, flagged
    feed(sessions, snap, acct(ids["gw-a"], "stop", "C9", call_id="call-huge", caller_address=CUSTOMER_IP,
                              called_number="441612345678", event_time=now - 60 * S, session_time=1_000_000_000),
         now - 60 * S)
    feed(sessions, snap, acct(ids["gw-a"], "stop", "C8", call_id="call-fine", caller_address=CUSTOMER_IP,
                              called_number="441612345678", event_time=now - 30 * S, session_time=20), now - 30 * S)
    everything = admin.get("/cdrs").text
    huge, fine = '<td class="num">1000000000</td>', '<td class="num">20</td>'   # the durations
    assert huge in everything and fine in everything and "<th>Flags</th>" in everything
    assert "duration_capped" in everything and "1–2 of 2" in everything
    flagged = admin.get("/cdrs", params={"flagged": "yes"}).text
    assert huge in flagged and fine not in flagged and "1–1 of 1" in flagged
    clean = admin.get("/cdrs", params={"flagged": "no"}).text
    assert fine in clean and huge not in clean and "duration_capped" not in clean
    bad = admin.get("/cdrs", params={"flagged": "maybe"}).text
    assert "flagged: expected yes or no (maybe)" in bad
