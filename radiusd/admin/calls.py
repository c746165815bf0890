"""Active calls and CDRs as the operator sees them: listing with filters, ending a call by hand.

One place for these rules, used by the CLI (`calls`, `cdr`), the web pages and the JSON API:
filters by account/client/NAS name, a CDR time window (`since` inclusive, `until` exclusive),
newest CDRs first, and ending a call through the same accounting code a Stop takes.
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, aliased

from radiusd.admin import audit
from radiusd.admin import fields as F
from radiusd.errors import UserError
from radiusd.models import Account, ActiveCall, Cdr, Client, Nas
from radiusd.store.accounting import remove_call

CALL_COLUMNS = ["id", "state", "leg", "nas", "account", "client", "call_id", "caller", "called", "started_at",
                "last_seen_at", "session_seconds", "expires_at", "max_duration"]
CDR_COLUMNS = ["id", "leg", "nas", "account", "client", "call_id", "caller", "called", "connect_time",
               "disconnect_time", "duration", "billed_seconds", "result", "disconnect_cause", "prefix",
               "price_per_minute", "cost", "currency", "flags"]
CDR_DETAIL_COLUMNS = CDR_COLUMNS + ["leg_key", "acct_session_id", "tech_prefix", "remote_address", "setup_time",
                                    "rate_table_id"]
DEFAULT_CDR_LIMIT = 100


class NoSuchCall(UserError):
    """The call asked for is not open (never was, or already ended)."""

MAX_PAGE = 10000


def _lookup(session: Session, model, name, field: str) -> int | None:
    if name in (None, ""):
        return None
    found = session.scalar(select(model.id).where(model.name == str(name).strip()))
    if found is None:
        raise F.fail(field, f"no such {field}", name)
    return found


def _owned_by(session: Session, stmt, model, account, client, nas):
    """Narrow a calls/CDR query to the account, client and NAS given by name."""
    for value, owner, column, field in ((account, Account, model.account_id, "account"),
                                        (client, Client, model.client_id, "client"),
                                        (nas, Nas, model.nas_id, "nas")):
        owner_id = _lookup(session, owner, value, field)
        if owner_id is not None:
            stmt = stmt.where(column == owner_id)
    return stmt


def _named(model):
    acc, cli, nas = aliased(Account), aliased(Client), aliased(Nas)
    return (select(model, nas.name, acc.name, cli.name)
            .outerjoin(nas, nas.id == model.nas_id)
            .outerjoin(acc, acc.id == model.account_id)
            .outerjoin(cli, cli.id == model.client_id))


def _row(obj, columns, nas_name, account_name, client_name) -> dict:
    names = {"nas": nas_name, "account": account_name, "client": client_name}
    out = {}
    for column in columns:
        if column in names:
            out[column] = names[column]
        elif column in ("price_per_minute", "cost"):
            out[column] = F.money_out(getattr(obj, column))
        else:
            out[column] = getattr(obj, column)
    return out


def _page(offset, limit, *, default_limit: int | None) -> tuple[int, int | None]:
    offset = F.integer("offset", 0 if offset in (None, "") else offset, minimum=0)
    if limit in (None, ""):
        return offset, default_limit
    return offset, F.integer("limit", limit, minimum=1, maximum=MAX_PAGE)


def _count(session: Session, stmt) -> int:
    return session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0


def call_page(session: Session, *, account=None, client=None, nas=None, offset=0, limit=None,
              with_total: bool = True) -> dict:
    """Open calls and reservations by id: {"total", "offset", "limit", "rows"} (limit None = all)."""
    offset, limit = _page(offset, limit, default_limit=None)
    stmt = _owned_by(session, _named(ActiveCall), ActiveCall, account, client, nas)
    total = _count(session, stmt) if with_total else None
    stmt = stmt.order_by(ActiveCall.id).offset(offset)
    if limit is not None:
        stmt = stmt.limit(limit)
    rows = [_row(call, CALL_COLUMNS, n, a, c) for call, n, a, c in session.execute(stmt).all()]
    return {"total": total, "offset": offset, "limit": limit, "rows": rows}


def cdr_page(session: Session, *, account=None, client=None, nas=None, call_id=None, since=None, until=None,
             flagged=None, offset=0, limit=DEFAULT_CDR_LIMIT, detail: bool = False, with_total: bool = True) -> dict:
    """CDRs newest first (by disconnect time): {"total", "offset", "limit", "rows"}.

    `since` is inclusive, `until` exclusive (ISO-8601; UTC when no offset is given); `call_id`
    gives all legs of one call; `flagged` yes/no keeps only the CDRs the accounting sanity
    checks flagged (or only the clean ones): what a switch reported that was not billed as sent;
    `detail` adds the leg key, session id and other technical columns.
    """
    offset, limit = _page(offset, limit, default_limit=DEFAULT_CDR_LIMIT)
    since = F.timestamp("since", since, nullable=True)
    until = F.timestamp("until", until, nullable=True)
    stmt = _owned_by(session, _named(Cdr), Cdr, account, client, nas)
    if call_id not in (None, ""):
        stmt = stmt.where(_call_id_matches(str(call_id)))
    if since is not None:
        stmt = stmt.where(Cdr.disconnect_time >= since)
    if until is not None:
        stmt = stmt.where(Cdr.disconnect_time < until)
    if flagged not in (None, ""):
        stmt = stmt.where(Cdr.flags != "" if F.boolean("flagged", flagged) else Cdr.flags == "")
    total = _count(session, stmt) if with_total else None
    stmt = stmt.order_by(Cdr.disconnect_time.desc(), Cdr.id.desc()).offset(offset).limit(limit)
    columns = CDR_DETAIL_COLUMNS if detail else CDR_COLUMNS
    rows = [_row(cdr, columns, n, a, c) for cdr, n, a, c in session.execute(stmt).all()]
    return {"total": total, "offset": offset, "limit": limit, "rows": rows}


def end_call(session: Session, call_id, *, actor: str, context: str, now: dt.datetime | None = None) -> dict:
    """End one open call by hand: a reservation is dropped; a started call gets its CDR and charge
    as if a Stop arrived now (cause `manual`), decided by the accounting engine
    (radiusd.store.accounting.remove_call -> radiusd.core.accounting). Audited."""
    call_id = F.integer("id", call_id, minimum=1)
    removed = remove_call(session, call_id, now or audit.utcnow())
    if removed is None:
        raise NoSuchCall(f"id: no open call with this id ({call_id})", field="id")
    row, result = removed
    if result.get("cost") is not None:
        result["cost"] = F.money_out(result["cost"])
    before = {"state": row.state, "leg": row.leg, "call_id": row.call_id, "leg_key": row.leg_key,
              "account_id": row.account_id, "client_id": row.client_id}
    audit.record(session, object_type="call", object_id=call_id, object_name=before["call_id"][:200],
                 action="remove", actor=actor, context=context, changes={k: [v, None] for k, v in before.items()})
    return result


def _call_id_matches(given: str):
    """The legs of one call: its call id as stored, or as an operator copies it from a Cisco log.

    h323-conf-ids are stored as four upper-case hex words (radius.dialects.normalise_conf_id), so
    the conf-id in any case and spacing matches, and so does its first word alone (`3D3C5E4A`).
    """
    text = " ".join(given.split())
    wanted = {given, text, text.upper()}
    match = Cdr.call_id.in_(sorted(wanted))
    if text and " " not in text:
        match = or_(match, Cdr.call_id.startswith(text.upper() + " ", autoescape=True))
    return match
