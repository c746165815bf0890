"""`radiusd calls list|remove` and `radiusd cdr list`: open calls and finished call legs."""
from __future__ import annotations

import datetime as dt

from radiusd.admin import calls
from radiusd.cli_output import actor_from_args, common_options, emit, store_from_args


def register(subparsers) -> None:
    common = common_options()
    group = subparsers.add_parser("calls", help="calls in progress and capacity reservations")
    calls_sub = group.add_subparsers(dest="calls_command", metavar="ACTION", required=True)
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


def _json(args) -> bool:
    return bool(getattr(args, "json", False))


def calls_list(args) -> int:
    with store_from_args(args) as (_settings, _engine, sessions), sessions() as session:
        rows = calls.list_calls(session, account=args.account, client=args.client, nas=args.nas)
    emit(rows, _json(args), calls.CALL_COLUMNS)
    return 0


def calls_remove(args) -> int:
    now = dt.datetime.now(dt.timezone.utc)
    with store_from_args(args) as (_settings, _engine, sessions), sessions.begin() as session:
        result = calls.remove_call(session, args.id, now, actor=actor_from_args(args), context="cli")
    emit(result, _json(args))
    return 0


def cdr_list_command(args) -> int:
    with store_from_args(args) as (_settings, _engine, sessions), sessions() as session:
        rows = calls.list_cdrs(session, account=args.account, client=args.client, nas=args.nas,
                               call_id=args.call_id, since=args.since, until=args.until, limit=args.limit,
                               detail=_json(args))
    emit(rows, _json(args), calls.CDR_DETAIL_COLUMNS if _json(args) else calls.CDR_COLUMNS)
    return 0
