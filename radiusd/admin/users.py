"""Web admin users and API tokens: who may log in to `radiusd web` and call the JSON API.

Passwords are kept as argon2id hashes (memory-hard: a stolen table is expensive to crack) and
checked by argon2 itself. API tokens are random and shown once; only their SHA-256 is stored, so
the table alone does not let anyone call the API. Each change is audited like any admin change,
the password never in the row (it shows as "***" / "(changed)"), a token never at all.

Roles: `admin` may change things, `viewer` may only read.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import unicodedata
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from radiusd.admin import audit
from radiusd.admin import fields as F
from radiusd.models import WEB_ROLES, ApiToken, WebUser

ROLES = WEB_ROLES
MIN_PASSWORD = 10
MAX_PASSWORD = 1024
TOKEN_PREFIX = "rdt_"  # recognisable in a config file or a leaked log, like other vendors' tokens
# last_used_at is a hint for the operator, not a log: write it at most this often per token
LAST_USED_GRANULARITY = dt.timedelta(minutes=1)

# argon2-cffi's defaults are argon2id (RFC 9106 low-memory profile: 64 MiB, 3 passes)
_hasher = PasswordHasher()
_dummy_hash: list[str] = []


def _dummy() -> str:
    """Checked against when the user does not exist, so an unknown name costs the same time as a
    wrong password and does not tell an attacker which names exist. Made on first use: hashing
    costs time and memory that a CLI command which never logs anyone in should not pay."""
    if not _dummy_hash:
        _dummy_hash.append(_hasher.hash(secrets.token_urlsafe(16)))
    return _dummy_hash[0]


@dataclass(frozen=True)
class UserInfo:
    """Who is calling: what the web pages and the API need to know about a logged-in user."""

    name: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def _user_name(value) -> str:
    # F.name refuses control and invisible formatting characters, as for every admin name
    return F.name("name", value, spaces=False)


def _password(value) -> str:
    if not isinstance(value, str) or value == "":
        raise F.fail("password", "must not be empty", "value hidden")
    if len(value) < MIN_PASSWORD:
        raise F.fail("password", f"must be at least {MIN_PASSWORD} characters", "value hidden")
    if len(value) > MAX_PASSWORD:
        raise F.fail("password", f"longer than {MAX_PASSWORD} characters", "value hidden")
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise F.fail("password", "contains control characters", "value hidden")
    return value


def _role(value) -> str:
    return F.choice("role", value, ROLES)


def _now() -> dt.datetime:
    return audit.utcnow()


def _state(user: WebUser) -> dict:
    """Every field, the hash included under "password" so that audit.diff redacts it."""
    return {"id": user.id, "name": user.name, "role": user.role, "active": user.active,
            "password": user.password_hash}


def user_record(user: WebUser) -> dict:
    """What we show: never the hash."""
    return {"id": user.id, "name": user.name, "role": user.role, "active": user.active,
            "created_at": user.created_at, "updated_at": user.updated_at}


def _find_user(session: Session, name, *, field: str = "name") -> WebUser:
    key = "" if name is None else str(name).strip()
    user = session.scalars(select(WebUser).where(WebUser.name == key)).first()
    if user is None:
        raise F.fail(field, "no such web user", key or repr(key))
    return user


def _audit(session: Session, user: WebUser, action: str, actor: str, context: str, changes: dict) -> None:
    audit.record(session, object_type="web_user", object_id=user.id, object_name=user.name, action=action,
                 actor=actor, context=context, changes=changes)


def add_user(session: Session, name, password, role, actor: str, context: str) -> dict:
    """Create a web/API user with an argon2id password hash."""
    name = _user_name(name)
    role = _role(role)
    password = _password(password)
    if session.scalars(select(WebUser).where(WebUser.name == name)).first() is not None:
        raise F.conflict("name", "a web user with this name exists", name)
    now = _now()
    user = WebUser(name=name, role=role, active=True, password_hash=_hasher.hash(password),
                   created_at=now, updated_at=now)
    session.add(user)
    session.flush()
    _audit(session, user, "create", actor, context, audit.diff({}, _state(user)))
    return user_record(user)


def set_password(session: Session, name, password, actor: str, context: str) -> dict:
    user = _find_user(session, name)
    password = _password(password)
    before = _state(user)
    user.password_hash = _hasher.hash(password)
    user.updated_at = _now()
    session.flush()
    _audit(session, user, "passwd", actor, context, audit.diff(before, _state(user)))
    return user_record(user)


def update_user(session: Session, name, actor: str, context: str, *, role=None, active=None) -> dict:
    """Change a user's role and/or deactivate (active=False: no login, tokens refused) or reactivate."""
    user = _find_user(session, name)
    before = _state(user)
    if role is not None:
        user.role = _role(role)
    if active is not None:
        user.active = F.boolean("active", active)
    changes = audit.diff(before, _state(user))
    if changes:
        user.updated_at = _now()
        session.flush()
        _audit(session, user, "update", actor, context, changes)
    return user_record(user)


def list_users(session: Session) -> list[dict]:
    return [user_record(u) for u in session.scalars(select(WebUser).order_by(WebUser.id))]


def verify_login(session: Session, name, password) -> UserInfo | None:
    """The user if `password` is theirs and they are active, else None (which of the two is not said).

    argon2 compares in constant time; an unknown name is checked against a dummy hash so that it
    takes as long as a wrong password. A hash made with weaker parameters than today's is
    upgraded on a successful login (no audit entry: nothing the admin chose changed).
    """
    key = "" if name is None else str(name).strip()
    password = password if isinstance(password, str) else ""
    user = session.scalars(select(WebUser).where(WebUser.name == key)).first() if key else None
    try:
        _hasher.verify(user.password_hash if user is not None else _dummy(), password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if user is None or not user.active:
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
        session.flush()
    return UserInfo(name=user.name, role=user.role)


# ---------------------------------------------------------------- API tokens

def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_record(session: Session, token: ApiToken) -> dict:
    user = session.get(WebUser, token.user_id)
    return {"id": token.id, "user": user.name if user else None, "role": user.role if user else None,
            "label": token.label, "created_at": token.created_at, "last_used_at": token.last_used_at,
            "revoked_at": token.revoked_at}


def issue_token(session: Session, name, label, actor: str, context: str) -> str:
    """A new bearer token for user `name`, returned once: only its SHA-256 is stored."""
    user = _find_user(session, name)
    if not user.active:
        raise F.fail("name", "the web user is deactivated", user.name)
    label = F.text("label", label, max_len=100)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(user_id=user.id, token_hash=_token_hash(token), label=label, created_at=_now())
    session.add(row)
    session.flush()
    audit.record(session, object_type="api_token", object_id=row.id, object_name=f"{user.name}: {label}"[:200],
                 action="create", actor=actor, context=context,
                 changes={"user": [None, user.name], "label": [None, label]})
    return token


def revoke_token(session: Session, token_id, actor: str, context: str) -> dict:
    """Revoke a token by its id (see list_tokens); a revoked token is refused from then on."""
    token_id = F.integer("id", token_id, minimum=1)
    row = session.get(ApiToken, token_id)
    if row is None:
        raise F.fail("id", "no such API token", token_id)
    if row.revoked_at is not None:
        raise F.fail("id", "the API token is already revoked", token_id)
    row.revoked_at = _now()
    session.flush()
    record = token_record(session, row)
    audit.record(session, object_type="api_token", object_id=row.id,
                 object_name=f"{record['user']}: {row.label}"[:200], action="revoke", actor=actor, context=context,
                 changes={"revoked_at": [None, audit.plain(row.revoked_at)]})
    return record


def list_tokens(session: Session, name=None) -> list[dict]:
    """Tokens (all users, or one user's), oldest first: id, user, label, dates. Never the token."""
    query = select(ApiToken).order_by(ApiToken.id)
    if name not in (None, ""):
        query = query.where(ApiToken.user_id == _find_user(session, name).id)
    return [token_record(session, t) for t in session.scalars(query)]


def user_for_token(session: Session, token) -> UserInfo | None:
    """The active user a bearer token acts as, or None (unknown, revoked, user deactivated)."""
    if not isinstance(token, str) or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    row = session.scalars(select(ApiToken).where(ApiToken.token_hash == _token_hash(token))).first()
    # the lookup is by hash: timing reveals nothing about the token's characters
    if row is None or row.revoked_at is not None:
        return None
    user = session.get(WebUser, row.user_id)
    if user is None or not user.active:
        return None
    now = _now()
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_GRANULARITY:
        row.last_used_at = now
        session.flush()
    return UserInfo(name=user.name, role=user.role)


def count_users(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(WebUser)) or 0
