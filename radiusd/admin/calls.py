"""Open calls and CDRs for the admin: list them by owner, end one call by hand (audited).

The rules of ending a call live in the accounting engine (`radiusd.store.accounting.remove_call`,
decided by radiusd.core.accounting); this module names the call, audits the removal and shapes
the rows. Every value comes in as the user typed it and is checked here (UserError names the field).
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from radiusd.admin import audit
from radiusd.errors import UserError
from radiusd.models import Account, ActiveCall, Cdr, Client, Nas
from radiusd.store.accounting import remove_call as end_call

CALL_COLUMNS = ["id", "state", "leg", "nas", "account", "client", "call_id", "caller", "called", "started_at",
                "last_seen_at", "session_seconds", "expires_at", "max_duration"]
CDR_COLUMNS = ["id", "leg", "nas", "account", "client", "call_id", "caller", "called", "connect_time",
               "disconnect_time", "duration", "billed_seconds", "result", "disconnect_cause", "prefix",
               "price_per_minute", "cost", "currency"]
CDR_DETAIL_COLUMNS = CDR_COLUMNS + ["leg_key", "acct_session_id", "tech_prefix", "remote_address", "setup_time",
                                    "rate_table_id"]


def _lookup(session: Session, model, name: str | None, field: str) -> int | None:
    if name is None:
        return None
    found = session.scalar(select(model.id).where(model.name == name))
    if found is None:
        raise UserError(f"{field}: no such {field} {name!r}")
    return found


def _owned_by(session: Session, stmt, model, account: str | None, client: str | None, nas: str | None):
    """Narrow a calls/CDR query to the account, client and NAS given by name."""
    for field, name, owner, column in (("account", account, Account, model.account_id),
                                       ("client", client, Client, model.client_id),
                                       ("nas", nas, Nas, model.nas_id)):
        owner_id = _lookup(session, owner, name, field)
        if owner_id is not None:
            stmt = stmt.where(column == owner_id)
    return stmt


def _time(value: str | None, field: str) -> dt.datetime | None:
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise UserError(f"{field}: not an ISO-8601 date/time: {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.astimezone(dt.timezone.utc)


def _named(model):
    acc, cli, nas = aliased(Account), aliased(Client), aliased(Nas)
    return (select(model, nas.name, acc.name, cli.name)
            .outerjoin(nas, nas.id == model.nas_id)
            .outerjoin(acc, acc.id == model.account_id)
            .outerjoin(cli, cli.id == model.client_id))


def _row(obj, columns, nas_name, account_name, client_name) -> dict:
    names = {"nas": nas_name, "account": account_name, "client": client_name}
    return {column: names[column] if column in names else getattr(obj, column) for column in columns}


def list_calls(session: Session, *, account: str | None = None, client: str | None = None,
               nas: str | None = None) -> list[dict]:
    """Open calls and reservations, oldest first."""
    stmt = _owned_by(session, _named(ActiveCall).order_by(ActiveCall.id), ActiveCall, account, client, nas)
    return [_row(call, CALL_COLUMNS, n, a, c) for call, n, a, c in session.execute(stmt).all()]


def list_cdrs(session: Session, *, account: str | None = None, client: str | None = None, nas: str | None = None,
              call_id: str | None = None, since: str | None = None, until: str | None = None,
              limit="100", detail: bool = False) -> list[dict]:
    """CDRs, newest first; `since`/`until` ISO-8601 (UTC if no offset), `limit` a positive number."""
    try:
        count = int(limit)
        if count <= 0:
            raise ValueError
    except ValueError:
        raise UserError(f"limit: expected a positive whole number, got {limit!r}") from None
    start, end = _time(since, "since"), _time(until, "until")
    stmt = _named(Cdr).order_by(Cdr.disconnect_time.desc(), Cdr.id.desc()).limit(count)
    stmt = _owned_by(session, stmt, Cdr, account, client, nas)
    if call_id:
        stmt = stmt.where(Cdr.call_id == call_id)
    if start is not None:
        stmt = stmt.where(Cdr.disconnect_time >= start)
    if end is not None:
        stmt = stmt.where(Cdr.disconnect_time < end)
    columns = CDR_DETAIL_COLUMNS if detail else CDR_COLUMNS
    return [_row(cdr, columns, n, a, c) for cdr, n, a, c in session.execute(stmt).all()]


def remove_call(session: Session, call_id, now: dt.datetime, *, actor: str, context: str = "cli") -> dict:
    """End one open call (charged like a Stop at `now`) or drop a reservation, in the caller's
    transaction, audited. `call_id` is the row id shown by `calls list`."""
    try:
        row_id = int(str(call_id).strip())
    except ValueError:
        raise UserError(f"id: not a call id: {call_id!r}") from None
    removed = end_call(session, row_id, now)
    if removed is None:
        raise UserError(f"id: no open call {row_id}")
    row, result = removed
    before = {"state": row.state, "leg": row.leg, "call_id": row.call_id, "leg_key": row.leg_key,
              "account_id": row.account_id, "client_id": row.client_id}
    audit.record(session, object_type="call", object_id=row_id, object_name=before["call_id"][:200],
                 action="remove", actor=actor, context=context, changes={k: [v, None] for k, v in before.items()})
    return result
