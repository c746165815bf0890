"""`radiusd` command line: a thin shell over the admin module, the server and the tools.

Each area registers its own subcommands (see COMMAND_MODULES); every command gets the parsed
arguments and returns an exit code. Errors a user can fix are `UserError`: one line naming the
field and value, exit code 2, nothing written.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from radiusd.config import ConfigError
from radiusd.errors import UserError

# module path -> each defines register(subparsers) adding commands with set_defaults(func=...)
COMMAND_MODULES = (
    "radiusd.admin.commands",      # db, seed, client, account, nas, rates, routing, audit
    "radiusd.radius.commands",     # serve, demo
    "radiusd.store.commands",      # calls, cdr
    "radiusd.store.secrets_commands",  # secrets status|rotate|seal-existing
    "radiusd.bench.commands",      # bench
    "radiusd.web.commands",        # web (+ web user, web token)
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="radiusd", description="RADIUS authorization and accounting for VoIP carriers")
    parser.add_argument("--config", help="TOML settings file (default: $RADIUSD_CONFIG)")
    parser.add_argument("--database-url", help="store URL (default: $DATABASE_URL or sqlite:///radiusd.sqlite3)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--actor", default=None, help="who makes admin changes (default: $USER)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue  # area not built yet
            raise
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
