"""The other daily screens: clients, NAS, rate tables, routing plans, active calls, CDRs, audit log.

Each page reads through the admin module and each form calls the same function as the CLI
command; a UserError becomes a message next to the field it names, and nothing is written.
"""
from __future__ import annotations

import csv
import io
import json

from fastapi import Depends, Request
from fastapi.responses import StreamingResponse

from radiusd.admin import accounts, audit, calls, clients, nas, rates, routing
from radiusd.cli_output import plain
from radiusd.core.message_authenticator import DEFAULT_POLICY as MA_DEFAULT_POLICY
from radiusd.core.message_authenticator import POLICIES as MA_POLICIES
from radiusd.errors import UserError
from radiusd.models import CALLER_ADDRESS_SOURCES, DIALECTS
from radiusd.web.common import (
    CONTEXT, errors_of, form_dict, form_of, page_router, read, redirect, render, tx, user,
)

router = page_router()
PAGE_SIZE = 50


def _page_number(request: Request) -> int:
    try:
        return max(1, int(request.query_params.get("page", "1")))
    except ValueError:
        return 1


def _not_found(request: Request, exc: UserError):
    return render(request, "refused.html", status_code=404, message=str(exc))


# ---------------------------------------------------------------- clients

CLIENT_FORM = ("name", "credit_limit", "currency", "orig_rate_table", "term_rate_table", "routing_plan", "capacity",
               "notes")


def _client_choices(session) -> dict:
    return {"rate_tables": [t["name"] for t in rates.list_rate_tables(session)],
            "routing_plans": [p["name"] for p in routing.list_routing_plans(session)]}


def _client_values(form, *, creating: bool) -> dict:
    values = form_dict(form, CLIENT_FORM + (("balance",) if creating else ()))
    values["active"] = "yes" if form.get("active") else "no"
    if creating and not values.get("balance"):
        values.pop("balance", None)
    return values


@router.get("/clients")
def client_list(request: Request):
    with read(request) as session:
        rows = clients.list_clients(session)
    return render(request, "clients.html", rows=rows)


@router.get("/clients/new")
def client_new(request: Request):
    with read(request) as session:
        return render(request, "client_form.html", record={"active": True, "currency": "USD", "credit_limit": "0"},
                      errors={}, client_id=None, **_client_choices(session))


@router.post("/clients/new")
def client_create(request: Request, form=Depends(form_of)):
    values = _client_values(form, creating=True)
    try:
        with tx(request) as session:
            record = clients.create_client(session, actor=user(request), context=CONTEXT, **values)
    except UserError as exc:
        with read(request) as session:
            return render(request, "client_form.html", status_code=422, client_id=None, errors=errors_of(exc),
                          record=dict(values, active=values["active"] == "yes"), **_client_choices(session))
    return redirect(f"/clients/{record['id']}", msg=f"Client {record['name']} created.")


@router.get("/clients/{client_id}")
def client_show(request: Request, client_id: int):
    with read(request) as session:
        try:
            record = clients.show_client(session, client_id)
        except UserError as exc:
            return _not_found(request, exc)
        page = accounts.account_page(session, client=client_id, limit=200)
        return render(request, "client_show.html", record=record, account_rows=page["rows"],
                      account_total=page["total"], errors={}, **_client_choices(session))


@router.post("/clients/{client_id}")
def client_update(request: Request, client_id: int, form=Depends(form_of)):
    values = _client_values(form, creating=False)
    try:
        with tx(request) as session:
            record = clients.update_client(session, client_id, actor=user(request), context=CONTEXT, **values)
    except UserError as exc:
        with read(request) as session:
            try:
                base = clients.show_client(session, client_id)
            except UserError as missing:
                return _not_found(request, missing)
            page = accounts.account_page(session, client=client_id, limit=200)
            return render(request, "client_show.html", status_code=422, errors=errors_of(exc),
                          record=dict(base, **values, active=values["active"] == "yes"),
                          account_rows=page["rows"], account_total=page["total"], **_client_choices(session))
    return redirect(f"/clients/{client_id}", msg=f"Client {record['name']} saved.")


@router.post("/clients/{client_id}/topup")
def client_topup(request: Request, client_id: int, form=Depends(form_of)):
    amount = form.get("amount") or ""
    notes = form.get("notes") or ""
    try:
        with tx(request) as session:
            result = clients.adjust_balance(session, client_id, amount, actor=user(request), context=CONTEXT,
                                            notes=notes)
    except UserError as exc:
        with read(request) as session:
            try:
                base = clients.show_client(session, client_id)
            except UserError as missing:
                return _not_found(request, missing)
            page = accounts.account_page(session, client=client_id, limit=200)
            return render(request, "client_show.html", status_code=422, errors=errors_of(exc), record=base,
                          topup={"amount": amount, "notes": notes}, account_rows=page["rows"],
                          account_total=page["total"], **_client_choices(session))
    return redirect(f"/clients/{client_id}",
                    msg=f"Balance {result['balance_before']} → {result['balance']} {result['currency']}.")


# ---------------------------------------------------------------- NAS

NAS_FORM = ("name", "address", "dialect", "caller_address_source", "message_authenticator", "notes")


def _nas_values(form) -> dict:
    values = form_dict(form, NAS_FORM)
    values["active"] = "yes" if form.get("active") else "no"
    secret = form.get("secret")
    if isinstance(secret, str) and secret != "":  # write-only: empty keeps the current secret
        values["secret"] = secret
    return values


def _nas_form(request, *, record, errors, nas_id, status_code=200):
    return render(request, "nas_form.html", status_code=status_code, record=record, errors=errors, nas_id=nas_id,
                  dialects=DIALECTS, sources=CALLER_ADDRESS_SOURCES, ma_policies=MA_POLICIES)


@router.get("/nas")
def nas_list(request: Request):
    with read(request) as session:
        rows = nas.list_nas(session)
    return render(request, "nas.html", rows=rows)


@router.get("/nas/new")
def nas_new(request: Request):
    return _nas_form(request, record={"message_authenticator": MA_DEFAULT_POLICY, "active": True, "dialect": "cisco",
                                      "caller_address_source": "h323-remote-address"}, errors={}, nas_id=None)


@router.post("/nas/new")
def nas_create(request: Request, form=Depends(form_of)):
    values = _nas_values(form)
    try:
        with tx(request) as session:
            record = nas.create_nas(session, actor=user(request), context=CONTEXT, **values)
    except UserError as exc:
        shown = {k: v for k, v in values.items() if k != "secret"}
        shown["active"] = values["active"] == "yes"
        return _nas_form(request, record=shown, errors=errors_of(exc), nas_id=None, status_code=422)
    return redirect("/nas", msg=f"NAS {record['name']} created.")


@router.get("/nas/{nas_id}")
def nas_edit(request: Request, nas_id: int):
    with read(request) as session:
        try:
            record = nas.show_nas(session, nas_id)
        except UserError as exc:
            return _not_found(request, exc)
    return _nas_form(request, record=record, errors={}, nas_id=nas_id)


@router.post("/nas/{nas_id}")
def nas_update(request: Request, nas_id: int, form=Depends(form_of)):
    values = _nas_values(form)
    try:
        with tx(request) as session:
            record = nas.update_nas(session, nas_id, actor=user(request), context=CONTEXT, **values)
    except UserError as exc:
        with read(request) as session:
            try:
                base = nas.show_nas(session, nas_id)
            except UserError as missing:
                return _not_found(request, missing)
        shown = dict(base, **{k: v for k, v in values.items() if k != "secret"})
        shown["active"] = values["active"] == "yes"
        return _nas_form(request, record=shown, errors=errors_of(exc), nas_id=nas_id, status_code=422)
    return redirect("/nas", msg=f"NAS {record['name']} saved.")


@router.post("/nas/{nas_id}/delete")
def nas_delete(request: Request, nas_id: int):
    try:
        with tx(request) as session:
            result = nas.delete_nas(session, nas_id, actor=user(request), context=CONTEXT)
    except UserError as exc:
        return redirect("/nas", msg=f"Not deleted: {exc}")
    return redirect("/nas", msg=f"NAS {result['deleted']} deleted.")


# ---------------------------------------------------------------- rate tables

RATE_FORM = ("prefix", "description", "price_per_minute", "connection_fee", "minimum_seconds", "interval_seconds",
             "grace_seconds", "effective_from", "effective_until")


@router.get("/rate-tables")
def rate_table_list(request: Request):
    with read(request) as session:
        rows = rates.list_rate_tables(session)
    return render(request, "rate_tables.html", rows=rows, errors={}, record={})


@router.post("/rate-tables/new")
def rate_table_create(request: Request, form=Depends(form_of)):
    values = form_dict(form, ("name", "currency", "notes"))
    try:
        with tx(request) as session:
            record = rates.create_rate_table(session, actor=user(request), context=CONTEXT,
                                             name=values.get("name", ""), currency=values.get("currency") or "USD",
                                             notes=values.get("notes", ""))
    except UserError as exc:
        with read(request) as session:
            rows = rates.list_rate_tables(session)
        return render(request, "rate_tables.html", status_code=422, rows=rows, errors=errors_of(exc), record=values)
    return redirect(f"/rate-tables/{record['id']}", msg=f"Rate table {record['name']} created.")


def _rates_page(request: Request, table_id: int, *, status_code=200, **extra):
    prefix = request.query_params.get("prefix", "")
    page = _page_number(request)
    with read(request) as session:
        try:
            result = rates.rate_page(session, table_id, prefix=prefix or None, offset=(page - 1) * PAGE_SIZE,
                                     limit=PAGE_SIZE)
        except UserError as exc:
            if "prefix" not in str(exc):
                return _not_found(request, exc)
            result = rates.rate_page(session, table_id, offset=0, limit=PAGE_SIZE)
            extra.setdefault("search_error", str(exc))
    extra.setdefault("errors", {})
    extra.setdefault("new_rate", {})
    return render(request, "rate_table.html", status_code=status_code, result=result, prefix=prefix, page=page,
                  page_size=PAGE_SIZE, params={"prefix": prefix} if prefix else {}, **extra)


@router.get("/rate-tables/{table_id}")
def rate_table_show(request: Request, table_id: int):
    return _rates_page(request, table_id)


@router.post("/rate-tables/{table_id}/rates")
def rate_add(request: Request, table_id: int, form=Depends(form_of)):
    values = {k: v for k, v in form_dict(form, RATE_FORM).items() if v != "" or k == "prefix"}
    try:
        with tx(request) as session:
            rates.add_rate(session, table_id, actor=user(request), context=CONTEXT, **values)
    except UserError as exc:
        return _rates_page(request, table_id, status_code=422, errors=errors_of(exc), new_rate=values)
    return redirect(f"/rate-tables/{table_id}", msg=f"Rate for prefix '{values.get('prefix', '')}' added.")


@router.get("/rate-tables/{table_id}/rates/{rate_id}")
def rate_edit(request: Request, table_id: int, rate_id: int):
    with read(request) as session:
        try:
            found = rates.show_rate(session, table_id, rate_id)
        except UserError as exc:
            return _not_found(request, exc)
    return render(request, "rate_form.html", table=found["table"], rate=found["rate"], errors={})


@router.post("/rate-tables/{table_id}/rates/{rate_id}")
def rate_update(request: Request, table_id: int, rate_id: int, form=Depends(form_of)):
    values = form_dict(form, RATE_FORM)
    try:
        with tx(request) as session:
            rates.update_rate(session, table_id, rate_id, actor=user(request), context=CONTEXT, **values)
    except UserError as exc:
        with read(request) as session:
            table = rates.rate_page(session, table_id, limit=1)["table"]
        return render(request, "rate_form.html", status_code=422, table=table, rate=dict(values, id=rate_id),
                      errors=errors_of(exc))
    return redirect(f"/rate-tables/{table_id}", msg=f"Rate {values.get('prefix', '')} saved.")


@router.post("/rate-tables/{table_id}/import")
def rate_import(request: Request, table_id: int, form=Depends(form_of)):
    """Step 1 (a file): check every line and show a preview; step 2 (confirm): import it all."""
    upload = form.get("file")
    replace = bool(form.get("replace"))
    if form.get("confirm") and isinstance(form.get("csv_text"), str):
        text, filename = form.get("csv_text"), str(form.get("filename") or "upload.csv")
    elif upload is not None and not isinstance(upload, str):
        filename = upload.filename or "upload.csv"
        try:
            text = upload.file.read().decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            return _rates_page(request, table_id, status_code=422, import_error=f"{filename}: not UTF-8 ({exc.reason})")
    else:
        return _rates_page(request, table_id, status_code=422, import_error="file: choose a CSV file to import")
    if not form.get("confirm"):
        try:
            rows = rates.parse_rates_csv(text, filename)
        except UserError as exc:
            return _rates_page(request, table_id, status_code=422, import_error=str(exc))
        return _rates_page(request, table_id, preview={"rows": rows[:20], "count": len(rows), "text": text,
                                                       "filename": filename, "replace": replace})
    try:
        with tx(request) as session:
            result = rates.import_rates_text(session, table_id, text, filename, actor=user(request),
                                             context=CONTEXT, replace=replace)
    except UserError as exc:
        return _rates_page(request, table_id, status_code=422, import_error=str(exc))
    return redirect(f"/rate-tables/{table_id}",
                    msg=f"Imported {result['rows_imported']} rates from {filename}; the table has "
                        f"{result['rates_in_table']}.")


# ---------------------------------------------------------------- routing plans

@router.get("/routing-plans")
def routing_list(request: Request):
    with read(request) as session:
        plans = [routing.show_routing_plan(session, p["id"]) for p in routing.list_routing_plans(session)]
    return render(request, "routing.html", plans=plans, errors={}, record={})


@router.post("/routing-plans/new")
def routing_create(request: Request, form=Depends(form_of)):
    values = form_dict(form, ("name", "notes"))
    try:
        with tx(request) as session:
            record = routing.create_routing_plan(session, actor=user(request), context=CONTEXT,
                                                 name=values.get("name", ""), notes=values.get("notes", ""))
    except UserError as exc:
        with read(request) as session:
            plans = [routing.show_routing_plan(session, p["id"]) for p in routing.list_routing_plans(session)]
        return render(request, "routing.html", status_code=422, plans=plans, errors=errors_of(exc), record=values)
    return redirect("/routing-plans", msg=f"Routing plan {record['name']} created.")


@router.post("/routing-plans/{plan_id}/rules")
def routing_rule_add(request: Request, plan_id: int, form=Depends(form_of)):
    values = form_dict(form, ("terminator", "prefix", "priority", "share"))
    try:
        with tx(request) as session:
            routing.add_rule(session, plan_id, actor=user(request), context=CONTEXT,
                             terminator=values.get("terminator", ""), prefix=values.get("prefix", ""),
                             priority=values.get("priority") or 0, share=values.get("share") or 100)
    except UserError as exc:
        with read(request) as session:
            plans = [routing.show_routing_plan(session, p["id"]) for p in routing.list_routing_plans(session)]
        return render(request, "routing.html", status_code=422, plans=plans, errors=errors_of(exc), record={},
                      rule=values, rule_plan=plan_id)
    return redirect("/routing-plans", msg="Rule added.")


def _routing_refused(request: Request, exc: UserError):
    with read(request) as session:
        plans = [routing.show_routing_plan(session, p["id"]) for p in routing.list_routing_plans(session)]
    return render(request, "routing.html", status_code=422, plans=plans, errors=errors_of(exc), record={})


@router.post("/routing-plans/{plan_id}/rules/{rule_id}/delete")
def routing_rule_delete(request: Request, plan_id: int, rule_id: int):
    try:
        with tx(request) as session:
            routing.delete_rule(session, plan_id, rule_id, actor=user(request), context=CONTEXT)
    except UserError as exc:
        return _routing_refused(request, exc)
    return redirect("/routing-plans", msg="Rule deleted.")


@router.post("/routing-plans/{plan_id}/delete")
def routing_delete(request: Request, plan_id: int):
    """Refused (one line naming the users) while a client or an account routes with the plan."""
    try:
        with tx(request) as session:
            result = routing.delete_routing_plan(session, plan_id, actor=user(request), context=CONTEXT)
    except UserError as exc:
        return _routing_refused(request, exc)
    return redirect("/routing-plans", msg=f"Routing plan {result['routing_plan']} deleted.")


# ---------------------------------------------------------------- active calls

CALL_FILTERS = ("account", "client", "nas")


@router.get("/calls")
def call_list(request: Request):
    filters = {k: request.query_params.get(k, "") for k in CALL_FILTERS}
    page = _page_number(request)
    error = None
    with read(request) as session:
        try:
            result = calls.call_page(session, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE,
                                     **{k: v or None for k, v in filters.items()})
        except UserError as exc:
            error, result = str(exc), {"total": 0, "rows": []}
    return render(request, "calls.html", result=result, filters=filters, error=error, page=page,
                  page_size=PAGE_SIZE, params={k: v for k, v in filters.items() if v})


@router.post("/calls/{call_id}/end")
def call_end(request: Request, call_id: int):
    try:
        with tx(request) as session:
            result = calls.end_call(session, call_id, actor=user(request), context=CONTEXT)
    except UserError as exc:
        return redirect("/calls", msg=f"Not ended: {exc}")
    what = "reservation dropped" if result["removed"] == "reservation" else \
        f"call ended after {result['duration']} s, cost {result['cost']}"
    return redirect("/calls", msg=f"Call {call_id}: {what}.")


# ---------------------------------------------------------------- CDRs

CDR_FILTERS = ("account", "client", "nas", "call_id", "since", "until", "flagged")


def _cdr_filters(request: Request) -> dict:
    return {k: request.query_params.get(k, "") for k in CDR_FILTERS}


@router.get("/cdrs")
def cdr_list(request: Request):
    filters = _cdr_filters(request)
    page = _page_number(request)
    error = None
    with read(request) as session:
        try:
            result = calls.cdr_page(session, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE,
                                    **{k: v or None for k, v in filters.items()})
        except UserError as exc:
            error, result = str(exc), {"total": 0, "rows": []}
    return render(request, "cdrs.html", result=result, filters=filters, error=error, page=page, page_size=PAGE_SIZE,
                  params={k: v for k, v in filters.items() if v}, columns=calls.CDR_COLUMNS)


@router.get("/cdrs.csv")
def cdr_csv(request: Request):
    """The filtered CDRs as CSV (every detail column), streamed page by page."""
    filters = {k: v or None for k, v in _cdr_filters(request).items()}
    with read(request) as session:
        try:
            calls.cdr_page(session, limit=1, with_total=False, **filters)
        except UserError as exc:
            return render(request, "refused.html", status_code=422, message=str(exc))
    sessions = request.app.state.sessions

    def rows():
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(calls.CDR_DETAIL_COLUMNS)
        offset = 0
        while True:
            with sessions() as session:
                page = calls.cdr_page(session, offset=offset, limit=5000, detail=True, with_total=False, **filters)
            for row in page["rows"]:
                writer.writerow(["" if v is None else plain(v) for v in (row[c] for c in calls.CDR_DETAIL_COLUMNS)])
            yield out.getvalue()
            out.seek(0)
            out.truncate()
            if len(page["rows"]) < 5000:
                return
            offset += 5000

    return StreamingResponse(rows(), media_type="text/csv",
                             headers={"Content-Disposition": 'attachment; filename="cdrs.csv"'})


# ---------------------------------------------------------------- audit log

AUDIT_FILTERS = ("object_type", "object_id", "actor", "since", "until")
AUDIT_TYPES = ("account", "client", "nas", "rate_table", "routing_plan", "call", "web_user", "api_token", "seed")


@router.get("/audit")
def audit_list(request: Request):
    filters = {k: request.query_params.get(k, "") for k in AUDIT_FILTERS}
    error = None
    with read(request) as session:
        try:
            entries = audit.list_entries(session, object_type=filters["object_type"] or None,
                                         object_id=filters["object_id"] or None, actor=filters["actor"] or None,
                                         since=filters["since"] or None, until=filters["until"] or None, limit=200)
        except UserError as exc:
            error, entries = str(exc), []
    entries.reverse()  # newest first on screen
    for entry in entries:
        entry["rows"] = [(field, _shown(change)) for field, change in entry["changes"].items()]
    return render(request, "audit.html", entries=entries, filters=filters, error=error, types=AUDIT_TYPES)


def _shown(change):
    if isinstance(change, list) and len(change) == 2:
        return [_text(change[0]), _text(change[1])]
    return ["", _text(change)]


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True) if not (isinstance(value, list) and all(
            isinstance(v, str) for v in value)) else "; ".join(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)
