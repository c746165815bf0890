"""Finding admin objects by name or id, as an administrator refers to them.

A reference is tried as a name first, then (if it is all digits) as an id, so an account
literally named "1001" is still found by its name.
"""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from radiusd.admin import fields as F
from radiusd.models import Account, Client, Nas, RateTable, RoutingPlan

_WHAT = {
    Client: "client",
    Account: "account",
    Nas: "NAS",
    RateTable: "rate table",
    RoutingPlan: "routing plan",
}


def find(session: Session, model, ref, field: str | None = None, *, lock: bool = False):
    """The object named (or numbered) `ref`, or a UserError naming the field and the value."""
    what = _WHAT[model]
    field = field or what.replace(" ", "_").lower()
    if isinstance(ref, model):
        return ref
    if ref is None or str(ref).strip() == "":
        raise F.fail(field, f"a {what} is required", repr(ref))
    key = str(ref).strip()
    query = select(model).where(model.name == key)
    if lock:
        query = query.with_for_update()
    found = session.scalars(query).first()
    if found is None and (isinstance(ref, int) or key.isdigit()):
        query = select(model).where(model.id == int(key))
        if lock:
            query = query.with_for_update()
        found = session.scalars(query).first()
    if found is None:
        raise F.fail(field, f"no such {what}", key)
    return found


def find_optional(session: Session, model, ref, field: str):
    """Like find(), but none/empty means "not set" and gives None."""
    if ref is None or (isinstance(ref, str) and ref.strip().lower() in F.NONE_WORDS):
        return None
    return find(session, model, ref, field)


def name_of(session: Session, model, id_: int | None) -> str | None:
    if id_ is None:
        return None
    obj = session.get(model, id_)
    return obj.name if obj is not None else None


def refuse_if_used(field: str, name: str, uses: list[tuple[str, list[str]]], hint: str) -> None:
    """One UserError line listing what still uses an object (a few names each) when anything does.

    `uses` is [(what, [names] or a count)], e.g. [("client", ["Acme Telecom"]), ("account", []), ("CDR", 12)].
    """
    parts = []
    for what, names in uses:
        if isinstance(names, int):
            if names:
                parts.append(f"{names} {what}{'s' if names > 1 else ''}")
        elif names:
            shown = ", ".join(str(n) for n in names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            parts.append(f"{what}{'s' if len(names) > 1 else ''} {shown}")
    if parts:
        raise F.fail(field, f"still used by {'; '.join(parts)}; {hint}", name)
