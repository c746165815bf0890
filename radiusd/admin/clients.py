"""Clients: the carrier's customers and vendors, holding balance, credit limit and defaults.

A balance only moves through `adjust_balance` (a payment, a correction) or account deletion
refunds, each an atomic `balance = balance + amount` so that concurrent call charging by the
servers is never overwritten by an admin read-modify-write.
"""
from __future__ import annotations

from decimal import Decimal

from sqlalchemy import func, null, select, update
from sqlalchemy.orm import Session

from radiusd.admin import audit
from radiusd.admin import fields as F
from radiusd.admin.refs import find, find_optional, name_of, refuse_if_used
from radiusd.models import Account, ActiveCall, Cdr, Client, RateTable, RoutingPlan

CLIENT_FIELDS = ("name", "active", "balance", "credit_limit", "currency", "orig_rate_table", "term_rate_table",
                 "routing_plan", "capacity", "max_call_duration", "notes")
UPDATABLE = tuple(f for f in CLIENT_FIELDS if f != "balance")

# How each column's value is checked, from the CLI, the web, the API and seed files alike:
# rule(field, value) -> the value to store, or a UserError naming the field.
COLUMN_RULES = {
    "name": F.name,
    "active": F.boolean,
    "balance": F.money,
    "credit_limit": lambda field, value: F.money(field, value, nullable=True, minimum=Decimal(0)),
    "currency": F.currency,
    "capacity": F.capacity,
    "max_call_duration": F.max_call_duration,
    "notes": F.notes,
}


def client_record(session: Session, client: Client) -> dict:
    return {
        "id": client.id,
        "name": client.name,
        "active": client.active,
        "balance": F.money_out(client.balance),
        "credit_limit": F.money_out(client.credit_limit),  # None = unlimited
        "currency": client.currency,
        "orig_rate_table": name_of(session, RateTable, client.orig_rate_table_id),
        "term_rate_table": name_of(session, RateTable, client.term_rate_table_id),
        "routing_plan": name_of(session, RoutingPlan, client.routing_plan_id),
        "capacity": client.capacity,
        "max_call_duration": client.max_call_duration,   # None = no limit at the client level
        "notes": client.notes,
    }


def _apply(session: Session, client: Client, values: dict) -> None:
    unknown = set(values) - set(CLIENT_FIELDS)
    if unknown:
        field = sorted(unknown)[0]
        raise F.fail(field, "not a client field", values[field])
    for key, value in values.items():
        if key in ("orig_rate_table", "term_rate_table"):
            table = find_optional(session, RateTable, value, key)
            setattr(client, key + "_id", table.id if table else None)
        elif key == "routing_plan":
            plan = find_optional(session, RoutingPlan, value, key)
            client.routing_plan_id = plan.id if plan else None
        else:
            checked = COLUMN_RULES[key](key, value)
            if key == "name":
                other = session.scalars(select(Client).where(Client.name == checked, Client.id != client.id)).first()
                if other is not None:
                    raise F.conflict("name", f"already used by client #{other.id}", checked)
            setattr(client, key, checked)


def create_client(session: Session, *, actor: str, context: str = "cli", **values) -> dict:
    """Add a client. `name` is required; credit_limit None = unlimited; capacity None = no limit."""
    if "name" not in values:
        raise F.fail("name", "a client name is required", "missing")
    values.setdefault("balance", Decimal(0))
    values.setdefault("credit_limit", Decimal(0))
    values.setdefault("currency", "USD")
    values.setdefault("active", True)
    client = Client(notes="")
    _apply(session, client, values)
    if client.credit_limit is None:
        # the column defaults to 0 on the server: a plain None would be left out of the INSERT
        client.credit_limit = null()
    now = audit.utcnow()
    client.created_at = client.updated_at = now
    session.add(client)
    session.flush()
    after = client_record(session, client)
    audit.record(session, object_type="client", object_id=client.id, object_name=client.name, action="create",
                 actor=actor, context=context, changes=audit.diff({}, after))
    return after


def update_client(session: Session, ref, *, actor: str, context: str = "cli", **values) -> dict:
    """Change the given fields of a client; the balance is not among them (see adjust_balance)."""
    client = find(session, Client, ref, "client")
    if "balance" in values:
        raise F.fail("balance", "use `client topup` (adjust_balance) to change a balance", values["balance"])
    before = client_record(session, client)
    _apply(session, client, values)
    after = client_record(session, client)
    changes = audit.diff(before, after)
    if changes:
        client.updated_at = audit.utcnow()
        session.flush()
        audit.record(session, object_type="client", object_id=client.id, object_name=client.name,
                     action="update", actor=actor, context=context, changes=changes)
    return after


def credit_balance(session: Session, client_id: int, amount: Decimal) -> Decimal:
    """Atomically add `amount` (may be negative) to a client's balance; returns the new balance."""
    session.execute(
        update(Client).where(Client.id == client_id)
        .values(balance=Client.balance + amount, updated_at=audit.utcnow())
        .execution_options(synchronize_session=False)
    )
    client = session.get(Client, client_id)
    session.refresh(client, ["balance", "updated_at"])
    return client.balance


def adjust_balance(session: Session, ref, amount, *, actor: str, context: str = "cli", notes: str = "") -> dict:
    """Record a payment (positive) or a correction (negative) on a client's balance."""
    client = find(session, Client, ref, "client")
    amount = F.money("amount", amount)
    if amount == 0:
        raise F.fail("amount", "must not be zero", amount)
    notes = F.text("notes", notes, max_len=1000, multiline=True)
    session.refresh(client, ["balance"])
    before = client.balance
    if abs(before + amount) > F.MONEY_MAX:
        raise F.fail("amount", f"the balance would have more than {F.MONEY_DIGITS} digits before the decimal "
                               f"point (balance {F.money_out(before)})", F.money_out(amount))
    new_balance = credit_balance(session, client.id, amount)
    changes = {"balance": [F.money_out(before), F.money_out(new_balance)], "amount": [None, F.money_out(amount)]}
    if notes:
        changes["notes"] = [None, notes]
    audit.record(session, object_type="client", object_id=client.id, object_name=client.name,
                 action="topup" if amount > 0 else "adjust", actor=actor, context=context, changes=changes)
    return {"client": client.name, "client_id": client.id, "amount": F.money_out(amount),
            "balance_before": F.money_out(before), "balance": F.money_out(new_balance), "currency": client.currency}


def show_client(session: Session, ref) -> dict:
    client = find(session, Client, ref, "client")
    record = client_record(session, client)
    record["accounts"] = list(session.scalars(
        select(Account.name).where(Account.client_id == client.id).order_by(Account.id)))
    return record


def list_clients(session: Session) -> list[dict]:
    counts = dict(session.execute(select(Account.client_id, func.count()).group_by(Account.client_id)).all())
    rows = []
    for client in session.scalars(select(Client).order_by(Client.id)):
        row = client_record(session, client)
        row["accounts"] = counts.get(client.id, 0)
        rows.append(row)
    return rows


def delete_client(session: Session, ref, *, actor: str, context: str = "cli") -> dict:
    """Delete a client; refused while it has accounts, CDRs or calls in progress.

    CDRs are the client's billing history: a client that ever carried traffic is kept (make it
    inactive instead). The row is locked first so a concurrent account add waits and then fails.
    """
    client = find(session, Client, ref, "client", lock=True)
    accounts = list(session.scalars(select(Account.name).where(Account.client_id == client.id).order_by(Account.id)))
    cdrs = session.scalar(select(func.count()).select_from(Cdr).where(Cdr.client_id == client.id))
    calls = list(session.scalars(select(ActiveCall.id).where(ActiveCall.client_id == client.id)
                                 .order_by(ActiveCall.id)))
    refuse_if_used("client", client.name, [
        ("account", accounts), ("call in progress", [f"#{i}" for i in calls]),
        ("CDR", cdrs),
    ], "delete its accounts first; a client with CDRs is kept (set --active no)")
    prior = client_record(session, client)
    session.delete(client)
    session.flush()
    audit.record(session, object_type="client", object_id=prior["id"], object_name=prior["name"], action="delete",
                 actor=actor, context=context, changes=audit.diff(prior, {}))
    return {"client": prior["name"], "id": prior["id"], "balance": prior["balance"], "currency": prior["currency"]}
def client_names(session: Session) -> list[tuple[int, str]]:
    """(id, name) of every client by name: for choosing one in a form or a filter."""
    return [tuple(row) for row in session.execute(select(Client.id, Client.name).order_by(Client.name))]
