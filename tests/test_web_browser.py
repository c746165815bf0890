"""The web admin in a real browser (Debian's chromium driven by Playwright) against `radiusd web`
running as a subprocess on SQLite and on PostgreSQL, with the RADIUS server and radclient where a
change in the browser must change what the switch is told."""
from __future__ import annotations

import json
import re
import subprocess
import time
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from radius_packets import acct_request
from radius_server import ServerProcess, exchange, seeded_store
from radiusd.admin import users
from radiusd.admin.fields import money_out
from radiusd.db import open_store
from radiusd.models import Account, AuditEntry, Client
from radiusd.web import security
from web_site import CHROMIUM_ARGS, WebProcess, chromium_path, wait_for
from conftest import _unavailable

PASSWORD = "correct horse battery"
CALLED = "442071234567"


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright (pip install playwright)")
    path = chromium_path()
    if path is None:
        _unavailable("chromium (Debian package chromium)")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Site:
    def __init__(self, url, tmp):
        self.url = url
        self.tmp = tmp
        seeded_store(url)
        self.engine, self.sessions = open_store(url)
        with self.sessions.begin() as s:
            users.add_user(s, "admin", PASSWORD, "admin", "test", "cli")
            users.add_user(s, "viewer", PASSWORD, "viewer", "test", "cli")
            self.admin_token = users.issue_token(s, "admin", "crm", "test", "cli")
            self.viewer_token = users.issue_token(s, "viewer", "reports", "test", "cli")
        self.web = WebProcess(url, tmp).wait_ready()
        self.base = self.web.base

    def count(self, model, *where) -> int:
        with self.sessions() as s:
            return s.scalar(select(func.count()).select_from(model).where(*where))

    def balance(self, name: str) -> Decimal:
        with self.sessions() as s:
            return s.scalar(select(Client.balance).where(Client.name == name))

    def close(self):
        assert self.web.stop() == 0, "\n".join(self.web.lines[-20:])
        self.engine.dispose()


@pytest.fixture
def site(store_url, tmp_path):
    site = Site(store_url, tmp_path)
    yield site
    site.close()


@pytest.fixture
def page(browser, site):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15000)
    yield page
    context.close()


def login(page, site, name="admin", password=PASSWORD):
    page.goto(site.base + "/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", password)
    page.click("form.login button[type=submit]")
    page.wait_for_selector("header.top")


def csrf_of(page) -> str:
    return page.get_attribute("input[name=csrf_token]", "value")


def rows(page, table: str) -> list[str]:
    return page.locator(f"table#{table} tbody tr").evaluate_all("rs => rs.map(r => r.dataset.account || r.innerText)")


def radclient_auth(port: int, user: str, password: str, n: int) -> str:
    attrs = (f'User-Name = {user}, User-Password = "{password}", Called-Station-Id = {CALLED}, '
             f'Calling-Station-Id = 15551230001, '
             f'h323-conf-id = "h323-conf-id=5EB0{n:04X} 00000000 00000000 00000001", Message-Authenticator = 0x00')
    run = subprocess.run(["radclient", "-x", "-r", "1", "-t", "3", f"127.0.0.1:{port}", "auth", "testing123"],
                         input=attrs, capture_output=True, text=True, timeout=30)
    return run.stdout + run.stderr


def test_account_lifecycle_in_the_browser(site, page, radclient, tmp_path):
    radius = ServerProcess(site.url, tmp_path, poll=0.2).wait_ready()
    try:
        _lifecycle(site, page, radius)
    finally:
        radius.stop()


def _lifecycle(site, page, radius):
    login(page, site)
    # a client, created and topped up through the forms
    page.click("text=Clients")
    page.click("#new-client")
    page.fill("#client-name", "Web Test Telecom")
    page.fill("#credit_limit", "0")
    page.select_option("select[name=orig_rate_table]", "retail-usd")
    page.click("#save-client")
    page.wait_for_selector("text=Client Web Test Telecom created.")
    page.fill("#topup-amount", "10.00")
    page.fill("#topup-notes", "wire 42")
    page.click("#topup")
    page.wait_for_selector("text=Balance 0.00 → 10.00 USD.")
    assert site.balance("Web Test Telecom") == Decimal("10")

    # an account through the three-block form: login by name, generated password shown on click
    page.click("text=+ New Account")
    assert page.input_value("#client") == "Web Test Telecom"
    page.fill("#name", "webtest-sip")
    page.check("input[name=ident_by][value=name]")
    assert page.is_hidden("#ips")
    page.click("[data-action=generate-password]")
    password = page.input_value("#password")
    assert re.fullmatch(r"[A-Za-z0-9]{16}", password)
    page.click("[data-action=show-password]")
    assert page.get_attribute("#password", "type") == "password"
    page.click("[data-action=show-password]")
    assert page.get_attribute("#password", "type") == "text"
    page.select_option("select[name=orig_rate_table]", "retail-usd")
    page.fill("#orig_capacity", "5")
    page.click("#save")
    page.wait_for_selector("text=Account webtest-sip created.")
    account_id = int(re.search(r"/accounts/(\d+)", page.url).group(1))
    assert "webtest-sip" not in page.input_value("#password") and password not in page.content()

    # found by quick search, by advanced search and by the client filter
    page.goto(site.base + "/accounts")
    page.fill("#quick-search", "webtest")
    page.click("#search button[type=submit] >> nth=0")
    assert rows(page, "accounts") == ["webtest-sip"]
    page.goto(site.base + "/accounts")
    page.click("#advanced summary")
    page.fill("#advanced input[name=name]", "webtest")
    page.select_option("#adv-status", "active")
    page.select_option("#adv-rate_table", "retail-usd")
    page.click("#advanced button.primary")
    assert rows(page, "accounts") == ["webtest-sip"]
    page.select_option("#adv-status", "inactive")
    page.click("#advanced button.primary")
    assert rows(page, "accounts") == []
    page.goto(site.base + "/accounts")
    page.select_option("#client-filter", "Web Test Telecom")
    page.wait_for_url(re.compile(r"client=Web"))
    assert rows(page, "accounts") == ["webtest-sip"]
    page.select_option("#client-filter", "Acme Telecom")
    page.wait_for_url(re.compile(r"client=Acme"))
    assert "webtest-sip" not in rows(page, "accounts") and "acme-gw" in rows(page, "accounts")

    # the switch is told yes while the account is active
    reply = _answer(radius, password, 1, "Access-Accept")
    assert "h323-credit-time" in reply
    _call(radius, "webtest-sip", seconds=60)
    wait_for(lambda: site.balance("Web Test Telecom") < Decimal("10"), what="the call's charge")
    charged = money_out(Decimal("10") - site.balance("Web Test Telecom"))

    # edit: the change shows as a field diff in the account's history, by this user, via the web
    page.goto(f"{site.base}/accounts/{account_id}")
    page.fill("#orig_capacity", "7")
    page.fill("#notes", "edited in the browser")
    page.click("#save")
    page.wait_for_selector("text=Account webtest-sip saved.")
    page.click("#history")
    diff = page.locator("table#audit tbody tr", has_text="orig_capacity").first.inner_text()
    assert "5" in diff and "7" in diff
    first_entry = page.locator("table#audit tbody tr").first.inner_text()
    assert "admin" in first_entry and "web" in first_entry and "update" in first_entry

    # deactivate: the next Access-Request is rejected with h323-return-code 7
    page.goto(f"{site.base}/accounts/{account_id}")
    page.click("#deactivate")
    page.wait_for_selector("text=deactivated")
    reply = _answer(radius, password, 2, "Access-Reject")
    assert "h323-return-code=7" in reply and "originator disabled" in reply

    # delete: the confirmation states the CDRs and the refund, then the client's balance shows it
    page.goto(f"{site.base}/accounts/{account_id}")
    page.click("#delete")
    summary = page.inner_text("#delete-summary")
    assert "1 CDR" in summary and f"refunds {charged} USD" in summary
    assert site.count(Account, Account.id == account_id) == 1, "the confirmation page must not delete"
    page.click("#confirm-delete")
    result = page.inner_text("#delete-result")
    assert f"{charged} USD refunded" in result and "10.00 USD" in result
    assert site.count(Account, Account.id == account_id) == 0
    page.goto(site.base + "/clients")
    page.click("text=Web Test Telecom")
    assert page.inner_text("#balance") == "10.00 USD"


def _answer(radius, password: str, n: int, wanted: str) -> str:
    """radclient's output once the server answers `wanted` (it reloads admin data within a poll)."""
    def ask():
        output = radclient_auth(radius.auth_port, "webtest-sip", password, n)
        return output if wanted in output else None
    return wait_for(ask, what=wanted)


def _call(radius, user: str, seconds: int) -> None:
    """One answered call on the account: Accounting Start and Stop as a Cisco gateway sends them."""
    conf = "h323-conf-id=5EB00001 00000000 00000000 00000001"
    common = [("Acct-Session-Id", "5EB0CALL"), ("User-Name", user), ("Called-Station-Id", CALLED),
              ("Calling-Station-Id", "15551230001"), ("h323-conf-id", conf),
              ("h323-call-origin", "h323-call-origin=answer")]
    for status, extra in ((1, []), (2, [("Acct-Session-Time", seconds),
                                        ("h323-disconnect-cause", "h323-disconnect-cause=10")])):
        data, _ = acct_request([("Acct-Status-Type", status)] + common + extra)
        assert exchange(data, radius.acct_port, timeout=5) is not None


def test_bad_ip_is_a_field_error_and_nothing_is_written(site, page):
    login(page, site)
    accounts_before, audit_before = site.count(Account), site.count(AuditEntry)
    page.goto(site.base + "/accounts/new")
    page.select_option("#client", "Acme Telecom")
    page.fill("#name", "bad-ip")
    page.check("input[name=ident_by][value=ip]")
    page.fill("#ips", "10.1.2.300")
    page.click("#save")
    error = page.inner_text(".field-error[data-field=ips]")
    assert "not an IP address or CIDR" in error and "10.1.2.300" in error
    assert page.input_value("#name") == "bad-ip", "the form keeps what was typed"
    assert (site.count(Account), site.count(AuditEntry)) == (accounts_before, audit_before)


def test_viewer_reads_but_the_server_refuses_its_changes(site, page):
    login(page, site, "viewer")
    page.goto(site.base + "/accounts")
    assert "acme-gw" in rows(page, "accounts")
    assert page.locator("#new-account").count() == 0, "no New Account button for a viewer"
    token = csrf_of(page)
    balance = site.balance("Acme Telecom")
    accounts_before = site.count(Account)
    # the page hides the buttons; the server must refuse the POST itself, CSRF token and all
    create = page.request.post(site.base + "/accounts/new", form={
        "csrf_token": token, "client": "Acme Telecom", "name": "viewer-made", "ident_by": "ani", "ani": "15550009999"})
    topup = page.request.post(site.base + "/clients/1/topup", form={"csrf_token": token, "amount": "1000"})
    assert (create.status, topup.status) == (403, 403)
    assert "viewer role" in create.text()
    assert site.count(Account) == accounts_before and site.balance("Acme Telecom") == balance
    logout = page.request.post(site.base + "/logout", form={"csrf_token": token}, max_redirects=0)
    assert logout.status == 303, "a viewer may log out"


def test_post_without_csrf_token_is_refused(site, page):
    login(page, site)
    page.goto(site.base + "/clients/1")
    balance = site.balance("Acme Telecom")
    missing = page.request.post(site.base + "/clients/1/topup", form={"amount": "5"})
    wrong = page.request.post(site.base + "/clients/1/topup", form={"amount": "5", "csrf_token": "x" * 32})
    assert (missing.status, wrong.status) == (403, 403)
    assert "CSRF" in missing.text()
    assert site.balance("Acme Telecom") == balance
    right = page.request.post(site.base + "/clients/1/topup", form={"amount": "5", "csrf_token": csrf_of(page)},
                              max_redirects=0)
    assert right.status == 303 and site.balance("Acme Telecom") == balance + 5


def test_api_admin_token_creates_an_account_a_viewer_token_cannot(site, page):
    body = json.dumps({"client": "Acme Telecom", "name": "crm-made", "ident_by": "ani", "ani": "15550001234"})
    headers = {"Content-Type": "application/json"}
    viewer = page.request.post(site.base + "/api/v1/accounts", data=body,
                               headers=dict(headers, Authorization=f"Bearer {site.viewer_token}"))
    assert viewer.status == 403 and viewer.json()["error"]["field"] == "authorization"
    assert site.count(Account, Account.name == "crm-made") == 0
    admin = page.request.post(site.base + "/api/v1/accounts", data=body,
                              headers=dict(headers, Authorization=f"Bearer {site.admin_token}"))
    assert admin.status == 201 and admin.json()["name"] == "crm-made"
    # the browser sees the API's account, and its history says who made it and how
    login(page, site)
    page.goto(site.base + "/accounts?q=crm-made")
    assert rows(page, "accounts") == ["crm-made"]
    page.click("table#accounts a[title='Change history']")
    entry = page.locator("table#audit tbody tr").first.inner_text()
    assert "admin" in entry and "api" in entry and "create" in entry


def test_login_session_cookie_logout_and_rate_limit(site, page):
    page.goto(site.base + "/accounts")
    assert "/login" in page.url, "pages need a login"
    page.fill("input[name=name]", "admin")
    page.fill("input[name=password]", "wrong password!")
    page.click("form.login button[type=submit]")
    assert "Wrong user name or password." in page.inner_text("p.error")
    login(page, site)
    cookie = next(c for c in page.context.cookies() if c["name"] == security.COOKIE)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and not cookie["secure"]  # plain http here
    page.click("header.top button:has-text('Log out')")
    page.wait_for_selector("form.login")
    page.goto(site.base + "/accounts")
    assert "/login" in page.url, "logged out"
    # a copy of the old cookie is worthless after logout
    page.context.add_cookies([{k: cookie[k] for k in ("name", "value", "domain", "path")}])
    page.goto(site.base + "/accounts")
    assert "/login" in page.url
    # five failures lock the name for a while, even for the right password; the failures are logged
    for _ in range(5):
        page.fill("input[name=name]", "viewer")
        page.fill("input[name=password]", "nope nope nope")
        page.click("form.login button[type=submit]")
    page.fill("input[name=name]", "viewer")
    page.fill("input[name=password]", PASSWORD)
    page.click("form.login button[type=submit]")
    assert "Too many failed logins" in page.inner_text("p.error")
    assert site.web.logged("web.login_failed") and site.web.logged("web.login_blocked")


def test_idle_session_ends(site, page):
    login(page, site)
    codec = security.SessionCodec(site.web.key_file.read_text().strip() and
                                  bytes.fromhex(site.web.key_file.read_text().strip()), 1800)
    cookie = next(c for c in page.context.cookies() if c["name"] == security.COOKIE)
    session, _ = codec.loads(cookie["value"], time.time())
    assert session["user"] == "admin"
    session["seen"] = time.time() - 1801  # as if the last request was 30 minutes ago
    page.context.add_cookies([{"name": security.COOKIE, "value": codec.dumps(session), "domain": cookie["domain"],
                               "path": "/"}])
    page.goto(site.base + "/accounts")
    assert "/login" in page.url and "session ended" in page.inner_text("form.login")


def test_nas_secret_is_never_rendered(site, page):
    login(page, site)
    for path in ("/nas", "/nas/1", "/audit?object_type=nas"):
        page.goto(site.base + path)
        assert "testing123" not in page.content()
    page.goto(site.base + "/nas/1")
    page.fill("input[name=secret]", "n3w-shared-secret")
    page.click("#nas-form button.primary")
    page.wait_for_selector("text=NAS localhost saved.")
    for path in ("/nas", "/nas/1", "/audit?object_type=nas&object_id=1"):
        page.goto(site.base + path)
        assert "n3w-shared-secret" not in page.content() and "testing123" not in page.content()
    page.goto(site.base + "/audit?object_type=nas&object_id=1")
    assert "(changed)" in page.locator("table#audit tbody tr", has_text="secret").first.inner_text()


def test_demo_prints_the_web_command_and_credentials_that_log_in(tmp_path, browser):
    """`radiusd demo` -> the printed `radiusd web` command -> the printed URL and login, in a browser."""
    import os
    import signal
    import sys

    from radius_server import free_port

    auth, acct = free_port(2)
    demo = subprocess.Popen([sys.executable, "-m", "radiusd", "demo", "--db", str(tmp_path / "demo.sqlite3"),
                             "--auth-port", str(auth), "--acct-port", str(acct), "--metrics-port", "0"],
                            cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=dict(os.environ, RADIUSD_CONFIG=""))
    web = None
    try:
        printed = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any("log in as" in line for line in printed):
            printed.append(demo.stdout.readline())
        command = next(line.strip() for line in printed if line.strip().startswith("radiusd web"))
        user, password = re.search(r"log in as (\S+) / (\S+)", "".join(printed)).groups()
        url = command.split("--database-url ", 1)[1]
        web = WebProcess(url, tmp_path).wait_ready()
        page = browser.new_page()
        try:
            page.goto(web.base + "/")
            page.fill("input[name=name]", user)
            page.fill("input[name=password]", password)
            page.click("form.login button[type=submit]")
            page.wait_for_selector("#kpis")
            page.goto(web.base + "/accounts")
            assert "acme-sip" in rows(page, "accounts")
        finally:
            page.close()
    finally:
        if web is not None:
            web.stop()
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(30) == 0
