"""`radiusd` command line: a thin shell over the admin module, the server and the tools.

Each area registers its own subcommands (see COMMAND_MODULES; the handlers live in
radiusd/commands/); every command gets
the parsed arguments and returns an exit code. Errors a user can fix are `UserError`: one line naming the
field and value, exit code 2, nothing written.
"""
from __future__ import annotations

import argparse
import os
import sys

from radiusd.commands import admin as commands_admin
from radiusd.commands import bench as commands_bench
from radiusd.commands import calls as commands_calls
from radiusd.commands import secrets as commands_secrets
from radiusd.commands import serve as commands_serve
from radiusd.config import ConfigError
from radiusd.web import commands as commands_web
from radiusd.errors import UserError

# each defines register(subparsers) adding commands with set_defaults(func=...); a module that
# cannot be imported is an error at start, never a command silently missing
COMMAND_MODULES = (
    commands_admin,      # db, seed, client, account, nas, rates, routing, audit
    commands_serve,      # serve, demo
    commands_calls,      # calls, cdr
    commands_secrets,    # secrets status|rotate|seal-existing
    commands_bench,      # bench
    commands_web,        # web (+ web user, web token)
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="radiusd", description="RADIUS authorization and accounting for VoIP carriers")
    parser.add_argument("--config", help="TOML settings file (default: $RADIUSD_CONFIG)")
    parser.add_argument("--database-url", help="store URL (default: $DATABASE_URL or sqlite:///radiusd.sqlite3)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--actor", default=None, help="who makes admin changes (default: $USER)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (UserError, ConfigError) as exc:
        print(f"radiusd: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # output piped into `head` and the like: not an error; keep Python quiet at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # never a traceback to the user unless asked for
        if os.environ.get("RADIUSD_DEBUG"):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"radiusd: internal error: {exc.__class__.__name__}: {first} "
              "(set RADIUSD_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
