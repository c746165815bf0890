"""`radiusd web user add|passwd|set|list` and `radiusd web token add|list|revoke`.

Passwords are read from standard input (one line; asked twice on a terminal), never from the
command line where `ps` and the shell history would keep them. A token is printed once, when it
is issued: only its hash is stored.
"""
from __future__ import annotations

import getpass
import sys

from radiusd.admin import users
from radiusd.cli_output import UserError, actor_from_args, common_options, emit, store_from_args

CONTEXT = "cli"
USER_COLUMNS = ["id", "name", "role", "active", "created_at", "updated_at"]
TOKEN_COLUMNS = ["id", "user", "role", "label", "created_at", "last_used_at", "revoked_at"]


def add_arguments(subparsers) -> None:
    """Add the `user` and `token` command groups to the `web` command's subparsers."""
    user = subparsers.add_parser("user", help="users of the web admin and the API",
                                 description="users of the web admin and the API")
    user_sub = user.add_subparsers(dest="web_user_command", metavar="ACTION", required=True)
    p = user_sub.add_parser("add", parents=[common_options()],
                            help="add a user; the password is read from standard input")
    p.add_argument("name")
    p.add_argument("--role", default="viewer", help="admin (may change things) or viewer (read only; default)")
    p.set_defaults(func=user_add)
    p = user_sub.add_parser("passwd", parents=[common_options()],
                            help="set a user's password, read from standard input")
    p.add_argument("name")
    p.set_defaults(func=user_passwd)
    p = user_sub.add_parser("set", parents=[common_options()], help="change a user's role or (de)activate them")
    p.add_argument("name")
    p.add_argument("--role", help="admin or viewer")
    p.add_argument("--active", metavar="yes|no", help="no: the user cannot log in and their tokens are refused")
    p.set_defaults(func=user_set)
    p = user_sub.add_parser("list", parents=[common_options()], help="list users (never their password hashes)")
    p.set_defaults(func=user_list)

    token = subparsers.add_parser("token", help="bearer tokens of the JSON API",
                                  description="bearer tokens of the JSON API (each acts as its user, with the "
                                              "user's role)")
    token_sub = token.add_subparsers(dest="web_token_command", metavar="ACTION", required=True)
    p = token_sub.add_parser("add", parents=[common_options()],
                             help="issue a token for a user; it is printed once and cannot be shown again")
    p.add_argument("user")
    p.add_argument("--label", default="", help="what the token is for, e.g. crm")
    p.set_defaults(func=token_add)
    p = token_sub.add_parser("list", parents=[common_options()], help="list tokens (never the tokens themselves)")
    p.add_argument("--user", help="only this user's tokens")
    p.set_defaults(func=token_list)
    p = token_sub.add_parser("revoke", parents=[common_options()], help="revoke a token by its id")
    p.add_argument("id", help="the token's id as shown by `web token list`")
    p.set_defaults(func=token_revoke)


def _in_transaction(args, work):
    with store_from_args(args) as (_settings, _engine, sessions), sessions.begin() as session:
        return work(session)


def read_password(stdin=None) -> str:
    """The new password: asked twice on a terminal, else the first line of standard input."""
    stdin = stdin or sys.stdin
    if stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise UserError("password: the two entries differ (value hidden)", field="password")
        return first
    line = stdin.readline()
    if not line:
        raise UserError("password: nothing on standard input (give it as one line, e.g. from a file or a pipe)",
                        field="password")
    return line.rstrip("\r\n")


def _json(args) -> bool:
    return bool(getattr(args, "json", False))


def user_add(args) -> int:
    password = read_password()
    record = _in_transaction(args, lambda s: users.add_user(s, args.name, password, args.role,
                                                            actor_from_args(args), CONTEXT))
    emit(record, _json(args))
    return 0


def user_passwd(args) -> int:
    password = read_password()
    record = _in_transaction(args, lambda s: users.set_password(s, args.name, password, actor_from_args(args),
                                                                CONTEXT))
    if _json(args):
        emit(record, True)
    else:
        print(f"password changed for {record['name']}")
    return 0


def user_set(args) -> int:
    if args.role is None and args.active is None:
        raise UserError("role: give --role and/or --active", field="role")
    record = _in_transaction(args, lambda s: users.update_user(s, args.name, actor_from_args(args), CONTEXT,
                                                               role=args.role, active=args.active))
    emit(record, _json(args))
    return 0


def user_list(args) -> int:
    rows = _in_transaction(args, users.list_users)
    emit(rows, _json(args), USER_COLUMNS)
    return 0


def token_add(args) -> int:
    token = _in_transaction(args, lambda s: users.issue_token(s, args.user, args.label, actor_from_args(args),
                                                              CONTEXT))
    if _json(args):
        emit({"user": args.user, "label": args.label, "token": token}, True)
    else:
        print(token)
        print("(shown once: store it now; `radiusd web token list` shows its id, `revoke` ends it)", file=sys.stderr)
    return 0


def token_list(args) -> int:
    rows = _in_transaction(args, lambda s: users.list_tokens(s, args.user))
    emit(rows, _json(args), TOKEN_COLUMNS)
    return 0


def token_revoke(args) -> int:
    record = _in_transaction(args, lambda s: users.revoke_token(s, args.id, actor_from_args(args), CONTEXT))
    emit(record, _json(args))
    return 0
