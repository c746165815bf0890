"""Admin input through every door: the CLI, a CSV rate deck and an SQL seed file hold the same rules.

Each bad value gets one line naming the field and the value (with FILE:LINE for a file), exit 2,
nothing written, and the very same answer from SQLite and PostgreSQL: numbers that do not fit the
store's columns, duplicate identities, names with control or bidi-override characters.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from radiusd.admin import seeds, users
from radiusd.cli import main
from radiusd.config import load_settings
from radiusd.models import Client
from radiusd.web.app import create_app
from radiusd.db import current_store_version, open_store
from radiusd.web.api import router

# A small store every case starts from: one client, one rate table, three accounts (one per way of
# identifying), one NAS.
BASE = """\
INSERT INTO rate_tables (id, name, currency) VALUES (1, 'retail', 'USD');
INSERT INTO clients (id, name, balance, credit_limit) VALUES (1, 'Acme', 100.00, 0);
INSERT INTO nas (id, name, address, secret) VALUES (1, 'sw1', '10.0.0.1', 'testing123');
INSERT INTO accounts (id, client_id, name, ident_by, ani, password) VALUES
  (1, 1, 'acme-gw', 'ip', NULL, NULL),
  (2, 1, 'acme-sip', 'name', NULL, 's3cret-pass'),
  (3, 1, 'acme-ani', 'ani', '15551230000', NULL);
INSERT INTO account_networks (account_id, cidr, position) VALUES (1, '10.1.2.0/24', 0);
"""

TOO_BIG = "must be 2147483647 or less (2147483648)"
HIDDEN = "contains control or invisible formatting characters"
MONEY_DIGITS = "more than 12 digits before the decimal point"
IP_DUP = ("account acme-gw already has this network with the same tech prefix '', protocol/port and gateways "
          "(10.1.2.0/24)")

# (argv, the one error line)
CLI_CASES = [
    (["client", "add", "Big", "--capacity", "2147483648"], f"capacity: {TOO_BIG}"),
    (["client", "update", "Acme", "--max-call-duration", "2147483648"], "max_call_duration: must be 86400 or less "
                                                                        "(2147483648)"),
    (["account", "add", "gw2", "--client", "Acme", "--ips", "10.5.0.1", "--orig-capacity", "2147483648"],
     f"orig_capacity: {TOO_BIG}"),
    (["client", "topup", "Acme", "99999999999999"], f"amount: {MONEY_DIGITS} (99999999999999)"),
    (["client", "topup", "Acme", "999999999999"],
     "amount: the balance would have more than 12 digits before the decimal point (balance 100.00) (999999999999.00)"),
    (["client", "add", "Neg", "--credit-limit", "-5"], "credit_limit: must be 0 or more (-5)"),
    (["client", "add", "New\nline"], f"name: {HIDDEN} ('New\\nline')"),
    (["client", "add", "Tab\tbed"], f"name: {HIDDEN} ('Tab\\tbed')"),
    (["client", "add", "evil\u202egnp.exe"], f"name: {HIDDEN} ('evil\\u202egnp.exe')"),
    (["account", "add", "gw\u200b1", "--client", "Acme", "--ips", "10.5.0.1"], f"name: {HIDDEN} ('gw\\u200b1')"),
    (["nas", "add", "sw\t2", "--address", "10.0.0.2", "--secret", "testing123"], f"name: {HIDDEN} ('sw\\t2')"),
    (["ratetable", "add", "retail\n2"], f"name: {HIDDEN} ('retail\\n2')"),
    (["account", "add", "gw2", "--client", "Acme", "--ips", "10.5.0.1", "--orig-tag", "vip\u202e"],
     f"orig_tag: {HIDDEN} ('vip\\u202e')"),
    (["account", "add", "dup-gw", "--client", "Acme", "--ips", "10.1.2.0/24"], f"ips: {IP_DUP}"),
    (["account", "add", "acme-sip", "--client", "Acme", "--password", "other-pass"],
     "name: already used by account #2 (acme-sip)"),
    (["account", "add", "ani2", "--client", "Acme", "--ani", "15551230000"],
     "ani: account acme-ani already has this ANI with tech prefix '' (15551230000)"),
]

# CSV rate decks: (text, the error line after "FILE:"); line 2 is good, the bad row is line 3
CSV_HEADER = "prefix,description,price_per_minute,minimum_seconds,interval_seconds,grace_seconds\n"
CSV_GOOD = "44,UK,0.02,0,1,0\n"
CSV_CASES = [
    ("49,DE,0.03,3000000000,1,0\n", "3: minimum_seconds: must be 2147483647 or less (3000000000)"),
    ("49,DE,0.03,3e9,1,0\n", "3: minimum_seconds: expected a whole number (3e9)"),
    ("49,DE,0.03,0,2147483648,0\n", f"3: interval_seconds: {TOO_BIG}"),
    ("49,DE,0.03,0,1,2147483648\n", f"3: grace_seconds: {TOO_BIG}"),
    ("49,DE,100000000000000,0,1,0\n", f"3: price_per_minute: {MONEY_DIGITS} (100000000000000)"),
    ("49,DE\tx,0.03,0,1,0\n", f"3: description: {HIDDEN} ('DE\\tx')"),
    ('49,"DE\u202ex",0.03,0,1,0\n', f"3: description: {HIDDEN} ('DE\\u202ex')"),
]

# Seed files: a good statement on line 1 (rolled back with the rest), the bad one from line 2
SEED_GOOD = "INSERT INTO rate_tables (id, name) VALUES (2, 'wholesale');\n"
SEED_CASES = [
    ("INSERT INTO clients (id, name, capacity) VALUES (2, 'Big', 2147483648);",
     f"2: clients.capacity: {TOO_BIG}"),
    ("INSERT INTO clients (id, name, balance) VALUES (2, 'Rich', 100000000000000);",
     f"2: clients.balance: {MONEY_DIGITS} (100000000000000)"),
    ("INSERT INTO clients (id, name, credit_limit) VALUES (2, 'Neg', -5);",
     "2: clients.credit_limit: must be 0 or more (-5)"),
    ("INSERT INTO rates (rate_table_id, prefix, price_per_minute, minimum_seconds, effective_from)\n"
     "  VALUES (1, '49', 0.03, 3000000000, '1970-01-01');",
     "3: rates.minimum_seconds: must be 2147483647 or less (3000000000)"),
    ("INSERT INTO accounts (id, client_id, name, ident_by, orig_capacity) VALUES (4, 1, 'gw2', 'ip', 2147483648);",
     f"2: accounts.orig_capacity: {TOO_BIG}"),
    # the same network and tech prefix as acme-gw: the new account would make acme-gw ambiguous
    ("INSERT INTO accounts (id, client_id, name, ident_by) VALUES (4, 1, 'dup-gw', 'ip');\n"
     "INSERT INTO account_networks (account_id, cidr) VALUES (4, '10.1.2.0/24');",
     f"2: accounts.ips: {IP_DUP} (account dup-gw)"),
    # two new accounts with one identity: the later one is refused
    ("INSERT INTO accounts (id, client_id, name, ident_by, tech_prefix) VALUES\n"
     "  (4, 1, 'first', 'ip', '77'),\n"
     "  (5, 1, 'second', 'ip', '77');\n"
     "INSERT INTO account_networks (account_id, cidr) VALUES (4, '10.7.0.0/16'), (5, '10.7.0.0/16');",
     "4: accounts.ips: account first already has this network with the same tech prefix '77', protocol/port "
     "and gateways (10.7.0.0/16) (account second)"),
    ("INSERT INTO accounts (id, client_id, name, ident_by, password) VALUES (4, 1, 'acme-sip', 'name', 'pw-123456');",
     "2: accounts.name: already used by account #2 (acme-sip)"),
    ("INSERT INTO accounts (id, client_id, name, ident_by, ani) VALUES (4, 1, 'ani2', 'ani', '15551230000');",
     "2: accounts.ani/tech_prefix: already used by account #3 (15551230000, '')"),
    ("INSERT INTO accounts (id, client_id, name, ident_by) VALUES (4, 1, 'login', 'name');",
     "2: accounts.password: a login account (ident_by name) needs a password (empty)"),
    ("INSERT INTO accounts (id, client_id, name, ident_by) VALUES (4, 1, 'ipless', 'ip');",
     "2: accounts.ips: an IP-identified account needs at least one address or CIDR (empty) (account ipless)"),
    ("INSERT INTO accounts (client_id, name, ident_by) VALUES (1, 'no-id', 'ip');",  # the store picks the id
     "2: accounts.ips: an IP-identified account needs at least one address or CIDR (empty) (account no-id)"),
    ("INSERT INTO accounts (id, client_id, name, ident_by) VALUES (4, 99, 'orphan', 'ip');",
     "2: accounts.client_id: no such client (99)"),
    ("INSERT INTO nas (id, name, address, secret) VALUES (2, 'sw2', '10.0.0.1/32', 'testing123');",
     "2: nas.address: already used by NAS #1 (10.0.0.1/32)"),
    ("INSERT INTO clients (id, name) VALUES (2, 'New\nline');", f"2: clients.name: {HIDDEN} ('New\\nline')"),
    ("INSERT INTO clients (id, name) VALUES (2, 'Tab\tbed');", f"2: clients.name: {HIDDEN} ('Tab\\tbed')"),
    ("INSERT INTO clients (id, name) VALUES (2, 'evil\u202egnp');", f"2: clients.name: {HIDDEN} ('evil\\u202egnp')"),
    ("INSERT INTO routing_plans (id, name) VALUES (1, 'plan\u200d');",
     f"2: routing_plans.name: {HIDDEN} ('plan\\u200d')"),
]


class Store:
    """One store with BASE loaded; runs `radiusd ...` in-process and says what it printed."""

    def __init__(self, url: str, tmp_path: Path, capsys):
        self.url, self.tmp, self.capsys = url, tmp_path, capsys
        base = tmp_path / "base.sql"
        base.write_text(BASE)
        code, err = self.run("db", "init")
        assert code == 0, err
        code, err = self.run("seed", "load", str(base))
        assert code == 0, err

    def run(self, *argv) -> tuple[int, str]:
        code = main(["--database-url", self.url, "--actor", "ops", *argv])
        out, err = self.capsys.readouterr()
        return code, err

    def fingerprint(self):
        engine, sessions = open_store(self.url)
        try:
            with sessions() as s:
                return seeds.table_counts(s), current_store_version(s)
        finally:
            engine.dispose()

    def refused(self, *argv) -> str:
        """Run a command that must be refused: exit 2, one line, nothing written. Returns the line."""
        before = self.fingerprint()
        code, err = self.run(*argv)
        assert code == 2, (argv, code, err)
        assert err.startswith("radiusd: error: ") and err.endswith("\n") and err.count("\n") == 1, err
        assert "internal error" not in err
        assert self.fingerprint() == before, argv
        return err[len("radiusd: error: "):-1]

    def file(self, name: str, text: str) -> str:
        path = self.tmp / name
        path.write_text(text, encoding="utf-8")
        return str(path)

    def transcript(self) -> list[str]:
        """Every case through every door, each answer with the file's directory taken out."""
        lines = [self.refused(*argv) for argv, _ in CLI_CASES]
        for number, (row, _) in enumerate(CSV_CASES):
            path = self.file(f"deck{number}.csv", CSV_HEADER + CSV_GOOD + row)
            lines.append(self.refused("rates", "import", "retail", path))
        for number, (statement, _) in enumerate(SEED_CASES):
            path = self.file(f"seed{number}.sql", SEED_GOOD + statement + "\n")
            lines.append(self.refused("seed", "load", path))
        return [line.replace(str(self.tmp) + "/", "") for line in lines]


@pytest.fixture
def store(store_url, tmp_path, capsys):
    return Store(store_url, tmp_path, capsys)


@pytest.mark.parametrize("argv,expected", CLI_CASES, ids=[" ".join(a[:2]) + f"-{i}" for i, (a, _) in
                                                          enumerate(CLI_CASES)])
def test_cli_refuses_with_one_line_naming_the_field(store, argv, expected):
    assert store.refused(*argv) == expected


@pytest.mark.parametrize("row,expected", CSV_CASES, ids=[f"csv-{i}" for i in range(len(CSV_CASES))])
def test_csv_rate_deck_refuses_with_file_and_line(store, row, expected):
    path = store.file("deck.csv", CSV_HEADER + CSV_GOOD + row)
    assert store.refused("rates", "import", "retail", path) == f"{path}:{expected}"


@pytest.mark.parametrize("statement,expected", SEED_CASES, ids=[f"seed-{i}" for i in range(len(SEED_CASES))])
def test_seed_file_holds_the_cli_rules_with_file_and_line(store, statement, expected):
    path = store.file("bad.sql", SEED_GOOD + statement + "\n")
    assert store.refused("seed", "load", path) == f"{path}:{expected}"


def test_values_at_the_bounds_are_stored_exactly(store):
    """The largest values that fit are accepted, and read back the same, on both stores."""
    assert store.run("client", "add", "Max", "--capacity", "2147483647", "--balance", "999999999999.999999")[0] == 0
    assert store.run("client", "topup", "Acme", "999999999899.999999")[0] == 0
    path = store.file("deck.csv", CSV_HEADER + "49,DE,999999999999.999999,2147483647,2147483647,2147483647\n")
    assert store.run("rates", "import", "retail", path)[0] == 0
    code, out = main(["--database-url", store.url, "client", "show", "Max", "--json"]), store.capsys.readouterr()[0]
    assert code == 0 and '"capacity": 2147483647' in out and '"balance": "999999999999.999999"' in out
    main(["--database-url", store.url, "client", "show", "Acme", "--json"])
    assert '"balance": "999999999999.999999"' in store.capsys.readouterr()[0]


def test_both_stores_give_the_same_answers(sqlite_url, pg_url, tmp_path, capsys):
    answers = []
    for name, url in (("sqlite", sqlite_url), ("postgresql", pg_url)):
        folder = tmp_path / name
        folder.mkdir()
        answers.append(Store(url, folder, capsys).transcript())
    assert answers[0] == answers[1]
    assert len(answers[0]) == len(CLI_CASES) + len(CSV_CASES) + len(SEED_CASES)


def test_web_api_shows_the_same_field_errors(sessions):
    app = FastAPI()
    app.state.sessions = sessions
    app.include_router(router)
    with sessions.begin() as s:
        users.add_user(s, "alice", "correct horse battery", "admin", "root", "cli")
        token = users.issue_token(s, "alice", "crm", "root", "cli")
        seeds.load_seed_text(s, BASE, "base.sql", actor="root")
    http = TestClient(app)

    def error(method, path, body):
        r = http.request(method, "/api/v1" + path, json=body, headers={"Authorization": f"Bearer {token}"})
        return r.status_code, r.json()["error"]["field"], r.json()["error"]["message"]

    assert error("POST", "/clients", {"name": "Big", "capacity": 2147483648}) == (400, "capacity", f"capacity: {TOO_BIG}")
    assert error("POST", "/clients", {"name": "evil\u202egnp"})[:2] == (400, "name")
    assert error("POST", "/clients/Acme/topups", {"amount": "999999999999"})[:2] == (400, "amount")
    assert error("POST", "/accounts", {"client": "Acme", "name": "dup", "ips": "10.1.2.0/24"}) == \
        (409, "ips", f"ips: {IP_DUP}")
    with sessions() as s:
        assert seeds.table_counts(s, ["clients", "accounts"]) == {"clients": 1, "accounts": 3}


def test_web_pages_show_the_field_error_next_to_the_field(sessions, tmp_path):
    with sessions.begin() as s:
        users.add_user(s, "alice", "correct horse battery", "admin", "root", "cli")
        seeds.load_seed_text(s, BASE, "base.sql", actor="root")
    settings = load_settings(database_url="sqlite://", web_secret_key_file=str(tmp_path / "key"))
    browser = TestClient(create_app(settings, sessions=sessions), follow_redirects=False)
    page = browser.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    assert browser.post("/login", data={"name": "alice", "password": "correct horse battery",
                                        "csrf_token": token}).status_code == 303
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', browser.get("/").text).group(1)
    for form, field in (({"name": "Big", "capacity": "2147483648"}, "capacity"),
                        ({"name": "Tab\tbed"}, "name"), ({"name": "evil\u202egnp"}, "name"),
                        ({"name": "Neg", "credit_limit": "-5"}, "credit_limit")):
        reply = browser.post("/clients/new", data={"currency": "USD", "active": "yes", **form, "csrf_token": csrf})
        assert reply.status_code == 422 and f'data-field="{field}"' in reply.text, form
    reply = browser.post("/clients/1/topup", data={"amount": "999999999999", "csrf_token": csrf})
    assert reply.status_code == 422 and 'data-field="amount"' in reply.text
    with sessions() as s:
        assert seeds.table_counts(s, ["clients"]) == {"clients": 1}
        assert s.get(Client, 1).balance == 100
