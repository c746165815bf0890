"""What every page shares: the guard (login, CSRF, roles), templates, transactions, form errors.

Every page router is made with `page_router()`, whose dependency `guard` runs before each route:
a GET needs a logged-in user; a POST needs a logged-in user, the session's CSRF token and (except
logging out) the admin role. The rule lives here once, so a route cannot forget it.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import hmac
import re
import time
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy.exc import IntegrityError, OperationalError

from radiusd.admin import fields as F
from radiusd.admin import users
from radiusd.cli_output import first_line
from radiusd.errors import UserError
from radiusd.web.security import CSRF_FIELD, CSRF_HEADER

CONTEXT = "web"
HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=str(HERE / "templates"))

# POSTs any logged-in user may make (viewers included); every other POST needs the admin role
VIEWER_POSTS = frozenset({"/logout"})


class LoginRequired(Exception):
    """A page was asked for without a session: answered with a redirect to /login."""

    def __init__(self, next_url: str):
        self.next_url = next_url


class Refused(Exception):
    """A request the server refuses (403): no CSRF token, or a viewer trying to change something."""

    def __init__(self, message: str, status: int = 403):
        super().__init__(message)
        self.status = status


async def guard(request: Request) -> None:
    session = request.state.session
    if session.get("user"):
        # the role (or a deactivation) the admin set since login applies from the next request on
        role = await run_in_threadpool(_current_role, request, session["user"])
        if role is None:
            request.app.state.codec.end(session, time.time())
            request.state.session = session = request.app.state.codec.new(time.time())
        else:
            session["role"] = role
    if not session.get("user"):
        if request.method == "GET":
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise LoginRequired(target)
        raise Refused("not logged in")
    if request.method != "GET":
        await check_csrf(request)
        if request.url.path not in VIEWER_POSTS and session.get("role") != "admin":
            raise Refused(f"{session.get('user')} has the viewer role: read only")


def _current_role(request: Request, name: str) -> str | None:
    """The user's role now, or None when the user is gone or deactivated."""
    with request.app.state.sessions() as session:
        for record in users.list_users(session):
            if record["name"] == name:
                return record["role"] if record["active"] else None
    return None


# a rate deck's text comes back in the import's confirm step as one field: logged-in users may
# send fields that large (the API takes CSV decks up to the same size); anyone else 1 MiB
MAX_FIELD = 64 * 1024 * 1024
MAX_FIELD_ANONYMOUS = 1024 * 1024


async def check_csrf(request: Request) -> None:
    limit = MAX_FIELD if request.state.session.get("user") else MAX_FIELD_ANONYMOUS
    form = await request.form(max_part_size=limit)
    sent = form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER) or ""
    if not isinstance(sent, str) or not sent or not hmac.compare_digest(sent, request.state.session["csrf"]):
        raise Refused("CSRF token missing or wrong: reload the page and try again")


async def form_of(request: Request):
    """The POSTed form (already read and cached by the guard)."""
    return await request.form()


def page_router() -> APIRouter:
    return APIRouter(dependencies=[Depends(guard)], include_in_schema=False)


def user(request: Request) -> str:
    return request.state.session["user"]


def is_admin(request: Request) -> bool:
    return request.state.session.get("role") == "admin"


@contextlib.contextmanager
def tx(request: Request):
    """One transaction on the store; a race lost at the database is a UserError like any other."""
    sessions = request.app.state.sessions
    try:
        with sessions.begin() as session:
            yield session
    except IntegrityError as exc:
        raise UserError(f"store: change refused: {first_line(exc)}") from None
    except OperationalError as exc:
        raise UserError(f"store: {first_line(exc)}") from None


@contextlib.contextmanager
def read(request: Request):
    with request.app.state.sessions() as session:
        yield session


_FIELD_RE = re.compile(r"^([a-z_]+): ")


def error_field(exc: UserError) -> str:
    """The form field a UserError is about ("" = the form as a whole)."""
    field = getattr(exc, "field", None)
    if field:
        return field
    match = _FIELD_RE.match(str(exc))
    return match.group(1) if match else ""


def errors_of(exc: UserError) -> dict:
    return {error_field(exc) or "_form": str(exc)}


def render(request: Request, name: str, status_code: int = 200, **context):
    session = request.state.session
    context.update(request=request, me=session.get("user"), role=session.get("role"),
                   csrf_token=session.get("csrf"), csrf_field=CSRF_FIELD, admin=session.get("role") == "admin",
                   flash=request.query_params.get("msg"))
    return templates.TemplateResponse(request, name, context, status_code=status_code)


def redirect(url: str, **params) -> RedirectResponse:
    if params:
        url += ("&" if "?" in url else "?") + urlencode({k: v for k, v in params.items() if v is not None})
    return RedirectResponse(url, status_code=303)


def form_dict(form, names) -> dict:
    """The named fields of a form as text (a missing field is left out)."""
    out = {}
    for name in names:
        if name in form:
            value = form.get(name)
            out[name] = value if isinstance(value, str) else ""
    return out


def query_string(params: dict, **changes) -> str:
    merged = {k: v for k, v in params.items() if v not in (None, "")}
    merged.update({k: v for k, v in changes.items()})
    return urlencode({k: v for k, v in merged.items() if v not in (None, "")})


# ---------------------------------------------------------------- template filters

def _money(value) -> str:
    """An amount in the one format of every command (admin.fields.amount_text); None = no limit."""
    if value is None:
        return "unlimited"
    return F.amount_text(value)


def _rate(value) -> str:
    """A price per minute in the one format of every command (admin.fields.rate_text)."""
    return "–" if value is None else F.rate_text(value)


def _when(value) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def _cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return "; ".join(str(v) for v in value) or "–"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, Decimal):
        return F.amount_text(value)
    if isinstance(value, dt.datetime):
        return _when(value)
    return str(value)


templates.env.filters["money"] = _money
templates.env.filters["rate"] = _rate
templates.env.filters["when"] = _when
templates.env.filters["cell"] = _cell
templates.env.globals["query_string"] = query_string
