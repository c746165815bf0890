"""Accounts: how a client's traffic is recognised, with originator and terminator settings.

Every field of the seed's Accounts page is here. IP lists are `;`-separated addresses and CIDRs,
stored one normalised CIDR per `account_networks` row (a CIDR with host bits set is rejected).

Deactivate unticks originator and terminator and keeps everything; delete removes the account
with its CDRs and active calls and refunds the deleted CDRs' cost to the client's balance.
"""
from __future__ import annotations

import ipaddress
from decimal import Decimal

from sqlalchemy import and_, delete, func, not_, or_, select
from sqlalchemy.orm import Session, selectinload

from radiusd.admin import audit
from radiusd.admin import fields as F
from radiusd.admin.clients import credit_balance
from radiusd.admin.refs import find, find_optional, name_of
from radiusd.models import (
    IDENT_BY,
    PROTOCOLS,
    Account,
    AccountNetwork,
    ActiveCall,
    Cdr,
    Client,
    Nas,
    RateTable,
    RoutingPlan,
    RoutingRule,
    account_gateways,
)
from radiusd.store.sealing import seal_column

ACCOUNT_FIELDS = (
    "client", "name", "ident_by", "ips", "tech_prefix", "password", "ani", "gateways", "notes", "active",
    "max_call_duration", "orig_enabled", "orig_rate_table", "orig_routing_plan", "orig_tag", "orig_capacity",
    "term_enabled", "term_rate_table", "term_tag", "term_capacity", "term_protocol", "term_proxy", "term_port",
)


def _term_proxy(field: str, value) -> str | None:
    proxy = F.optional_text(field, value, max_len=255)
    if proxy is not None and any(ch.isspace() for ch in proxy):
        raise F.fail(field, "must not contain spaces", proxy)
    return proxy


# How each column's value is checked, from the CLI, the web, the API and seed files alike.
COLUMN_RULES = {
    "name": lambda field, value: F.name(field, value, spaces=False),
    "ident_by": lambda field, value: F.choice(field, value, IDENT_BY),
    "tech_prefix": F.tech_prefix,
    "password": lambda field, value: F.secret(field, value, required=False),
    "ani": F.ani,
    "notes": F.notes,
    "active": F.boolean,
    "orig_enabled": F.boolean,
    "term_enabled": F.boolean,
    "orig_tag": lambda field, value: F.text(field, value, max_len=64),
    "term_tag": lambda field, value: F.text(field, value, max_len=64),
    "orig_capacity": F.capacity,
    "term_capacity": F.capacity,
    "max_call_duration": F.max_call_duration,
    "term_protocol": lambda field, value: F.choice(field, value, PROTOCOLS, nullable=True),
    "term_proxy": _term_proxy,
    "term_port": lambda field, value: F.integer(field, value, minimum=1, maximum=65535, nullable=True),
}
NETWORK_COLUMN_RULES = {"cidr": F.network, "position": lambda field, value: F.integer(field, value, minimum=0)}


def account_state(session: Session, account: Account) -> dict:
    """Every field, password included (for diffs only: audit.diff redacts it)."""
    return {
        "id": account.id,
        "client": name_of(session, Client, account.client_id),
        "name": account.name,
        "ident_by": account.ident_by,
        "ips": [n.cidr for n in account.networks],
        "tech_prefix": account.tech_prefix,
        "password": account.password,
        "ani": account.ani,
        "gateways": [g.name for g in account.gateways],
        "notes": account.notes,
        "active": account.active,
        "max_call_duration": account.max_call_duration,   # None = no limit at the account level
        "orig_enabled": account.orig_enabled,
        "orig_rate_table": name_of(session, RateTable, account.orig_rate_table_id),
        "orig_routing_plan": name_of(session, RoutingPlan, account.orig_routing_plan_id),
        "orig_tag": account.orig_tag,
        "orig_capacity": account.orig_capacity,
        "term_enabled": account.term_enabled,
        "term_rate_table": name_of(session, RateTable, account.term_rate_table_id),
        "term_tag": account.term_tag,
        "term_capacity": account.term_capacity,
        "term_protocol": account.term_protocol,
        "term_proxy": account.term_proxy,
        "term_port": account.term_port,
    }


def account_record(session: Session, account: Account) -> dict:
    """What we show: every field, the password as "***", and whether the account can carry calls."""
    record = audit.redact(account_state(session, account))
    record["status"] = account_status(account, session.get(Client, account.client_id))
    return record


STATUSES = ("active", "account inactive", "client inactive", "deactivated")


def account_status(account: Account, client: Client) -> str:
    """"active" when calls can come in or go out through this account, else why not (in the words of
    the reject reasons): the account or its client is inactive, or both directions are off."""
    if not account.active:
        return "account inactive"
    if not client.active:
        return "client inactive"
    if not (account.orig_enabled or account.term_enabled):
        return "deactivated"
    return "active"


class _Draft:
    """The account's proposed column values, checked as a whole before anything is written."""

    def __init__(self, account: Account | None):
        self.cols: dict = {}
        self.networks: list[str] = []
        self.gateways: list[Nas] = []
        if account is not None:
            for column in Account.__table__.columns:
                self.cols[column.key] = getattr(account, column.key)
            self.networks = [n.cidr for n in account.networks]
            self.gateways = list(account.gateways)


def _parse(session: Session, draft: _Draft, values: dict) -> None:
    unknown = set(values) - set(ACCOUNT_FIELDS)
    if unknown:
        field = sorted(unknown)[0]
        raise F.fail(field, "not an account field", "value hidden" if field == "password" else values[field])
    c = draft.cols
    for key, value in values.items():
        if key == "client":
            c["client_id"] = find(session, Client, value, "client").id
        elif key == "ips":
            draft.networks = F.networks("ips", value)
        elif key == "gateways":
            gateways: list[Nas] = []
            for ref in F.name_list(value):
                nas = find(session, Nas, ref, "gateways")
                if nas not in gateways:
                    gateways.append(nas)
            draft.gateways = gateways
        elif key in ("orig_rate_table", "term_rate_table"):
            table = find_optional(session, RateTable, value, key)
            c[key + "_id"] = table.id if table else None
        elif key == "orig_routing_plan":
            plan = find_optional(session, RoutingPlan, value, key)
            c["orig_routing_plan_id"] = plan.id if plan else None
        else:
            c[key] = COLUMN_RULES[key](key, value)


def _gateways_overlap(a: set[int], b: set[int]) -> bool:
    return not a or not b or bool(a & b)  # no gateways = valid on every NAS


def check_identity_columns(c: dict) -> None:
    """What each ident_by needs among the account's own columns (before its networks are known)."""
    if not c.get("name"):
        raise F.fail("name", "an account name is required", "missing")
    ident_by = c.get("ident_by")
    if ident_by not in IDENT_BY:
        raise F.fail("ident_by", f"one of {', '.join(IDENT_BY)} is required", ident_by)
    if ident_by == "name" and not c.get("password"):
        raise F.fail("password", "a login account (ident_by name) needs a password", "empty")
    if ident_by == "ani" and not c.get("ani"):
        raise F.fail("ani", "an ANI-identified account needs an ANI", "empty")


def check_stored_account(session: Session, account: Account, *, ignore_ids=()) -> None:
    """The whole-account rules for an account already in the session (a seed's rows): as create and
    update check them. Accounts in `ignore_ids` (later in the same file) are not compared against."""
    _check(session, _Draft(account), account.id, ignore_ids=ignore_ids)


def _check(session: Session, draft: _Draft, account_id: int | None, *, ignore_ids=()) -> None:
    """Whole-account rules: what each ident_by needs, and no two accounts with one identity."""
    c = draft.cols
    if not c.get("client_id"):
        raise F.fail("client", "a client is required", "missing")
    check_identity_columns(c)
    ident_by = c["ident_by"]
    if ident_by == "ip" and not draft.networks:
        raise F.fail("ips", "an IP-identified account needs at least one address or CIDR", "empty")
    if ident_by != "ip" and draft.networks:
        raise F.fail("ips", f"only used when ident_by is ip, not {ident_by}", ";".join(draft.networks))
    others = select(Account)
    if account_id is not None:
        others = others.where(Account.id != account_id)
    if ignore_ids:
        others = others.where(Account.id.not_in(list(ignore_ids)))
    same_name = session.scalars(others.where(Account.name == c["name"])).first()
    if same_name is not None:
        raise F.conflict("name", f"already used by account #{same_name.id}", c["name"])
    tech = c.get("tech_prefix") or ""
    if ident_by == "ani":
        dup = session.scalars(others.where(Account.ident_by == "ani", Account.ani == c["ani"],
                                           Account.tech_prefix == tech)).first()
        if dup is not None:
            raise F.conflict("ani", f"account {dup.name} already has this ANI with tech prefix '{tech}'", c["ani"])
    if ident_by == "ip":
        mine = {g.id for g in draft.gateways}
        candidates = session.scalars(
            others.join(AccountNetwork, AccountNetwork.account_id == Account.id)
            .where(Account.ident_by == "ip", Account.tech_prefix == tech, AccountNetwork.cidr.in_(draft.networks))
            .distinct()).all()
        for other in candidates:
            if (other.term_protocol, other.term_port) != (c.get("term_protocol"), c.get("term_port")):
                continue
            if not _gateways_overlap(mine, {g.id for g in other.gateways}):
                continue
            shared = [n.cidr for n in other.networks if n.cidr in draft.networks]
            raise F.conflict("ips", f"account {other.name} already has this network with the same tech prefix "
                                f"'{tech}', protocol/port and gateways", shared[0])


def _write(draft: _Draft, account: Account) -> None:
    for key, value in draft.cols.items():
        if key not in ("id", "created_at", "updated_at"):
            setattr(account, key, value)
    # keep rows for CIDRs that stay, so the (account, cidr) unique key never sees a transient duplicate
    existing = {n.cidr: n for n in account.networks}
    rows = []
    for position, cidr in enumerate(draft.networks):
        row = existing.get(cidr) or AccountNetwork(cidr=cidr)
        row.position = position
        rows.append(row)
    account.networks = rows
    account.gateways = list(draft.gateways)


# the leg whose CDR cost was debited from the client (store.accounting), so the one refunded on delete
REFUNDED_LEG = "orig"

_DEFAULTS = {
    "tech_prefix": "", "notes": "", "active": True, "orig_enabled": True, "orig_tag": "", "term_enabled": False,
    "term_tag": "",
}


# what each way of identifying needs: given alone, it says how the account is identified
_IDENTIFIED_BY = (("ips", "ip"), ("password", "name"), ("ani", "ani"))


def infer_ident_by(values: dict) -> str:
    """ident_by as given, else the one way of identifying that the given fields make unambiguous."""
    if values.get("ident_by") not in (None, ""):
        return values["ident_by"]
    given = [(field, way) for field, way in _IDENTIFIED_BY
             if values.get(field) not in (None, "") and not (field == "ani" and F.ani("ani", values[field]) is None)]
    if len(given) == 1:
        return given[0][1]
    if not given:
        raise F.fail("ident_by", "say how the account is identified: ip (with ips), name (with a password) "
                                 "or ani (with an ANI)", "missing")
    fields = " and ".join(field for field, _ in given)
    ways = " or ".join(way for _, way in given)
    raise F.fail("ident_by", f"{fields} are both given: say which identifies the account ({ways})", "ambiguous")


def create_account(session: Session, *, actor: str, context: str = "cli", **values) -> dict:
    """Add an account. Required: client, name, and what identifies it (ips / password / ani); ident_by is
    inferred when exactly one of those is given."""
    values = {**values, "ident_by": infer_ident_by(values)}
    draft = _Draft(None)
    draft.cols.update(_DEFAULTS)
    draft.cols.update(password=None, ani=None)
    _parse(session, draft, values)
    _check(session, draft, None)
    account = Account()
    _write(draft, account)
    seal_column(session, account, "password")
    account.created_at = account.updated_at = audit.utcnow()
    session.add(account)
    session.flush()
    state = account_state(session, account)
    audit.record(session, object_type="account", object_id=account.id, object_name=account.name, action="create",
                 actor=actor, context=context, changes=audit.diff({}, state))
    return account_record(session, account)


def _change(session: Session, account: Account, values: dict, *, action: str, actor: str, context: str) -> dict:
    before = account_state(session, account)
    draft = _Draft(account)
    if "ident_by" in values and "ips" not in values and F.choice("ident_by", values["ident_by"], IDENT_BY) != "ip":
        draft.networks = []  # the address list means nothing once the account is not identified by IP
    _parse(session, draft, values)
    _check(session, draft, account.id)
    _write(draft, account)
    seal_column(session, account, "password")  # also re-seals for a new name
    session.flush()
    after = account_state(session, account)
    changes = audit.diff(before, after)
    if changes:
        account.updated_at = audit.utcnow()
        session.flush()
        audit.record(session, object_type="account", object_id=account.id, object_name=account.name,
                     action=action, actor=actor, context=context, changes=changes)
    return account_record(session, account)


def update_account(session: Session, ref, *, actor: str, context: str = "cli", **values) -> dict:
    """Change the given fields; `ips` and `gateways` replace the whole list."""
    account = find(session, Account, ref, "account")
    return _change(session, account, values, action="update", actor=actor, context=context)


def deactivate_account(session: Session, ref, *, actor: str, context: str = "cli") -> dict:
    """Untick originator and terminator: no new calls either way; everything else is kept."""
    account = find(session, Account, ref, "account")
    return _change(session, account, {"orig_enabled": False, "term_enabled": False}, action="deactivate",
                   actor=actor, context=context)


def delete_account(session: Session, ref, *, actor: str, context: str = "cli") -> dict:
    """Delete an account with its CDRs and active calls; refund the deleted CDRs' cost to the client.

    Returns {account, cdrs_deleted, active_calls_removed, routing_rules_removed, refunded, new_balance}.
    The refund is the cost of the deleted originating-leg CDRs: those are what accounting debited
    from the client (radiusd.store.accounting); term-leg CDRs record a vendor cost that moved no
    balance, so they are deleted without a refund. CDRs are deleted with RETURNING so the refund is
    exactly what was removed, even if a server writes a CDR for this account while we work.
    """
    account = find(session, Account, ref, "account", lock=True)
    prior = account_state(session, account)
    client = session.get(Client, account.client_id)
    deleted = session.execute(delete(Cdr).where(Cdr.account_id == account.id).returning(Cdr.leg, Cdr.cost)).all()
    costs = [cost for _leg, cost in deleted]
    refunded = sum((cost or Decimal(0) for leg, cost in deleted if leg == REFUNDED_LEG), Decimal(0))
    calls = session.execute(
        delete(ActiveCall).where(ActiveCall.account_id == account.id).returning(ActiveCall.id)).scalars().all()
    rules = session.execute(
        delete(RoutingRule).where(RoutingRule.terminator_account_id == account.id).returning(RoutingRule.id)
    ).scalars().all()
    session.refresh(client, ["balance"])
    balance_before = client.balance
    new_balance = credit_balance(session, client.id, refunded) if refunded else balance_before
    session.delete(account)
    session.flush()
    changes = audit.diff(prior, {})
    changes.update({
        "cdrs_deleted": [None, len(costs)], "active_calls_removed": [None, len(calls)],
        "routing_rules_removed": [None, len(rules)], "refunded": [None, F.money_out(refunded)],
        "client_balance": [F.money_out(balance_before), F.money_out(new_balance)],
    })
    audit.record(session, object_type="account", object_id=prior["id"], object_name=prior["name"], action="delete",
                 actor=actor, context=context, changes=changes)
    return {"account": prior["name"], "id": prior["id"], "client": client.name, "cdrs_deleted": len(costs),
            "active_calls_removed": len(calls), "routing_rules_removed": len(rules), "refunded": F.money_out(refunded),
            "new_balance": F.money_out(new_balance), "currency": client.currency}


def show_account(session: Session, ref) -> dict:
    return account_record(session, find(session, Account, ref, "account"))


def _ip_matches(query: str):
    """A predicate on CIDR strings: contains the address, or overlaps the queried network."""
    try:
        address = ipaddress.ip_address(query)
        return lambda cidr: (net := ipaddress.ip_network(cidr)).version == address.version and address in net
    except ValueError:
        pass
    try:
        wanted = ipaddress.ip_network(query, strict=False)
    except ValueError:
        raise F.fail("ip", "not an IP address or CIDR", query) from None
    return lambda cidr: (net := ipaddress.ip_network(cidr)).version == wanted.version and net.overlaps(wanted)


def _ids_by_network(session: Session, predicate) -> set[int]:
    # Containment is computed here rather than in SQL so that SQLite and PostgreSQL behave the same.
    return {aid for aid, cidr in session.execute(select(AccountNetwork.account_id, AccountNetwork.cidr))
            if predicate(cidr)}


def _in_networks(session: Session, query: str):
    """Accounts with a network that contains the address (or overlaps the network) `query`.

    For a single address the answer is an index lookup: stored CIDRs are normalised
    (fields.network, also for seeds), so the networks holding an address are exactly its /0../32
    (or /0../128) supernets written the same way. A network query is checked in Python.
    """
    try:
        address = ipaddress.ip_address(query)
    except ValueError:
        return Account.id.in_(_ids_by_network(session, _ip_matches(query)) or [-1])
    covering = [ipaddress.ip_network(f"{address}/{bits}", strict=False).with_prefixlen
                for bits in range(address.max_prefixlen + 1)]
    return Account.id.in_(select(AccountNetwork.account_id).where(AccountNetwork.cidr.in_(covering)))


SEARCH_FILTERS = ("client", "ip", "name", "ani", "tech_prefix", "tag", "rate_table", "keyword", "active", "status",
                  "gateway", "routing_plan", "ident_by")
STATUSES = ("active", "inactive")
# what a page of accounts may be sorted by (the web table's columns)
SORT_KEYS = {"id": (Account.id,), "client": (Client.name, Account.id), "name": (Account.name,),
             "ident": (Account.ident_by, Account.id), "tech_prefix": (Account.tech_prefix, Account.id)}


def _search_query(session: Session, *, client=None, ip=None, name=None, ani=None, tech_prefix=None, tag=None,
                  rate_table=None, keyword=None, active=None, status=None, gateway=None, routing_plan=None,
                  ident_by=None):
    query = select(Account).join(Client, Client.id == Account.client_id)
    if active not in (None, "") or status not in (None, ""):
        # one meaning for the CLI's --active yes|no and the web's status: can the account carry
        # calls (account_status): itself and its client active, originator or terminator enabled
        can_carry = and_(Account.active.is_(True), Client.active.is_(True),
                         or_(Account.orig_enabled.is_(True), Account.term_enabled.is_(True)))
        wanted = (F.boolean("active", active) if active not in (None, "")
                  else F.choice("status", status, STATUSES) == "active")
        query = query.where(can_carry if wanted else not_(can_carry))
    if client not in (None, ""):
        query = query.where(Account.client_id == find(session, Client, client, "client").id)
    if name not in (None, ""):
        query = query.where(func.lower(Account.name).contains(str(name).strip().lower(), autoescape=True))
    if ani not in (None, ""):
        query = query.where(Account.ani.contains(str(ani).strip(), autoescape=True))
    if tech_prefix is not None:
        query = query.where(Account.tech_prefix == F.tech_prefix("tech_prefix", tech_prefix))
    if tag not in (None, ""):
        query = query.where(or_(Account.orig_tag == str(tag).strip(), Account.term_tag == str(tag).strip()))
    if rate_table not in (None, ""):
        table = find(session, RateTable, rate_table, "rate_table")
        query = query.where(or_(Account.orig_rate_table_id == table.id, Account.term_rate_table_id == table.id))
    if gateway not in (None, ""):
        # valid on that NAS: listed in its gateways, or with no gateway list (valid on every NAS)
        nas = find(session, Nas, gateway, "gateway")
        listed = select(account_gateways.c.account_id)
        query = query.where(or_(Account.id.in_(listed.where(account_gateways.c.nas_id == nas.id)),
                                Account.id.not_in(listed)))
    if routing_plan not in (None, ""):
        # the plan that routes the account's calls: its own, else its client's
        plan = find(session, RoutingPlan, routing_plan, "routing_plan")
        query = query.where(or_(Account.orig_routing_plan_id == plan.id,
                                and_(Account.orig_routing_plan_id.is_(None), Client.routing_plan_id == plan.id)))
    if ident_by not in (None, ""):
        query = query.where(Account.ident_by == F.choice("ident_by", ident_by, IDENT_BY))
    if ip not in (None, ""):
        query = query.where(_in_networks(session, str(ip).strip()))
    if keyword not in (None, ""):
        word = str(keyword).strip()
        lower = word.lower()
        try:
            in_networks = _in_networks(session, word)
        except F.UserError:  # not an address: a part of an IP list's text
            in_networks = Account.id.in_(
                select(AccountNetwork.account_id).where(AccountNetwork.cidr.contains(lower, autoescape=True)))
        query = query.where(or_(
            func.lower(Account.name).contains(lower, autoescape=True),
            Account.ani.contains(word, autoescape=True),
            func.lower(Account.notes).contains(lower, autoescape=True),
            func.lower(Client.name).contains(lower, autoescape=True),
            in_networks,
        ))
    return query


def search_accounts(session: Session, *, limit=None, **filters) -> list[dict]:
    """Accounts matching every given filter (records, password shown as "***"), by id.

    name, ani and keyword match parts, case-insensitively; ip finds accounts whose CIDR contains the
    address (or overlaps the given network); tag matches the orig or term tag; rate_table the orig
    or term rate table; keyword looks in name, ANI, IP list, notes and the client's name; active
    yes/no (or status active/inactive): whether the account can carry calls (account_status);
    gateway: accounts valid on that NAS (listed in their gateways, or with none: valid on every
    NAS); routing_plan: accounts whose calls that plan routes (their own plan, else their client's).
    """
    query = _search_query(session, **filters).order_by(Account.id)
    if limit is not None:
        query = query.limit(F.integer("limit", limit, minimum=1))
    return [account_record(session, a) for a in session.scalars(query)]


def account_page(session: Session, *, sort: str = "id", descending: bool = False, offset=0, limit=50,
                 **filters) -> dict:
    """One page of the accounts matching `filters` (as search_accounts), sorted in SQL.

    Returns {"total", "offset", "limit", "rows"}; each row is the account's record plus client_id and
    the client's rate tables and routing plan (client_orig_rate_table, client_term_rate_table,
    client_routing_plan): what applies where the account sets none.
    """
    if sort not in SORT_KEYS:
        raise F.fail("sort", f"expected one of {', '.join(SORT_KEYS)}", sort)
    offset = F.integer("offset", offset, minimum=0)
    limit = F.integer("limit", limit, minimum=1, maximum=1000)
    query = _search_query(session, **filters)
    total = session.scalar(select(func.count()).select_from(query.with_only_columns(Account.id).subquery()))
    columns = SORT_KEYS[sort]
    if any(value not in (None, "") for value in filters.values()):
        # Filtered: sort the matching rows (few, or found by a scan anyway) instead of walking an
        # index in sort order and testing every row until a page is full, which is what the
        # planner picks for substring filters and what takes ~10x longer when matches are rare.
        columns = tuple((c + 0) if c.type.python_type is int else c.concat("") for c in columns)
    order = [c.desc() if descending else c.asc() for c in columns]
    page = session.scalars(query.options(selectinload(Account.networks), selectinload(Account.gateways))
                           .order_by(*order).offset(offset).limit(limit)).all()
    # one query each for the page's clients, rate tables and routing plans (then found in the
    # session's identity map by name_of), not one per row
    client_ids = {a.client_id for a in page}
    clients = session.scalars(select(Client).where(Client.id.in_(client_ids))).all() if client_ids else []
    table_ids = {i for a in page for i in (a.orig_rate_table_id, a.term_rate_table_id)} | {
        i for c in clients for i in (c.orig_rate_table_id, c.term_rate_table_id)}
    plan_ids = {a.orig_routing_plan_id for a in page} | {c.routing_plan_id for c in clients}
    table_ids.discard(None)
    plan_ids.discard(None)
    # kept referenced while the rows are built: the identity map holds objects only weakly
    loaded = [clients,
              session.scalars(select(RateTable).where(RateTable.id.in_(table_ids))).all() if table_ids else [],
              session.scalars(select(RoutingPlan).where(RoutingPlan.id.in_(plan_ids))).all() if plan_ids else []]
    rows = []
    for account in page:
        row = account_record(session, account)
        row["client_id"] = account.client_id
        # what the account falls back to when it sets none itself
        client = session.get(Client, account.client_id)
        row["client_orig_rate_table"] = name_of(session, RateTable, client.orig_rate_table_id)
        row["client_term_rate_table"] = name_of(session, RateTable, client.term_rate_table_id)
        row["client_routing_plan"] = name_of(session, RoutingPlan, client.routing_plan_id)
        rows.append(row)
    del loaded
    return {"total": total, "offset": offset, "limit": limit, "rows": rows}


def delete_preview(session: Session, ref) -> dict:
    """What delete_account would remove and refund, without changing anything (for a confirmation)."""
    account = find(session, Account, ref, "account")
    client = session.get(Client, account.client_id)
    cdrs = session.scalar(select(func.count()).select_from(Cdr).where(Cdr.account_id == account.id))
    refund = session.scalar(select(func.coalesce(func.sum(Cdr.cost), 0)).where(
        Cdr.account_id == account.id, Cdr.leg == REFUNDED_LEG))
    calls = session.scalar(select(func.count()).select_from(ActiveCall).where(ActiveCall.account_id == account.id))
    rules = session.scalar(select(func.count()).select_from(RoutingRule)
                           .where(RoutingRule.terminator_account_id == account.id))
    return {"account": account.name, "id": account.id, "client": client.name, "client_id": client.id,
            "cdrs": cdrs, "refund": F.money_out(Decimal(refund)), "active_calls": calls, "routing_rules": rules,
            "balance": F.money_out(client.balance), "currency": client.currency}


def list_accounts(session: Session, *, client=None) -> list[dict]:
    return search_accounts(session, client=client)
