"""How the CLI shows results: a readable table by default, JSON with --json."""
from __future__ import annotations

import json
import sys
from contextlib import contextmanager

from radiusd.db import safe_url  # noqa: F401  (one definition, shared with the edge)
from radiusd.errors import UserError  # noqa: F401  (the CLI catches it)
from radiusd.plain import plain


def emit(rows: list[dict] | dict, as_json: bool, columns: list[str] | None = None, out=None) -> None:
    """Print one record (dict) or a list of records as a table or as JSON."""
    out = out or sys.stdout
    if as_json:
        json.dump(plain(rows), out, indent=2, sort_keys=False)
        out.write("\n")
        return
    if isinstance(rows, dict):
        width = max((len(k) for k in rows), default=0)
        for key, value in rows.items():
            out.write(f"{key:<{width}}  {_cell(plain(value, key))}\n")
        return
    if not rows:
        out.write("(none)\n")
        return
    columns = columns or list(rows[0].keys())
    cells = [[_cell(plain(r.get(c), c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    out.write("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip() + "\n")
    for row in cells:
        out.write("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() + "\n")


def emit_page(rows: list[dict], total: int, as_json: bool, columns: list[str] | None = None, out=None,
              err=None) -> None:
    """A list cut at --limit: JSON `{"total": M, "rows": [...]}`; a table, and when rows are left
    out, a line on stderr saying so (stdout stays the rows alone, fit for a pipe)."""
    if as_json:
        emit({"total": total, "rows": rows}, True, out=out)
    else:
        emit(rows, False, columns, out=out)
    if len(rows) < total:
        print(f"showing {len(rows)} of {total}; use --limit {total} to see them all", file=err or sys.stderr)


def _cell(value) -> str:
    value = plain(value)
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ";".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def common_options():
    """Options every subcommand accepts after its name too (`radiusd account list --json`)."""
    import argparse

    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    parent.add_argument("--database-url", default=argparse.SUPPRESS, help="store URL")
    parent.add_argument("--config", default=argparse.SUPPRESS, help="TOML settings file")
    parent.add_argument("--actor", default=argparse.SUPPRESS, help="who makes admin changes")
    return parent


def settings_from_args(args):
    from radiusd.config import load_settings

    return load_settings(getattr(args, "config", None), database_url=getattr(args, "database_url", None))


def actor_from_args(args) -> str:
    import getpass

    if getattr(args, "actor", None):
        return args.actor
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def first_line(exc: Exception) -> str:
    """The first line of a (database) error, for a one-line CLI message."""
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return lines[0] if lines else exc.__class__.__name__


def open_store_from_args(args, create: bool = False):
    """(settings, engine, sessions) for a command; an unreachable or missing store is a UserError.

    Only `db init` (and the demo) create a store: every other command wants one that exists.
    Commands use `store_from_args`, which also closes the store and words errors.
    """
    from sqlalchemy.exc import DBAPIError

    from radiusd.db import open_store
    from radiusd.store.sealing import attach_key_file

    settings = settings_from_args(args)
    try:
        engine, sessions = open_store(settings.database_url, create=create)
        attach_key_file(sessions, settings.secrets_key_file, settings.database_url)
    except DBAPIError as exc:
        raise UserError(f"database_url: cannot open the store: {first_line(exc)} "
                        f"({safe_url(settings.database_url)})") from None
    return settings, engine, sessions


@contextmanager
def store_from_args(args, create: bool = False):
    """The one way a command opens the store: `with store_from_args(args) as (settings, engine,
    sessions): ...`. Never creates a store (only `db init` and the demo do); disposes the engine at the end;
    a change the store refuses (a concurrent change won a race past our checks) or a store gone
    mid-command is a UserError naming the store, not a traceback."""
    from sqlalchemy.exc import IntegrityError, OperationalError

    settings, engine, sessions = open_store_from_args(args, create=create)
    try:
        yield settings, engine, sessions
    except IntegrityError as exc:
        raise UserError(f"store: change refused: {first_line(exc)}") from None
    except OperationalError as exc:
        raise UserError(f"store: {first_line(exc)} ({safe_url(settings.database_url)})") from None
    finally:
        engine.dispose()
