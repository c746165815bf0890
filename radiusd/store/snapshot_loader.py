"""Reading the admin data into a `radiusd.core.snapshot.Snapshot`.

One plain Core SELECT per table (no ORM objects, no lazy loads): 100,000 accounts and 50,000
rates load in a few seconds. The store version is read first, in the same transaction: if an
admin change lands while we read, the version we report is older than what we loaded, so the
server's next version check simply loads again (never the other way round). On PostgreSQL
`load_snapshot_from` reads in one REPEATABLE READ transaction, so all tables come from one
consistent moment. Account passwords and NAS secrets are sealed in the store and opened here
(radiusd.store.sealing): the clear values live only in this in-memory snapshot.
"""
from __future__ import annotations

from sqlalchemy import select
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


def _all(session: Session, statement) -> list:
    # fetchall in one go: row-by-row fetching costs more than the rows themselves at this size
    return session.execute(statement).all()


def _nas(session: Session) -> list[NasInfo]:
    t = Nas.__table__
    rows = _all(session, select(
        t.c.id, t.c.name, t.c.address, t.c.secret, t.c.message_authenticator,
        t.c.message_authenticator_seen_at,
        t.c.dialect, t.c.caller_address_source, t.c.active,
    ).order_by(t.c.id))
    opener = Opener(session)  # a NAS whose secret does not open is left out (logged, naming it)
    opened = [(r, opener.nas_secret(r.name, r.secret)) for r in rows]
    return [
        NasInfo(
            id=r.id, name=r.name, address=r.address, secret=secret.encode("utf-8"),
            message_authenticator=r.message_authenticator or "auto",
            message_authenticator_learned=r.message_authenticator_seen_at is not None,
            dialect=r.dialect or "cisco", caller_address_source=r.caller_address_source or "h323-remote-address",
            active=bool(r.active),
        )
        for r, secret in opened if secret is not None
    ]


def _clients(session: Session) -> list[ClientInfo]:
    t = Client.__table__
    rows = _all(session, select(
        t.c.id, t.c.name, t.c.active, t.c.credit_limit, t.c.currency, t.c.orig_rate_table_id,
        t.c.term_rate_table_id, t.c.routing_plan_id, t.c.capacity, t.c.max_call_duration,
    ).order_by(t.c.id))
    return [
        ClientInfo(
            id=r.id, name=r.name, active=bool(r.active), credit_limit=r.credit_limit,
            currency=r.currency or "USD", orig_rate_table_id=r.orig_rate_table_id,
            term_rate_table_id=r.term_rate_table_id, routing_plan_id=r.routing_plan_id, capacity=r.capacity,
            max_call_duration=r.max_call_duration,
        )
        for r in rows
    ]


def _accounts(session: Session) -> list[AccountInfo]:
    n = AccountNetwork.__table__
    networks: dict[int, list[str]] = {}
    for account_id, cidr in _all(session,
        select(n.c.account_id, n.c.cidr).order_by(n.c.account_id, n.c.position, n.c.id)
    ):
        networks.setdefault(account_id, []).append(cidr)

    g = account_gateways
    gateways: dict[int, set[int]] = {}
    for account_id, nas_id in _all(session, select(g.c.account_id, g.c.nas_id)):
        gateways.setdefault(account_id, set()).add(nas_id)

    t = Account.__table__
    rows = _all(session, select(
        t.c.id, t.c.client_id, t.c.name, t.c.ident_by, t.c.tech_prefix, t.c.password, t.c.ani, t.c.active,
        t.c.max_call_duration, t.c.orig_enabled, t.c.orig_rate_table_id, t.c.orig_routing_plan_id, t.c.orig_tag, t.c.orig_capacity,
        t.c.term_enabled, t.c.term_rate_table_id, t.c.term_tag, t.c.term_capacity, t.c.term_protocol,
        t.c.term_proxy, t.c.term_port,
    ).order_by(t.c.id))
    open_password = Opener(session).account_password  # clear only in this RAM snapshot
    empty_gateways: frozenset[int] = frozenset()
    no_networks: tuple[str, ...] = ()
    accounts = []
    append = accounts.append
    # Positional arguments in AccountInfo's field order: this loop runs once per account.
    for (id_, client_id, name, ident_by, tech_prefix, password, ani, active, max_call_duration, orig_enabled,
         orig_rate_table_id,
         orig_routing_plan_id, orig_tag, orig_capacity, term_enabled, term_rate_table_id, term_tag,
         term_capacity, term_protocol, term_proxy, term_port) in rows:
        nets = networks.get(id_)
        gws = gateways.get(id_)
        append(AccountInfo(
            id_, client_id, name, ident_by,
            tuple(nets) if nets else no_networks,
            tech_prefix or "", open_password(name, password) if password else password, ani,
            frozenset(gws) if gws else empty_gateways,
            bool(active), max_call_duration, bool(orig_enabled), orig_rate_table_id, orig_routing_plan_id, orig_tag or "",
            orig_capacity, bool(term_enabled), term_rate_table_id, term_tag or "", term_capacity,
            term_protocol, term_proxy, term_port,
        ))
    return accounts


def _rate_tables(session: Session):
    r = RateRow.__table__
    rates: dict[int, list[Rate]] = {}
    for (table_id, prefix, price, fee, minimum, interval, grace, effective_from, effective_until,
         description) in _all(session, select(
            r.c.rate_table_id, r.c.prefix, r.c.price_per_minute, r.c.connection_fee, r.c.minimum_seconds,
            r.c.interval_seconds, r.c.grace_seconds, r.c.effective_from, r.c.effective_until, r.c.description,
         )):
        table_rates = rates.get(table_id)
        if table_rates is None:
            table_rates = rates[table_id] = []
        # positional, in Rate's field order
        table_rates.append(Rate(table_id, prefix or "", price, fee, minimum, interval, grace, effective_from,
                                effective_until, description or ""))
    t = RateTable.__table__
    return [
        build_rate_table(row.id, row.name, row.currency or "USD", rates.get(row.id, ()))
        for row in _all(session, select(t.c.id, t.c.name, t.c.currency).order_by(t.c.id))
    ]


def _routing_plans(session: Session) -> list[RoutingPlanInfo]:
    r = RoutingRule.__table__
    rules: dict[int, list[RoutingRuleInfo]] = {}
    for row in _all(session, select(
        r.c.routing_plan_id, r.c.priority, r.c.prefix, r.c.terminator_account_id, r.c.share,
    ).order_by(r.c.routing_plan_id, r.c.priority, r.c.id)):
        rules.setdefault(row.routing_plan_id, []).append(RoutingRuleInfo(
            priority=row.priority, prefix=row.prefix or "", terminator_account_id=row.terminator_account_id,
            share=row.share,
        ))
    t = RoutingPlan.__table__
    return [
        RoutingPlanInfo(row.id, row.name, tuple(rules.get(row.id, ())))
        for row in _all(session, select(t.c.id, t.c.name).order_by(t.c.id))
    ]


def load_snapshot(session: Session) -> Snapshot:
    """Everything identification, rating and routing read, as one immutable snapshot."""
    version = current_store_version(session)
    return build_snapshot(
        version=version,
        nas=_nas(session),
        clients=_clients(session),
        accounts=_accounts(session),
        rate_tables=_rate_tables(session),
        routing_plans=_routing_plans(session),
    )


def load_snapshot_from(sessions: sessionmaker[Session]) -> Snapshot:
    """Open a read transaction, load the snapshot, end the transaction without writing."""
    with sessions() as session:
        if session.get_bind().dialect.name == "postgresql":
            session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        try:
            return load_snapshot(session)
        finally:
            session.rollback()
