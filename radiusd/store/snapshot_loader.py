"""Reading the admin data into a `radiusd.core.snapshot.Snapshot`.

One plain Core SELECT per table (no ORM objects, no lazy loads): 1,000,000 accounts and
1,000,000 rates load in seconds. What makes that size fit: the collector is off while the records
are built (they hold no cycles: a collection would walk millions of young objects again and
again), and values that repeat are one shared object (`_Shared`: a few hundred prices and one
effective date among a million rates, tech prefixes, tags, client ids), so the column types'
conversions (money, aware UTC times) run once per distinct stored value. The store version is read
first, in the same transaction: if an admin change lands while we read, the version we report is
older than what we loaded, so the server's next version check simply loads again. On PostgreSQL
all tables come from one REPEATABLE READ transaction. Account passwords and NAS secrets are opened
here (radiusd.store.sealing): the clear values live only in this in-memory snapshot.
"""
from __future__ import annotations

import gc
from dataclasses import fields
from functools import partial
from itertools import chain
from sys import intern

from sqlalchemy import select, type_coerce
from sqlalchemy.types import NullType
from sqlalchemy.orm import Session, sessionmaker

from radiusd.core.snapshot import (
    AccountInfo,
    ClientInfo,
    NasInfo,
    Rate,
    RoutingPlanInfo,
    RoutingRuleInfo,
    Snapshot,
    build_rate_table,
    build_snapshot,
)
from radiusd.db import current_store_version
from radiusd.models import (
    Account,
    AccountNetwork,
    Client,
    Nas,
    RateTable,
    RoutingPlan,
    RoutingRule,
    account_gateways,
)
from radiusd.models import Rate as RateRow
from radiusd.store.sealing import Opener


_MISSING = object()


class _Shared:
    """One object per distinct value of a column, converted by the column's own type once: the
    rows carry the column's raw driver value (select `raw(column)`) and the first sight of each
    distinct value runs the type's result processing (Money: SQLite micro-units or PostgreSQL
    numeric -> Decimal; UTCDateTime: aware UTC). `types`: the driver's type code of each column."""

    def __init__(self, session: Session, column, types: dict):
        self.known: dict = {}
        dialect = session.get_bind().dialect
        self.process = column.type.dialect_impl(dialect).result_processor(dialect, types[column.name])

    def __call__(self, raw):
        value = self.known.get(raw, _MISSING)
        if value is _MISSING:
            value = self.known[raw] = raw if self.process is None or raw is None else self.process(raw)
        return value


def raw(column):
    """Select `column` as the driver returns it (no per-row type processing): see `_Shared`."""
    return type_coerce(column, NullType()).label(column.name)


STREAM_ROWS = 20_000


def _streamed(session: Session, statement):
    """(rows, the driver's type code of each column by name): the big tables (accounts, their
    networks, rates) come STREAM_ROWS at a time (a server-side cursor on PostgreSQL), so the
    driver's rows never all sit in memory beside the records made from them: the heap the workers
    share stays the records' size. Rows are taken a batch at a time, not by fetchone per row."""
    result = session.execute(statement.execution_options(yield_per=STREAM_ROWS))
    types = {entry[0]: entry[1] for entry in result.cursor.description}
    return chain.from_iterable(result.partitions()), types


def _nas(session: Session) -> list[NasInfo]:
    t = Nas.__table__
    rows = session.execute(select(
        t.c.id, t.c.name, t.c.address, t.c.secret, t.c.message_authenticator,
        t.c.message_authenticator_seen_at,
        t.c.dialect, t.c.caller_address_source, t.c.active,
    ).order_by(t.c.id)).all()
    opener = Opener(session)  # a NAS whose secret does not open is left out (logged, naming it)
    return [
        NasInfo(id=r.id, name=r.name, address=r.address, secret=secret.encode("utf-8"),
                message_authenticator=r.message_authenticator,
                message_authenticator_learned=r.message_authenticator_seen_at is not None,
                dialect=r.dialect, caller_address_source=r.caller_address_source, active=r.active)
        for r in rows if (secret := opener.open("nas", r.name, r.secret or "")) is not None
    ]


def _clients(session: Session) -> list[ClientInfo]:
    t = Client.__table__
    # ClientInfo's fields are the client columns of the same names
    rows = session.execute(select(*(t.c[f.name] for f in fields(ClientInfo))).order_by(t.c.id)).all()
    return [ClientInfo(**r._mapping) for r in rows]


def _accounts(session: Session) -> list[AccountInfo]:
    n = AccountNetwork.__table__
    networks: dict[int, list[str]] = {}
    cidrs, _ = _streamed(session, select(n.c.account_id, n.c.cidr).order_by(n.c.account_id, n.c.position, n.c.id))
    for account_id, cidr in cidrs:
        networks.setdefault(account_id, []).append(intern(cidr))   # accounts sharing an address share it

    g = account_gateways
    gateways: dict[int, set[int]] = {}
    for account_id, nas_id in session.execute(select(g.c.account_id, g.c.nas_id)).all():
        gateways.setdefault(account_id, set()).add(nas_id)

    t = Account.__table__
    rows, _ = _streamed(session, select(
        t.c.id, t.c.client_id, t.c.name, t.c.ident_by, t.c.tech_prefix, t.c.password, t.c.ani, t.c.active,
        t.c.max_call_duration, t.c.orig_enabled, t.c.orig_rate_table_id, t.c.orig_routing_plan_id, t.c.orig_tag, t.c.orig_capacity,
        t.c.term_enabled, t.c.term_rate_table_id, t.c.term_tag, t.c.term_capacity, t.c.term_protocol,
        t.c.term_proxy, t.c.term_port,
    ).order_by(t.c.id))
    open_password = partial(Opener(session).open, "account")  # clear only in this RAM snapshot
    empty_gateways: frozenset[int] = frozenset()
    no_networks: tuple[str, ...] = ()
    accounts = []
    append = accounts.append
    client_of = {}.setdefault   # one int object per client id
    # Positional arguments in AccountInfo's field order: this loop runs once per account.
    for (id_, client_id, name, ident_by, tech_prefix, password, ani, active, max_call_duration, orig_enabled,
         orig_rate_table_id,
         orig_routing_plan_id, orig_tag, orig_capacity, term_enabled, term_rate_table_id, term_tag,
         term_capacity, term_protocol, term_proxy, term_port) in rows:
        nets = networks.get(id_)
        gws = gateways.get(id_)
        append(AccountInfo(
            id_, client_of(client_id, client_id), name, intern(ident_by),
            tuple(nets) if nets else no_networks,
            intern(tech_prefix) if tech_prefix else "", open_password(name, password) if password else password, ani,
            frozenset(gws) if gws else empty_gateways,
            bool(active), max_call_duration, bool(orig_enabled), orig_rate_table_id,
            orig_routing_plan_id, intern(orig_tag) if orig_tag else "", orig_capacity, bool(term_enabled),
            term_rate_table_id, intern(term_tag) if term_tag else "", term_capacity,
            intern(term_protocol) if term_protocol else term_protocol, term_proxy, term_port,
        ))
    return accounts


def _rate_tables(session: Session):
    r = RateRow.__table__
    rates: dict[int, list[Rate]] = {}
    rows, types = _streamed(session, select(
        r.c.rate_table_id, r.c.prefix, raw(r.c.price_per_minute), raw(r.c.connection_fee), r.c.minimum_seconds,
        r.c.interval_seconds, r.c.grace_seconds, raw(r.c.effective_from), raw(r.c.effective_until),
        r.c.description,
    ))
    price_of, fee_of = _Shared(session, r.c.price_per_minute, types), _Shared(session, r.c.connection_fee, types)
    from_of, until_of = _Shared(session, r.c.effective_from, types), _Shared(session, r.c.effective_until, types)
    known_price, known_fee, known_from = price_of.known.get, fee_of.known.get, from_of.known.get
    for (table_id, prefix, price, fee, minimum, interval, grace, effective_from, effective_until,
         description) in rows:
        table_rates = rates.get(table_id)
        if table_rates is None:
            table_rates = rates[table_id] = []
        # the dictionary lookups inline (a million rows), the conversion on a first sight only
        price_value = known_price(price, _MISSING)
        if price_value is _MISSING:
            price_value = price_of(price)
        fee_value = known_fee(fee, _MISSING)
        if fee_value is _MISSING:
            fee_value = fee_of(fee)
        from_value = known_from(effective_from, _MISSING)
        if from_value is _MISSING:
            from_value = from_of(effective_from)
        # positional, in Rate's field order; prefixes repeat across tables, descriptions within them
        table_rates.append(Rate(
            table_id, intern(prefix) if prefix else "", price_value, fee_value, minimum, interval, grace,
            from_value, until_of(effective_until) if effective_until is not None else None,
            intern(description) if description else ""))
    t = RateTable.__table__
    return [
        build_rate_table(row.id, row.name, row.currency, rates.get(row.id, ()))
        for row in session.execute(select(t.c.id, t.c.name, t.c.currency).order_by(t.c.id)).all()
    ]


def _routing_plans(session: Session) -> list[RoutingPlanInfo]:
    r = RoutingRule.__table__
    rules: dict[int, list[RoutingRuleInfo]] = {}
    for row in session.execute(select(
        r.c.routing_plan_id, r.c.priority, r.c.prefix, r.c.terminator_account_id, r.c.share,
    ).order_by(r.c.routing_plan_id, r.c.priority, r.c.id)).all():
        rules.setdefault(row.routing_plan_id, []).append(
            RoutingRuleInfo(row.priority, row.prefix, row.terminator_account_id, row.share))
    t = RoutingPlan.__table__
    return [
        RoutingPlanInfo(row.id, row.name, tuple(rules.get(row.id, ())))
        for row in session.execute(select(t.c.id, t.c.name).order_by(t.c.id)).all()
    ]


def load_snapshot(session: Session) -> Snapshot:
    """Everything identification, rating and routing read, as one immutable snapshot."""
    return build_snapshot(
        version=current_store_version(session),   # first: see the module docstring
        nas=_nas(session),
        clients=_clients(session),
        accounts=_accounts(session),
        rate_tables=_rate_tables(session),
        routing_plans=_routing_plans(session),
    )


def load_snapshot_from(sessions: sessionmaker[Session]) -> Snapshot:
    """Open a read transaction, load the snapshot, end the transaction without writing."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        with sessions() as session:
            if session.get_bind().dialect.name == "postgresql":
                session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            return load_snapshot(session)   # closing the session ends the transaction unwritten
    finally:
        if collecting:
            gc.enable()
