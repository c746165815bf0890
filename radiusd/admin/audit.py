"""The audit log: every admin change, written in the same transaction as the change itself.

`changes` is JSON `{field: [before, after]}`. Secrets (account passwords, NAS shared secrets)
never reach the log: a set secret shows as "***", a changed one as "(changed)".
"""
from __future__ import annotations

import datetime as dt
import json

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from radiusd.admin import fields as F
from radiusd.db import bump_store_version
from radiusd.models import AuditEntry
from radiusd.plain import plain  # noqa: F401  (audit.plain: the same JSON-friendly form)

SECRET_FIELDS = frozenset({"password", "secret"})
REDACTED = "***"
CHANGED = "(changed)"
CONTEXTS = ("cli", "seed", "web", "api")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def redact(record: dict) -> dict:
    """A copy of a state record with secrets replaced by "***" (None stays None)."""
    return {k: (REDACTED if k in SECRET_FIELDS and v else v) for k, v in record.items()}


def diff(before: dict | None, after: dict | None) -> dict:
    """{field: [before, after]} for fields that differ; secrets redacted.

    A create (before = {}) or delete (after = {}) lists every field, even empty ones, so the log
    holds the complete state the object was created with or had when it was deleted.
    """
    before = before or {}
    after = after or {}
    changes: dict = {}
    for key in list(before) + [k for k in after if k not in before]:
        old, new = before.get(key), after.get(key)
        if key in before and key in after and plain(old, key) == plain(new, key):
            continue
        if key in SECRET_FIELDS:
            old_shown = REDACTED if old else None
            new_shown = (CHANGED if old else REDACTED) if new else None
            changes[key] = [old_shown, new_shown]
        else:
            changes[key] = [plain(old, key), plain(new, key)]
    return changes


def record(session: Session, *, object_type: str, object_id: int | None, object_name: str, action: str,
           actor: str, context: str, changes: dict) -> AuditEntry:
    """Write one audit entry and bump the store version (both in the caller's transaction)."""
    if context not in CONTEXTS:
        raise F.fail("context", f"expected one of {', '.join(CONTEXTS)}", context)
    entry = AuditEntry(
        at=utcnow(), object_type=object_type, object_id=object_id, object_name=object_name or "",
        action=action, actor=actor or "unknown", context=context,
        changes=json.dumps(plain(changes), sort_keys=True),
    )
    session.add(entry)
    session.flush()
    bump_store_version(session)
    return entry


def entry_record(entry: AuditEntry) -> dict:
    return {
        "id": entry.id, "at": entry.at, "actor": entry.actor, "context": entry.context,
        "action": entry.action, "object_type": entry.object_type, "object_id": entry.object_id,
        "object_name": entry.object_name, "changes": json.loads(entry.changes or "{}"),
    }


def list_entries(session: Session, *, object_type: str | None = None, object_id=None, actor: str | None = None,
                 since=None, until=None, limit: int | None = None) -> list[dict]:
    """Audit entries, oldest first; `since` inclusive, `until` exclusive; `limit` keeps the newest."""
    query = _filtered(select(AuditEntry), object_type, object_id, actor, since, until)
    query = query.order_by(AuditEntry.id.desc())
    if limit is not None:
        query = query.limit(F.integer("limit", limit, minimum=1))
    entries = list(session.scalars(query))
    entries.reverse()
    return [entry_record(e) for e in entries]


def count_entries(session: Session, *, object_type: str | None = None, object_id=None, actor: str | None = None,
                  since=None, until=None) -> int:
    """How many entries list_entries would give without a limit."""
    query = _filtered(select(func.count()).select_from(AuditEntry), object_type, object_id, actor, since, until)
    return session.scalar(query) or 0


def _filtered(query, object_type, object_id, actor, since, until):
    if object_type:
        query = query.where(AuditEntry.object_type == object_type)
    if object_id is not None:
        query = query.where(AuditEntry.object_id == F.integer("object_id", object_id, minimum=0))
    if actor:
        query = query.where(AuditEntry.actor == actor)
    if since is not None:
        query = query.where(AuditEntry.at >= F.timestamp("since", since))
    if until is not None:
        query = query.where(AuditEntry.at < F.timestamp("until", until))
    return query
