"""The JSON API under /api/v1: provisioning from the carrier's CRM and billing.

Every request carries `Authorization: Bearer <token>` (`radiusd web token add`); the token acts as
its web user with that user's role: `viewer` may only GET, `admin` may also change things. Each
change goes through the same admin functions as the CLI and the web pages (same checks, same
audit log, context `api`, the token's user as actor) in one transaction: a refused request
writes nothing.

Answers are JSON. Money is a string ("12.50"), never a float. Lists are pages:
`{"items": [...], "total": N, "offset": O, "limit": L}` (`?limit=` up to 1000, `?offset=`).
Errors are `{"error": {"field": "ips", "message": "ips: not an IP address or CIDR (10.1.2)"}}`
with 400 (bad input), 401 (no or bad token), 403 (viewer role), 404 (no such object),
409 (a name or address already used, or a concurrent change won), 413 (body too large) or 503
(store unavailable). NAS secrets and account passwords are never returned ("***" says one is set).

The application that includes `router` sets `app.state.sessions` (a SQLAlchemy sessionmaker).
"""
from __future__ import annotations

import json
import re
from decimal import Decimal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from sqlalchemy.exc import IntegrityError, OperationalError
from starlette.concurrency import run_in_threadpool

from radiusd.admin import accounts, calls, clients, nas, rates, routing, users
from radiusd.admin import fields as F
from radiusd.admin.refs import find
from radiusd.cli_output import first_line, plain
from radiusd.errors import Conflict, UserError
from radiusd.logging_setup import get_logger
from radiusd.models import Account, Client, Nas, RateTable, RoutingPlan

log = get_logger()

CONTEXT = "api"
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_JSON_BODY = 1 << 20          # an object of admin fields is a few kB
MAX_CSV_BODY = 64 << 20          # a carrier's full rate deck: some 100,000s of lines
ACCOUNT_FILTERS = accounts.SEARCH_FILTERS

# Declares the bearer scheme in the OpenAPI document; the check itself is in _call (auto_error
# off), so that every refusal is answered in the API's own error format.
_bearer = HTTPBearer(auto_error=False, scheme_name="token",
                     description="An API token from `radiusd web token add USER` (shown once).")
router = APIRouter(prefix="/api/v1", tags=["api"], dependencies=[Depends(_bearer)])


class ApiError(Exception):
    def __init__(self, status: int, field: str | None, message: str):
        super().__init__(message)
        self.status, self.field, self.message = status, field, message


_FIELD_RE = re.compile(r"^([a-z_]+): ")


def _error(status: int, field: str | None, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": {"field": field, "message": message}}, status_code=status, headers=headers)


def _field_of(exc: UserError) -> str | None:
    field = getattr(exc, "field", None)
    if field:
        return field
    match = _FIELD_RE.match(str(exc))
    return match.group(1) if match else None


def _token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()


def _run(request: Request, role: str, work):
    """Authenticate, check the role, run work(session, user) in one transaction."""
    token = _token(request)
    if token is None:
        raise ApiError(401, "authorization", "a bearer token is required (Authorization: Bearer <token>)")
    with request.app.state.sessions.begin() as session:
        user = users.user_for_token(session, token)
        if user is None:
            raise ApiError(401, "authorization", "the token is unknown, revoked, or its user is deactivated")
        if role == "admin" and not user.is_admin:
            raise ApiError(403, "authorization", f"{user.name} has the viewer role: read only")
        return work(session, user)


async def _call(request: Request, role: str, work, status: int = 200) -> JSONResponse:
    try:
        result = await run_in_threadpool(_run, request, role, work)
    except ApiError as exc:
        if exc.status in (401, 403):  # never the token itself: only where from and why
            log.warning("api.refused", status=exc.status, method=request.method, path=request.url.path,
                        address=request.client.host if request.client else None, reason=exc.message)
        return _error(exc.status, exc.field, exc.message)
    except Conflict as exc:  # a name, address or prefix another object already has
        return _error(409, _field_of(exc), str(exc))
    except UserError as exc:
        return _error(400, _field_of(exc), str(exc))
    except IntegrityError as exc:  # a concurrent change won a race past the checks
        return _error(409, None, f"change refused: {first_line(exc)}")
    except OperationalError as exc:
        return _error(503, "store", f"store unavailable: {first_line(exc)}")
    return JSONResponse(plain(result), status_code=status)


def _read(request: Request, work):
    return _call(request, "viewer", work)


def _change(request: Request, work, status: int = 200):
    return _call(request, "admin", work, status)


async def _raw_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) past `limit` bytes without reading the rest into memory."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "body", f"body: larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _body(request: Request, allowed: tuple[str, ...], what: str) -> dict:
    """The request's JSON object, its keys checked against the fields of `what`.

    Numbers with a fraction are read as Decimal (exact money: 12.5 stays 12.5, never 12.4999...).
    """
    raw = await _raw_body(request, MAX_JSON_BODY)
    try:
        body = json.loads(raw or b"{}", parse_float=Decimal)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "body", f"body: not valid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise ApiError(400, "body", "body: expected a JSON object")
    for key in body:
        if key not in allowed:
            raise ApiError(400, key, f"{key}: not a {what} field (expected some of {', '.join(allowed)})")
    return body


async def _change_body(request: Request, allowed: tuple[str, ...], what: str, work, status: int = 200):
    """A change whose input is a JSON object: work(session, user, body) for an admin token.

    The body is read first but judged after the token and the role: a caller without the right to
    change learns nothing about what the server would accept.
    """
    try:
        body, problem = await _body(request, allowed, what), None
    except ApiError as exc:
        body, problem = None, exc

    def guarded(session, user):
        if problem is not None:
            raise problem
        return work(session, user, body)
    return await _change(request, guarded, status)


def _page_args(request: Request) -> tuple[int, int]:
    q = request.query_params
    offset = F.integer("offset", q.get("offset") or 0, minimum=0)
    limit = F.integer("limit", q.get("limit") or DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT)
    return offset, limit


def _page(items: list, total: int, offset: int, limit: int) -> dict:
    return {"items": items, "total": total, "offset": offset, "limit": limit}


def _slice(request: Request, everything: list) -> dict:
    offset, limit = _page_args(request)
    return _page(everything[offset:offset + limit], len(everything), offset, limit)


def _filters(request: Request, names) -> dict:
    q = request.query_params
    unknown = [k for k in q if k not in names and k not in ("limit", "offset")]
    if unknown:
        raise F.fail(unknown[0], f"not a filter here (expected some of {', '.join(names)})", q[unknown[0]])
    return {name: q[name] for name in names if q.get(name) not in (None, "")}


def _locate(session, model, ref, field: str):
    """The object a path names, or 404 naming the field."""
    try:
        return find(session, model, ref, field)
    except UserError as exc:
        raise ApiError(404, field, str(exc)) from None


def _schema(fields: tuple[str, ...], required: tuple[str, ...] = (), doc: str = "") -> dict:
    """An OpenAPI request body: a JSON object of the given fields (checked by the admin module)."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "description": doc, "additionalProperties": False, "required": list(required),
        "properties": {f: {"description": f} for f in fields}}}}}}


# ---------------------------------------------------------------- who am I

@router.get("/me", summary="The user the token acts as, and its role")
async def me(request: Request):
    return await _read(request, lambda s, u: {"name": u.name, "role": u.role})


# ---------------------------------------------------------------- clients

CLIENT_CREATE = clients.CLIENT_FIELDS
CLIENT_UPDATE = clients.UPDATABLE
TOPUP_FIELDS = ("amount", "notes")


@router.get("/clients", summary="Clients (balance, credit limit, capacity, rate tables), paged")
async def list_clients(request: Request):
    return await _read(request, lambda s, u: _slice(request, clients.list_clients(s)))


@router.post("/clients", status_code=201, summary="Add a client",
             openapi_extra=_schema(CLIENT_CREATE, ("name",), "credit_limit null = unlimited; money as strings"))
async def create_client(request: Request):
    return await _change_body(
        request, CLIENT_CREATE, "client",
        lambda s, u, body: clients.create_client(s, actor=u.name, context=CONTEXT, **body), 201)


@router.get("/clients/{ref}", summary="One client by name or id, with its accounts")
async def show_client(request: Request, ref: str):
    return await _read(request, lambda s, u: clients.show_client(s, _locate(s, Client, ref, "client")))


@router.patch("/clients/{ref}", summary="Change a client's fields (not the balance: see topups)",
              openapi_extra=_schema(CLIENT_UPDATE))
async def update_client(request: Request, ref: str):
    def work(s, u, body):
        if "balance" in body:  # balances move only through top-ups and corrections, each audited as such
            raise F.fail("balance", "use POST /api/v1/clients/{ref}/topups to change a balance", body["balance"])
        return clients.update_client(s, _locate(s, Client, ref, "client"), actor=u.name, context=CONTEXT, **body)
    return await _change_body(request, CLIENT_UPDATE + ("balance",), "client", work)


@router.post("/clients/{ref}/topups", status_code=201, summary="Top up (or correct, if negative) a client's balance",
             openapi_extra=_schema(TOPUP_FIELDS, ("amount",), "amount as a string, e.g. \"25.00\""))
async def topup_client(request: Request, ref: str):
    def work(s, u, body):
        if "amount" not in body:
            raise F.fail("amount", "is required", "missing")
        return clients.adjust_balance(s, _locate(s, Client, ref, "client"), body["amount"], actor=u.name,
                                      context=CONTEXT, notes=body.get("notes") or "")
    return await _change_body(request, TOPUP_FIELDS, "top-up", work, 201)


# ---------------------------------------------------------------- accounts

ACCOUNT_SORTS = tuple(accounts.SORT_KEYS)


def _account_list(request: Request, session) -> dict:
    offset, limit = _page_args(request)
    filters = _filters(request, ACCOUNT_FILTERS + ("sort", "descending"))
    sort = filters.pop("sort", "id")
    descending = F.boolean("descending", filters.pop("descending", False))
    page = accounts.account_page(session, sort=sort, descending=descending, offset=offset, limit=limit, **filters)
    return _page(page["rows"], page["total"], page["offset"], page["limit"])


@router.get("/accounts", summary="Accounts, paged; filters as `account search` "
                                 f"({', '.join(ACCOUNT_FILTERS)}), sort ({', '.join(ACCOUNT_SORTS)}), descending")
async def list_accounts(request: Request):
    return await _read(request, lambda s, u: _account_list(request, s))


@router.post("/accounts", status_code=201, summary="Add an account",
             openapi_extra=_schema(accounts.ACCOUNT_FIELDS, ("client", "name", "ident_by"),
                                   "ips: a list or a ;-separated string of addresses/CIDRs; gateways: NAS names"))
async def create_account(request: Request):
    return await _change_body(
        request, accounts.ACCOUNT_FIELDS, "account",
        lambda s, u, body: accounts.create_account(s, actor=u.name, context=CONTEXT, **body), 201)


@router.get("/accounts/{ref}", summary="One account by name or id (the password as \"***\")")
async def show_account(request: Request, ref: str):
    return await _read(request, lambda s, u: accounts.show_account(s, _locate(s, Account, ref, "account")))


@router.patch("/accounts/{ref}", summary="Change an account's fields (ips and gateways replace the whole list)",
              openapi_extra=_schema(accounts.ACCOUNT_FIELDS))
async def update_account(request: Request, ref: str):
    return await _change_body(
        request, accounts.ACCOUNT_FIELDS, "account",
        lambda s, u, body: accounts.update_account(
            s, _locate(s, Account, ref, "account"), actor=u.name, context=CONTEXT, **body))


@router.post("/accounts/{ref}/deactivate", summary="Untick originator and terminator: no new calls either way")
async def deactivate_account(request: Request, ref: str):
    return await _change(request, lambda s, u: accounts.deactivate_account(
        s, _locate(s, Account, ref, "account"), actor=u.name, context=CONTEXT))


@router.get("/accounts/{ref}/delete-preview", summary="What deleting the account would remove and refund")
async def preview_account_delete(request: Request, ref: str):
    return await _read(request, lambda s, u: accounts.delete_preview(s, _locate(s, Account, ref, "account")))


@router.delete("/accounts/{ref}", summary="Delete an account with its CDRs and active calls; refund their cost")
async def delete_account(request: Request, ref: str):
    def work(session, user):
        _locate(session, Account, ref, "account")
        # by the same reference, so that delete_account finds it again with its row lock
        return accounts.delete_account(session, ref, actor=user.name, context=CONTEXT)
    return await _change(request, work)


# ---------------------------------------------------------------- NAS

@router.get("/nas", summary="NAS (switches and gateways), paged; secrets never shown")
async def list_nas(request: Request):
    return await _read(request, lambda s, u: _slice(request, nas.list_nas(s)))


@router.post("/nas", status_code=201, summary="Add a NAS",
             openapi_extra=_schema(nas.NAS_FIELDS, ("name", "address", "secret"),
                                   "address: IP or CIDR; secret is write-only"))
async def create_nas(request: Request):
    return await _change_body(
        request, nas.NAS_FIELDS, "NAS",
        lambda s, u, body: nas.create_nas(s, actor=u.name, context=CONTEXT, **body), 201)


@router.get("/nas/{ref}", summary="One NAS by name or id, with the accounts using it as a gateway")
async def show_nas(request: Request, ref: str):
    return await _read(request, lambda s, u: nas.show_nas(s, _locate(s, Nas, ref, "nas")))


@router.patch("/nas/{ref}", summary="Change a NAS's fields", openapi_extra=_schema(nas.NAS_FIELDS))
async def update_nas(request: Request, ref: str):
    return await _change_body(
        request, nas.NAS_FIELDS, "NAS",
        lambda s, u, body: nas.update_nas(
            s, _locate(s, Nas, ref, "nas"), actor=u.name, context=CONTEXT, **body))


@router.delete("/nas/{ref}", summary="Remove a NAS (refused while it is an account's only gateway)")
async def delete_nas(request: Request, ref: str):
    return await _change(request, lambda s, u: nas.delete_nas(
        s, _locate(s, Nas, ref, "nas"), actor=u.name, context=CONTEXT))


# ---------------------------------------------------------------- rate tables and rates

RATE_TABLE_FIELDS = ("name", "currency", "notes")


@router.get("/rate-tables", summary="Rate tables with their number of rates, paged")
async def list_rate_tables(request: Request):
    return await _read(request, lambda s, u: _slice(request, rates.list_rate_tables(s)))


@router.post("/rate-tables", status_code=201, summary="Add a rate table",
             openapi_extra=_schema(RATE_TABLE_FIELDS, ("name",)))
async def create_rate_table(request: Request):
    def work(s, u, body):
        if "name" not in body:
            raise F.fail("name", "is required", "missing")
        return rates.create_rate_table(s, actor=u.name, context=CONTEXT, **body)
    return await _change_body(request, RATE_TABLE_FIELDS, "rate table", work, 201)


def _rate_table(session, ref) -> dict:
    table = _locate(session, RateTable, ref, "rate_table")
    record = rates.show_rate_table(session, table)
    record.pop("rate_list", None)  # the rates are paged: GET .../rates
    return record


@router.get("/rate-tables/{ref}", summary="One rate table by name or id: rate count, clients using it")
async def show_rate_table(request: Request, ref: str):
    return await _read(request, lambda s, u: _rate_table(s, ref))


def _rate_list(request: Request, session, ref) -> dict:
    offset, limit = _page_args(request)
    filters = _filters(request, ("prefix",))
    page = rates.rate_page(session, _locate(session, RateTable, ref, "rate_table"), offset=offset, limit=limit,
                           **filters)
    return _page(page["rows"], page["total"], page["offset"], page["limit"])


@router.get("/rate-tables/{ref}/rates", summary="A rate table's rates by prefix, paged; ?prefix= keeps those "
                                               "starting with it")
async def list_rates(request: Request, ref: str):
    return await _read(request, lambda s, u: _rate_list(request, s, ref))


@router.post("/rate-tables/{ref}/rates", status_code=201, summary="Add one rate",
             openapi_extra=_schema(rates.CSV_COLUMNS, ("prefix", "price_per_minute"),
                                   "money as strings; dates ISO-8601 (a date alone = midnight UTC)"))
async def add_rate(request: Request, ref: str):
    return await _change_body(
        request, rates.CSV_COLUMNS, "rate",
        lambda s, u, body: rates.add_rate(
            s, _locate(s, RateTable, ref, "rate_table"), actor=u.name, context=CONTEXT, **body), 201)


@router.patch("/rate-tables/{ref}/rates/{rate_id}", summary="Change one rate (e.g. effective_until to end-date it)",
              openapi_extra=_schema(rates.CSV_COLUMNS))
async def update_rate(request: Request, ref: str, rate_id: str):
    return await _change_body(
        request, rates.CSV_COLUMNS, "rate",
        lambda s, u, body: rates.update_rate(
            s, _locate(s, RateTable, ref, "rate_table"), rate_id, actor=u.name, context=CONTEXT, **body))


@router.post("/rate-tables/{ref}/rates/import", summary="Import a CSV rate deck (all rows or none); ?replace=yes "
                                                       "drops the old rates first",
             openapi_extra={"requestBody": {"required": True, "content": {"text/csv": {"schema": {"type": "string"}}}}})
async def import_rates(request: Request, ref: str):
    try:
        raw, problem = await _raw_body(request, MAX_CSV_BODY), None
    except ApiError as exc:
        raw, problem = b"", exc

    def work(s, u):
        if problem is not None:
            raise problem
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise F.fail("body", "not UTF-8 text", exc.reason) from None
        replace = F.boolean("replace", request.query_params.get("replace") or "no")
        return rates.import_rates_text(s, _locate(s, RateTable, ref, "rate_table"), text, "body", actor=u.name,
                                       context=CONTEXT, replace=replace)
    return await _change(request, work)


# ---------------------------------------------------------------- routing plans

ROUTING_PLAN_FIELDS = ("name", "notes")
RULE_FIELDS = ("terminator", "prefix", "priority", "share")


@router.get("/routing-plans", summary="Routing plans with their number of rules, paged")
async def list_routing_plans(request: Request):
    return await _read(request, lambda s, u: _slice(request, routing.list_routing_plans(s)))


@router.post("/routing-plans", status_code=201, summary="Add a routing plan",
             openapi_extra=_schema(ROUTING_PLAN_FIELDS, ("name",)))
async def create_routing_plan(request: Request):
    def work(s, u, body):
        if "name" not in body:
            raise F.fail("name", "is required", "missing")
        return routing.create_routing_plan(s, actor=u.name, context=CONTEXT, **body)
    return await _change_body(request, ROUTING_PLAN_FIELDS, "routing plan", work, 201)


@router.get("/routing-plans/{ref}", summary="One routing plan by name or id, with its rules in order")
async def show_routing_plan(request: Request, ref: str):
    return await _read(request, lambda s, u: routing.show_routing_plan(
        s, _locate(s, RoutingPlan, ref, "routing_plan")))


@router.post("/routing-plans/{ref}/rules", status_code=201,
             summary="Add a rule: calls to prefix ('' = any) go to a terminator account",
             openapi_extra=_schema(RULE_FIELDS, ("terminator",)))
async def add_routing_rule(request: Request, ref: str):
    def work(s, u, body):
        if "terminator" not in body:
            raise F.fail("terminator", "is required", "missing")
        return routing.add_rule(s, _locate(s, RoutingPlan, ref, "routing_plan"), actor=u.name, context=CONTEXT,
                                **body)
    return await _change_body(request, RULE_FIELDS, "routing rule", work, 201)


# ---------------------------------------------------------------- calls and CDRs

CALL_FILTERS = ("account", "client", "nas")
CDR_FILTERS = ("account", "client", "nas", "call_id", "since", "until", "flagged")


def _call_list(request: Request, session) -> dict:
    offset, limit = _page_args(request)
    page = calls.call_page(session, offset=offset, limit=limit, **_filters(request, CALL_FILTERS))
    return _page(page["rows"], page["total"], page["offset"], page["limit"])


@router.get("/calls", summary="Calls in progress and capacity reservations, paged; filters account, client, nas")
async def list_calls(request: Request):
    return await _read(request, lambda s, u: _call_list(request, s))


@router.post("/calls/{call_id}/end", summary="End a call by hand: its CDR is written as if stopped now "
                                             "(a reservation is dropped)")
async def end_call(request: Request, call_id: str):
    def work(session, user):
        try:
            return calls.end_call(session, call_id, actor=user.name, context=CONTEXT)
        except calls.NoSuchCall as exc:
            raise ApiError(404, "id", str(exc)) from None
    return await _change(request, work)


def _cdr_list(request: Request, session) -> dict:
    offset, limit = _page_args(request)
    page = calls.cdr_page(session, offset=offset, limit=limit, detail=True, **_filters(request, CDR_FILTERS))
    return _page(page["rows"], page["total"], page["offset"], page["limit"])


@router.get("/cdrs", summary="CDRs newest first, paged; filters as `cdr list`: account, client, nas, call_id, "
                             "since (inclusive), until (exclusive)")
async def list_cdrs(request: Request):
    return await _read(request, lambda s, u: _cdr_list(request, s))
