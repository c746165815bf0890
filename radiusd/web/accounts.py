"""The Accounts section: the table (sorted and paged in SQL), quick and advanced search, the
New/Edit form in three blocks (General, Originator, Terminator), deactivate, and delete behind a
confirmation that says how many CDRs go and how much is refunded."""
from __future__ import annotations

from fastapi import Depends, Request

from radiusd.admin import accounts, clients, nas, rates, routing
from radiusd.errors import UserError
from radiusd.models import IDENT_BY, PROTOCOLS
from radiusd.web.common import (
    CONTEXT, errors_of, form_of, page_router, read, redirect, render, tx, user,
)

router = page_router()
PAGE_SIZE = 50
FILTERS = ("client", "name", "ip", "ani", "tech_prefix", "tag", "rate_table", "status", "gateway", "routing_plan",
           "ident_by")
TEXT_FIELDS = ("client", "name", "ident_by", "ips", "tech_prefix", "ani", "notes", "orig_rate_table",
               "orig_routing_plan", "orig_tag", "orig_capacity", "term_rate_table", "term_tag", "term_capacity",
               "term_protocol", "term_proxy", "term_port")
CHECKBOXES = ("active", "orig_enabled", "term_enabled")


def _choices(session) -> dict:
    return {
        "clients": clients.client_names(session),
        "rate_tables": [t["name"] for t in rates.list_rate_tables(session)],
        "routing_plans": [p["name"] for p in routing.list_routing_plans(session)],
        "nas_list": [n["name"] for n in nas.list_nas(session)],
        "ident_choices": IDENT_BY,
        "protocols": PROTOCOLS,
    }


def identity(record: dict) -> str:
    """The Name/ANI/IP column: how the account is recognised."""
    if record["ident_by"] == "ip":
        return "; ".join(record["ips"])
    if record["ident_by"] == "name":
        return record["name"]
    return record["ani"] or ""


@router.get("/accounts")
def account_list(request: Request):
    params = dict(request.query_params)
    filters = {k: params.get(k, "") for k in FILTERS}
    keyword = params.get("q", "")
    sort = params.get("sort", "id")
    descending = params.get("dir") == "desc"
    try:
        page = max(1, int(params.get("page", "1")))
    except ValueError:
        page = 1
    error = None
    with read(request) as session:
        choices = _choices(session)
        try:
            result = accounts.account_page(
                session, sort=sort, descending=descending, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE,
                keyword=keyword or None, **{k: (v or None) for k, v in filters.items()})
        except UserError as exc:
            error = str(exc)
            result = {"total": 0, "offset": 0, "limit": PAGE_SIZE, "rows": []}
    for row in result["rows"]:
        row["identity"] = identity(row)
    advanced = any(filters[k] for k in FILTERS if k != "client")
    return render(request, "accounts.html", result=result, filters=filters, keyword=keyword, sort=sort,
                  descending=descending, page=page, page_size=PAGE_SIZE, error=error, advanced=advanced,
                  params={k: v for k, v in params.items() if k != "page"}, **choices)


def _form_values(form, *, creating: bool) -> dict:
    values = {}
    for name in TEXT_FIELDS:
        if name in form:
            value = form.get(name)
            values[name] = value if isinstance(value, str) else ""
    for name in CHECKBOXES:
        values[name] = "yes" if form.get(name) else "no"
    values["gateways"] = [g for g in form.getlist("gateways") if isinstance(g, str) and g]
    password = form.get("password")
    if isinstance(password, str) and password != "":
        values["password"] = password
    if creating:
        values.setdefault("term_enabled", "no")
    return values


def _render_form(request: Request, session, *, record: dict, errors: dict, account_id=None, status_code=200):
    return render(request, "account_form.html", status_code=status_code, record=record, errors=errors,
                  account_id=account_id, **_choices(session))


_EMPTY = {"client": "", "name": "", "ident_by": "ip", "ips": [], "tech_prefix": "", "ani": "", "gateways": [],
          "notes": "", "active": True, "orig_enabled": True, "orig_rate_table": None, "orig_routing_plan": None,
          "orig_tag": "", "orig_capacity": None, "term_enabled": False, "term_rate_table": None, "term_tag": "",
          "term_capacity": None, "term_protocol": None, "term_proxy": None, "term_port": None, "password": None}


def _echo(values: dict, base: dict) -> dict:
    """The form as the user filled it in, to show again next to the errors (never the password)."""
    record = dict(base)
    for key, value in values.items():
        if key == "password":
            continue
        if key in CHECKBOXES:
            record[key] = value == "yes"
        elif key == "ips":
            record[key] = [value] if value else []
        else:
            record[key] = value
    return record


@router.get("/accounts/new")
def account_new(request: Request, client: str = ""):
    with read(request) as session:
        return _render_form(request, session, record=dict(_EMPTY, client=client), errors={})


@router.post("/accounts/new")
def account_create(request: Request, form=Depends(form_of)):
    values = _form_values(form, creating=True)
    try:
        with tx(request) as session:
            record = accounts.create_account(session, actor=user(request), context=CONTEXT, **values)
    except UserError as exc:
        with read(request) as session:
            return _render_form(request, session, record=_echo(values, _EMPTY), errors=errors_of(exc),
                                status_code=422)
    return redirect(f"/accounts/{record['id']}", msg=f"Account {record['name']} created.")


@router.get("/accounts/{account_id}")
def account_edit(request: Request, account_id: int):
    with read(request) as session:
        try:
            record = accounts.show_account(session, account_id)
        except UserError as exc:
            return render(request, "refused.html", status_code=404, message=str(exc))
        return _render_form(request, session, record=record, errors={}, account_id=account_id)


@router.post("/accounts/{account_id}")
def account_update(request: Request, account_id: int, form=Depends(form_of)):
    values = _form_values(form, creating=False)
    try:
        with tx(request) as session:
            record = accounts.update_account(session, account_id, actor=user(request), context=CONTEXT, **values)
    except UserError as exc:
        with read(request) as session:
            try:
                base = accounts.show_account(session, account_id)
            except UserError as missing:
                return render(request, "refused.html", status_code=404, message=str(missing))
            return _render_form(request, session, record=_echo(values, base), errors=errors_of(exc),
                                account_id=account_id, status_code=422)
    return redirect(f"/accounts/{account_id}", msg=f"Account {record['name']} saved.")


@router.post("/accounts/{account_id}/deactivate")
def account_deactivate(request: Request, account_id: int):
    try:
        with tx(request) as session:
            record = accounts.deactivate_account(session, account_id, actor=user(request), context=CONTEXT)
    except UserError as exc:
        return redirect("/accounts", msg=str(exc))
    return redirect(f"/accounts/{account_id}",
                    msg=f"Account {record['name']} deactivated: originator and terminator are off.")


@router.get("/accounts/{account_id}/delete")
def account_delete_confirm(request: Request, account_id: int):
    with read(request) as session:
        try:
            preview = accounts.delete_preview(session, account_id)
        except UserError as exc:
            return render(request, "refused.html", status_code=404, message=str(exc))
    return render(request, "account_delete.html", preview=preview, result=None)


@router.post("/accounts/{account_id}/delete")
def account_delete(request: Request, account_id: int):
    try:
        with tx(request) as session:
            result = accounts.delete_account(session, account_id, actor=user(request), context=CONTEXT)
    except UserError as exc:
        return render(request, "refused.html", status_code=404, message=str(exc))
    return render(request, "account_delete.html", preview=None, result=result)
