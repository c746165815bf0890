"""`radiusd calls list|remove` and `radiusd cdr list`: open calls and finished call legs."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import aliased

from radiusd.admin import audit
from radiusd.cli_output import UserError, actor_from_args, common_options, emit, settings_from_args
from radiusd.models import Account, ActiveCall, Cdr, Client, Nas

CALL_COLUMNS = ["id", "state", "leg", "nas", "account", "client", "call_id", "caller", "called", "started_at",
                "last_seen_at", "session_seconds", "expires_at", "max_duration"]
CDR_COLUMNS = ["id", "leg", "nas", "account", "client", "call_id", "caller", "called", "connect_time",
               "disconnect_time", "duration", "billed_seconds", "result", "disconnect_cause", "prefix",
               "price_per_minute", "cost", "currency"]


def register(subparsers) -> None:
    common = common_options()
    calls = subparsers.add_parser("calls", help="calls in progress and capacity reservations")
    calls_sub = calls.add_subparsers(dest="calls_command", metavar="ACTION", required=True)
    listing = calls_sub.add_parser("list", parents=[common], help="list open calls and reservations")
    listing.add_argument("--account", help="account name")
    listing.add_argument("--client", help="client name")
    listing.add_argument("--nas", help="NAS name")
    listing.set_defaults(func=calls_list)
    remove = calls_sub.add_parser("remove", parents=[common],
                                  help="end one call by hand: writes its CDR as if stopped now (audited)")
    remove.add_argument("id", help="call id as shown by `calls list` (the ID column)")
    remove.set_defaults(func=calls_remove)

    cdr = subparsers.add_parser("cdr", help="call detail records")
    cdr_sub = cdr.add_subparsers(dest="cdr_command", metavar="ACTION", required=True)
    cdr_list = cdr_sub.add_parser("list", parents=[common], help="list CDRs, newest first")
    cdr_list.add_argument("--account", help="account name")
    cdr_list.add_argument("--client", help="client name")
    cdr_list.add_argument("--nas", help="NAS name")
    cdr_list.add_argument("--call-id", help="call id (h323-conf-id / SIP Call-ID): all legs of one call")
    cdr_list.add_argument("--since", help="disconnect time from (ISO-8601; UTC if no offset)")
    cdr_list.add_argument("--until", help="disconnect time before (ISO-8601; UTC if no offset)")
    cdr_list.add_argument("--limit", default="100", help="at most this many rows (default 100)")
    cdr_list.set_defaults(func=cdr_list_command)


def _open(args):
    from radiusd.cli_output import open_store_from_args

    settings = settings_from_args(args)
    return open_store_from_args(args, create=settings.database_url.startswith("sqlite"))


def _owned_by(session, stmt, model, args):
    """Narrow a calls/CDR query to the --account, --client and --nas given by name."""
    for option, owner, column in (("account", Account, model.account_id), ("client", Client, model.client_id),
                                  ("nas", Nas, model.nas_id)):
        owner_id = _lookup(session, owner, getattr(args, option), option)
        if owner_id is not None:
            stmt = stmt.where(column == owner_id)
    return stmt


def _lookup(session, model, name: str | None, field: str) -> int | None:
    if name is None:
        return None
    found = session.scalar(select(model.id).where(model.name == name))
    if found is None:
        raise UserError(f"{field}: no such {field} {name!r}")
    return found


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


def _named(stmt_model):
    acc, cli, nas = aliased(Account), aliased(Client), aliased(Nas)
    stmt = (
        select(stmt_model, nas.name, acc.name, cli.name)
        .outerjoin(nas, nas.id == stmt_model.nas_id)
        .outerjoin(acc, acc.id == stmt_model.account_id)
        .outerjoin(cli, cli.id == stmt_model.client_id)
    )
    return stmt


def _row(obj, columns, nas_name, account_name, client_name) -> dict:
    out = {}
    for column in columns:
        if column == "nas":
            out[column] = nas_name
        elif column == "account":
            out[column] = account_name
        elif column == "client":
            out[column] = client_name
        else:
            out[column] = getattr(obj, column)
    return out


def calls_list(args) -> int:
    _settings, engine, sessions = _open(args)
    try:
        with sessions() as session:
            stmt = _named(ActiveCall).order_by(ActiveCall.id)
            stmt = _owned_by(session, stmt, ActiveCall, args)
            rows = [_row(call, CALL_COLUMNS, n, a, c) for call, n, a, c in session.execute(stmt).all()]
    finally:
        engine.dispose()
    emit(rows, getattr(args, "json", False), CALL_COLUMNS)
    return 0


def calls_remove(args) -> int:
    from radiusd.store.accounting import remove_call

    try:
        call_id = int(args.id)
    except ValueError:
        raise UserError(f"id: not a call id: {args.id!r}") from None
    _settings, engine, sessions = _open(args)
    now = dt.datetime.now(dt.timezone.utc)
    try:
        with sessions() as session, session.begin():
            removed = remove_call(session, call_id, now)
            if removed is None:
                raise UserError(f"id: no open call {call_id}")
            row, result = removed
            before = {"state": row.state, "leg": row.leg, "call_id": row.call_id, "leg_key": row.leg_key,
                      "account_id": row.account_id, "client_id": row.client_id}
            audit.record(session, object_type="call", object_id=call_id, object_name=before["call_id"][:200],
                         action="remove", actor=actor_from_args(args), context="cli",
                         changes={k: [v, None] for k, v in before.items()})
    finally:
        engine.dispose()
    emit(result, getattr(args, "json", False))
    return 0


def cdr_list_command(args) -> int:
    try:
        limit = int(args.limit)
        if limit <= 0:
            raise ValueError
    except ValueError:
        raise UserError(f"limit: expected a positive whole number, got {args.limit!r}") from None
    since, until = _time(args.since, "since"), _time(args.until, "until")
    _settings, engine, sessions = _open(args)
    try:
        with sessions() as session:
            stmt = _named(Cdr).order_by(Cdr.disconnect_time.desc(), Cdr.id.desc()).limit(limit)
            stmt = _owned_by(session, stmt, Cdr, args)
            if args.call_id:
                stmt = stmt.where(Cdr.call_id == args.call_id)
            if since is not None:
                stmt = stmt.where(Cdr.disconnect_time >= since)
            if until is not None:
                stmt = stmt.where(Cdr.disconnect_time < until)
            columns = CDR_COLUMNS if not getattr(args, "json", False) else CDR_COLUMNS + [
                "leg_key", "acct_session_id", "tech_prefix", "remote_address", "setup_time", "rate_table_id"]
            rows = [_row(cdr, columns, n, a, c) for cdr, n, a, c in session.execute(stmt).all()]
    finally:
        engine.dispose()
    emit(rows, getattr(args, "json", False), columns)
    return 0
