"""Web admin users and API tokens (radiusd.admin.users) and `radiusd web user|token`, on both stores."""
from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from radiusd.admin import users
from radiusd.cli import main
from radiusd.errors import UserError
from radiusd.models import ApiToken, AuditEntry, WebUser

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery"


def _audit(sessions, **where) -> list[AuditEntry]:
    with sessions() as s:
        query = select(AuditEntry).order_by(AuditEntry.id)
        for key, value in where.items():
            query = query.where(getattr(AuditEntry, key) == value)
        return list(s.scalars(query))


def _count(sessions, model) -> int:
    with sessions() as s:
        return s.scalar(select(func.count()).select_from(model))


def test_password_is_an_argon2id_hash_and_login_checks_it(sessions):
    with sessions.begin() as s:
        record = users.add_user(s, "alice", PASSWORD, "admin", "root", "cli")
    assert record["role"] == "admin" and "password_hash" not in record and "password" not in record
    with sessions() as s:
        stored = s.scalar(select(WebUser.password_hash))
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    with sessions.begin() as s:
        assert users.verify_login(s, "alice", PASSWORD) == users.UserInfo(name="alice", role="admin")
        assert users.verify_login(s, "alice", PASSWORD + "x") is None
        assert users.verify_login(s, "alice", "") is None
        assert users.verify_login(s, "nobody", PASSWORD) is None
        users.set_password(s, "alice", "another long secret", "root", "web")
        assert users.verify_login(s, "alice", PASSWORD) is None
        assert users.verify_login(s, "alice", "another long secret").role == "admin"
        users.update_user(s, "alice", "root", "web", active=False)
        assert users.verify_login(s, "alice", "another long secret") is None


def test_audit_rows_never_hold_the_password_or_its_hash(sessions):
    with sessions.begin() as s:
        users.add_user(s, "alice", PASSWORD, "viewer", "root", "cli")
        users.set_password(s, "alice", "another long secret", "bob", "web")
        users.update_user(s, "alice", "bob", "web", role="admin")
    with sessions() as s:
        stored = s.scalar(select(WebUser.password_hash))
    entries = _audit(sessions, object_type="web_user")
    assert [(e.action, e.actor, e.context) for e in entries] == [
        ("create", "root", "cli"), ("passwd", "bob", "web"), ("update", "bob", "web")]
    assert json.loads(entries[1].changes) == {"password": ["***", "(changed)"]}
    assert json.loads(entries[2].changes) == {"role": ["viewer", "admin"]}
    for entry in entries:
        for secret in (PASSWORD, "another long secret", stored, stored.split("$")[-1]):
            assert secret not in entry.changes


@pytest.mark.parametrize("name, password, role, field", [
    ("ali\u202ece", PASSWORD, "admin", "name"),       # right-to-left override: looks like "aliec"
    ("ali\u200bce", PASSWORD, "admin", "name"),       # zero-width space
    ("ali\x07ce", PASSWORD, "admin", "name"),
    ("ali ce", PASSWORD, "admin", "name"),
    ("", PASSWORD, "admin", "name"),
    ("alice", "short", "admin", "password"),
    ("alice", "long enough\x00", "admin", "password"),
    ("alice", PASSWORD, "root", "role"),
])
def test_bad_input_names_the_field_and_writes_nothing(sessions, name, password, role, field):
    with pytest.raises(UserError) as caught, sessions.begin() as s:
        users.add_user(s, name, password, role, "root", "cli")
    assert caught.value.field == field and str(caught.value).startswith(f"{field}: ")
    assert password not in str(caught.value) or password == ""
    assert _count(sessions, WebUser) == 0 and _audit(sessions) == []


def test_a_name_is_taken_once(sessions):
    with sessions.begin() as s:
        users.add_user(s, "alice", PASSWORD, "admin", "root", "cli")
    with pytest.raises(UserError, match="^name: "), sessions.begin() as s:
        users.add_user(s, "alice", PASSWORD, "viewer", "root", "cli")
    with pytest.raises(UserError, match="^name: no such"), sessions.begin() as s:
        users.set_password(s, "bob", PASSWORD, "root", "cli")


def test_tokens_are_stored_hashed_shown_once_and_revocable(sessions):
    with sessions.begin() as s:
        users.add_user(s, "crm", PASSWORD, "admin", "root", "cli")
        users.add_user(s, "reports", PASSWORD, "viewer", "root", "cli")
        token = users.issue_token(s, "crm", "billing sync", "root", "cli")
        other = users.issue_token(s, "reports", "", "root", "cli")
    assert token != other and len(token) > 40
    with sessions() as s:
        hashes = set(s.scalars(select(ApiToken.token_hash)))
    assert hashes == {hashlib.sha256(t.encode()).hexdigest() for t in (token, other)}
    with sessions.begin() as s:
        assert users.user_for_token(s, token) == users.UserInfo("crm", "admin")
        assert users.user_for_token(s, other) == users.UserInfo("reports", "viewer")
        assert users.user_for_token(s, token[:-1]) is None
        assert users.user_for_token(s, hashlib.sha256(token.encode()).hexdigest()) is None  # the hash is no token
        listed = users.list_tokens(s, "crm")
        assert [(t["user"], t["label"]) for t in listed] == [("crm", "billing sync")]
        assert listed[0]["last_used_at"] is not None
        assert token not in json.dumps(users.list_tokens(s), default=str)
        users.revoke_token(s, listed[0]["id"], "root", "web")
        assert users.user_for_token(s, token) is None
        with pytest.raises(UserError, match="^id: .*already revoked"):
            users.revoke_token(s, listed[0]["id"], "root", "web")
        users.update_user(s, "reports", "root", "web", active=False)
        assert users.user_for_token(s, other) is None
    entries = _audit(sessions, object_type="api_token")
    assert [(e.action, e.context) for e in entries] == [("create", "cli"), ("create", "cli"), ("revoke", "web")]
    assert all(token not in e.changes and other not in e.changes for e in entries)


# ---------------------------------------------------------------- CLI

def _run(monkeypatch, capsys, url, *argv, stdin: str = ""):
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main([*argv, "--database-url", url])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_web_user_add_reads_the_password_from_stdin(store_url, sessions, monkeypatch, capsys):
    code, out, err = _run(monkeypatch, capsys, store_url, "web", "user", "add", "alice", "--role", "admin",
                          stdin=PASSWORD + "\n")
    assert code == 0, err
    assert PASSWORD not in out
    with sessions() as s:
        assert s.scalar(select(WebUser.password_hash)).startswith("$argon2id$")
        assert users.verify_login(s, "alice", PASSWORD).role == "admin"
    code, _, err = _run(monkeypatch, capsys, store_url, "web", "user", "add", "bob", stdin="")
    assert code == 2 and err.startswith("radiusd: error: password: nothing on standard input")
    code, _, err = _run(monkeypatch, capsys, store_url, "web", "user", "add", "bob", stdin="tooshort\n")
    assert code == 2 and "password: must be at least 10" in err and "tooshort" not in err
    code, _, err = _run(monkeypatch, capsys, store_url, "web", "user", "add", "bob", "--role", "owner",
                        stdin=PASSWORD + "\n")
    assert code == 2 and "role" in err
    code, _, _ = _run(monkeypatch, capsys, store_url, "web", "user", "passwd", "alice", stdin="a new long secret\n")
    assert code == 0
    with sessions() as s:
        assert users.verify_login(s, "alice", "a new long secret") is not None


def test_cli_web_user_list_never_shows_hashes(store_url, sessions, monkeypatch, capsys):
    for name, role in (("alice", "admin"), ("victor", "viewer")):
        assert _run(monkeypatch, capsys, store_url, "web", "user", "add", name, "--role", role,
                    stdin=PASSWORD + "\n")[0] == 0
    with sessions() as s:
        hashes = list(s.scalars(select(WebUser.password_hash)))
    for extra in ((), ("--json",)):
        code, out, _ = _run(monkeypatch, capsys, store_url, "web", "user", "list", *extra)
        assert code == 0 and "alice" in out and "victor" in out
        assert "argon2" not in out and not any(h in out or h.split("$")[-1] in out for h in hashes)
    rows = json.loads(_run(monkeypatch, capsys, store_url, "web", "user", "list", "--json")[1])
    assert [(r["name"], r["role"], r["active"]) for r in rows] == [("alice", "admin", True), ("victor", "viewer", True)]


def test_cli_web_token_add_list_revoke(store_url, sessions, monkeypatch, capsys):
    _run(monkeypatch, capsys, store_url, "web", "user", "add", "crm", "--role", "admin", stdin=PASSWORD + "\n")
    code, out, err = _run(monkeypatch, capsys, store_url, "web", "token", "add", "crm", "--label", "billing")
    token = out.strip()
    assert code == 0 and token.startswith(users.TOKEN_PREFIX) and "shown once" in err
    with sessions() as s:
        assert users.user_for_token(s, token).name == "crm"
    code, out, _ = _run(monkeypatch, capsys, store_url, "web", "token", "list", "--json")
    [row] = json.loads(out)
    assert (row["user"], row["label"], row["revoked_at"]) == ("crm", "billing", None) and token not in out
    assert _run(monkeypatch, capsys, store_url, "web", "token", "revoke", str(row["id"]))[0] == 0
    with sessions() as s:
        assert users.user_for_token(s, token) is None
    code, _, err = _run(monkeypatch, capsys, store_url, "web", "token", "add", "nobody")
    assert code == 2 and "name: no such web user" in err


def test_cli_password_never_on_the_command_line(sqlite_url):
    """The real command in a process of its own: the password comes through a pipe, and there is
    no option that would take it as an argument."""
    subprocess.run([sys.executable, "-m", "radiusd", "db", "init", "--database-url", sqlite_url], check=True,
                   capture_output=True, cwd=ROOT, timeout=120)
    run = subprocess.run([sys.executable, "-m", "radiusd", "web", "user", "add", "alice", "--role", "viewer",
                          "--database-url", sqlite_url], input=PASSWORD + "\n", capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stderr
    assert PASSWORD not in run.stdout + run.stderr
    refused = subprocess.run([sys.executable, "-m", "radiusd", "web", "user", "add", "bob", "--password", PASSWORD,
                              "--database-url", sqlite_url], capture_output=True, text=True, cwd=ROOT, timeout=120,
                             stdin=subprocess.DEVNULL)
    assert refused.returncode == 2 and "unrecognized arguments: --password" in refused.stderr
