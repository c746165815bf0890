"""NAS: the switches and gateways allowed to talk RADIUS to us. Their secrets are never shown."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from radiusd.admin import audit
from radiusd.admin import fields as F
from radiusd.admin.refs import find
from radiusd.core import message_authenticator as ma
from radiusd.models import CALLER_ADDRESS_SOURCES, DIALECTS, Account, Nas, account_gateways
from radiusd.store.accounting import forget_references
from radiusd.store.sealing import seal_column

# require_message_authenticator: the former yes/no flag, still accepted as the policy of that name
NAS_FIELDS = ("name", "address", "secret", "message_authenticator", "require_message_authenticator", "dialect",
              "caller_address_source", "active", "notes")

# How each column's value is checked, from the CLI, the web, the API and seed files alike.
COLUMN_RULES = {
    "name": lambda field, value: F.name(field, value, spaces=False),
    "address": F.network,
    "secret": lambda field, value: F.secret(field, value, required=True),
    "message_authenticator": lambda field, value: F.choice(field, value, ma.POLICIES),
    "dialect": lambda field, value: F.choice(field, value, DIALECTS),
    "caller_address_source": lambda field, value: F.choice(field, value, CALLER_ADDRESS_SOURCES),
    "active": F.boolean,
    "notes": F.notes,
}


def nas_state(nas: Nas) -> dict:
    """Full state, secret included: only for diffs (audit.diff redacts it)."""
    return {
        "id": nas.id, "name": nas.name, "address": nas.address, "secret": nas.secret,
        "message_authenticator": nas.message_authenticator,
        "message_authenticator_learned": nas.message_authenticator_seen_at,
        "dialect": nas.dialect,
        "caller_address_source": nas.caller_address_source, "active": nas.active, "notes": nas.notes,
    }


def nas_record(nas: Nas) -> dict:
    """What we show: the secret as "***"; for Message-Authenticator the policy, when auto learned
    it (None: not yet) and what the NAS is held to now."""
    record = audit.redact(nas_state(nas))
    record["message_authenticator_now"] = ma.describe(nas.message_authenticator,
                                                      nas.message_authenticator_seen_at is not None)
    return record


def _apply(session: Session, nas: Nas, values: dict) -> None:
    unknown = set(values) - set(NAS_FIELDS)
    if unknown:
        field = sorted(unknown)[0]
        raise F.fail(field, "not a NAS field", "value hidden" if field in audit.SECRET_FIELDS else values[field])
    if "message_authenticator" in values and "require_message_authenticator" in values:
        raise F.fail("require_message_authenticator", "give only --message-authenticator yes|no|auto",
                     values["require_message_authenticator"])
    for key, value in values.items():
        if key == "name":
            new = COLUMN_RULES["name"]("name", value)
            other = session.scalars(select(Nas).where(Nas.name == new, Nas.id != nas.id)).first()
            if other is not None:
                raise F.conflict("name", f"already used by NAS #{other.id}", new)
            nas.name = new
        elif key == "address":
            new = COLUMN_RULES["address"]("address", value)
            other = session.scalars(select(Nas).where(Nas.address == new, Nas.id != nas.id)).first()
            if other is not None:
                raise F.conflict("address", f"already used by NAS {other.name}", new)
            nas.address = new
        elif key == "secret":
            nas.secret = F.secret("secret", value, required=True)
        elif key in ("message_authenticator", "require_message_authenticator"):
            if key == "message_authenticator":
                policy = COLUMN_RULES[key](key, value)
            else:
                policy = "yes" if F.boolean(key, value) else "no"
            nas.message_authenticator = policy
            # Setting the policy (again) starts auto from scratch, e.g. after a switch was replaced
            # by one that cannot send Message-Authenticator.
            nas.message_authenticator_seen_at = None
        elif key == "active":
            nas.active = COLUMN_RULES[key](key, value)
        elif key == "dialect":
            nas.dialect = COLUMN_RULES[key](key, value)
        elif key == "caller_address_source":
            nas.caller_address_source = COLUMN_RULES[key](key, value)
        elif key == "notes":
            nas.notes = COLUMN_RULES[key](key, value)


def create_nas(session: Session, *, actor: str, context: str = "cli", **values) -> dict:
    """Add a NAS: name, address (IP or CIDR), secret are required."""
    for required in ("name", "address", "secret"):
        if values.get(required) in (None, ""):
            raise F.fail(required, "is required", "missing")
    if "require_message_authenticator" not in values:
        values.setdefault("message_authenticator", ma.DEFAULT_POLICY)
    values.setdefault("dialect", "cisco")
    values.setdefault("caller_address_source", "h323-remote-address")
    values.setdefault("active", True)
    nas = Nas(notes="")
    _apply(session, nas, values)
    seal_column(session, nas, "secret")
    nas.created_at = audit.utcnow()
    session.add(nas)
    session.flush()
    audit.record(session, object_type="nas", object_id=nas.id, object_name=nas.name, action="create",
                 actor=actor, context=context, changes=audit.diff({}, nas_state(nas)))
    return nas_record(nas)


def update_nas(session: Session, ref, *, actor: str, context: str = "cli", **values) -> dict:
    nas = find(session, Nas, ref, "nas")
    before = nas_state(nas)
    _apply(session, nas, values)
    seal_column(session, nas, "secret")  # also re-seals for a new name
    session.flush()
    changes = audit.diff(before, nas_state(nas))
    if changes:
        audit.record(session, object_type="nas", object_id=nas.id, object_name=nas.name, action="update",
                     actor=actor, context=context, changes=changes)
    return nas_record(nas)


def _gateway_users(session: Session, nas_id: int) -> list[Account]:
    return list(session.scalars(
        select(Account).join(account_gateways, account_gateways.c.account_id == Account.id)
        .where(account_gateways.c.nas_id == nas_id).order_by(Account.id)))


def delete_nas(session: Session, ref, *, actor: str, context: str = "cli") -> dict:
    """Remove a NAS. Refused while it is the only gateway of an account: removing it would make
    that account valid on every NAS (no gateways = all), silently widening who may use it."""
    nas = find(session, Nas, ref, "nas")
    users = _gateway_users(session, nas.id)
    sole = [a.name for a in users if len(a.gateways) == 1]
    if sole:
        raise F.fail("nas", f"is the only gateway of account(s) {', '.join(sole)}; change their gateways first",
                     nas.name)
    before = nas_state(nas)
    before["gateway_of"] = [a.name for a in users]
    for account in users:
        account.gateways = [g for g in account.gateways if g.id != nas.id]
    forget_references(session, nas_id=nas.id)   # its open calls and CDRs
    session.flush()
    session.delete(nas)
    session.flush()
    audit.record(session, object_type="nas", object_id=before["id"], object_name=before["name"], action="delete",
                 actor=actor, context=context, changes=audit.diff(before, {}))
    return {"deleted": before["name"], "id": before["id"], "removed_from_accounts": before["gateway_of"]}


def show_nas(session: Session, ref) -> dict:
    nas = find(session, Nas, ref, "nas")
    record = nas_record(nas)
    record["gateway_of"] = [a.name for a in _gateway_users(session, nas.id)]
    return record


def list_nas(session: Session) -> list[dict]:
    return [nas_record(n) for n in session.scalars(select(Nas).order_by(Nas.id))]
