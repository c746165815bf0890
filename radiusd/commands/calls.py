"""`radiusd calls list|remove` and `radiusd cdr list`: open calls and finished call legs.

The rules (filters, ending a call) live in radiusd.admin.calls, shared with the web pages and the API."""
from __future__ import annotations

from radiusd.admin import calls
from radiusd.admin.calls import CALL_COLUMNS, CDR_COLUMNS, CDR_DETAIL_COLUMNS
from radiusd.cli_output import actor_from_args, common_options, emit, emit_page, store_from_args


def register(subparsers) -> None:
    common = common_options()
    calls = subparsers.add_parser("calls", help="calls in progress and capacity reservations")
    calls_sub = calls.add_subparsers(dest="calls_command", metavar="ACTION", required=True)
    listing = calls_sub.add_parser("list", parents=[common], help="list open calls and reservations")
    _owner_filters(listing)
    listing.set_defaults(func=calls_list)
    remove = calls_sub.add_parser("remove", parents=[common],
                                  help="end one call by hand: writes its CDR as if stopped now (audited)")
    remove.add_argument("id", help="call id as shown by `calls list` (the ID column)")
    remove.set_defaults(func=calls_remove)

    cdr = subparsers.add_parser("cdr", help="call detail records")
    cdr_sub = cdr.add_subparsers(dest="cdr_command", metavar="ACTION", required=True)
    cdr_list = cdr_sub.add_parser("list", parents=[common], help="list CDRs, newest first")
    _owner_filters(cdr_list)
    cdr_list.add_argument("--call-id", help="call id (h323-conf-id / SIP Call-ID): all legs of one call; "
                          "the first word of an h323-conf-id is enough (3D3C5E4A)")
    cdr_list.add_argument("--since", help="disconnect time from (ISO-8601; UTC if no offset)")
    cdr_list.add_argument("--until", help="disconnect time before (ISO-8601; UTC if no offset)")
    cdr_list.add_argument("--flagged", metavar="yes|no", help="only CDRs the accounting sanity checks flagged "
                          "(times or durations not billed as the switch sent them), or only clean ones")
    cdr_list.add_argument("--limit", default="100", help="at most this many rows, the newest (default 100)")
    cdr_list.set_defaults(func=cdr_list_command)


def _owner_filters(parser) -> None:
    parser.add_argument("--account", help="account name")
    parser.add_argument("--client", help="client name")
    parser.add_argument("--nas", help="NAS name")


def _json(args) -> bool:
    return bool(getattr(args, "json", False))


def calls_list(args) -> int:
    with store_from_args(args) as (_settings, _engine, sessions), sessions() as session:
        rows = calls.call_page(session, account=args.account, client=args.client, nas=args.nas,
                               with_total=False)["rows"]
    emit(rows, _json(args), CALL_COLUMNS)
    return 0


def calls_remove(args) -> int:
    with store_from_args(args) as (_settings, _engine, sessions), sessions.begin() as session:
        result = calls.end_call(session, args.id, actor=actor_from_args(args), context="cli")
    emit(result, _json(args))
    return 0


def cdr_list_command(args) -> int:
    with store_from_args(args) as (_settings, _engine, sessions), sessions() as session:
        page = calls.cdr_page(session, account=args.account, client=args.client, nas=args.nas,
                              call_id=args.call_id, since=args.since, until=args.until, flagged=args.flagged,
                              limit=args.limit,
                              detail=_json(args))
    emit_page(page["rows"], page["total"], _json(args), CDR_DETAIL_COLUMNS if _json(args) else CDR_COLUMNS)
    return 0
