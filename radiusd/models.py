"""The store's tables: the single source of truth for the schema.

`schema/postgresql.sql` is generated from these models (`radiusd db schema`) and a test fails
when the two drift apart. The same models create the embedded SQLite store.

Money is always `Decimal`: NUMERIC(20,6) on PostgreSQL; on SQLite (which has no exact decimal
type) it is stored as an integer count of micro-units so that SQL arithmetic stays exact.
"""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    DDL,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    event,
    text,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from radiusd.core.message_authenticator import POLICIES as MESSAGE_AUTHENTICATOR_POLICIES

MONEY_SCALE = 6
_MICRO = Decimal(10) ** MONEY_SCALE


class Money(TypeDecorator):
    """Exact money: NUMERIC(20,6) on PostgreSQL, integer micro-units on SQLite."""

    impl = Numeric(20, MONEY_SCALE)
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(20, MONEY_SCALE, asdecimal=True))

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        value = Decimal(value)
        if dialect.name == "sqlite":
            return int((value * _MICRO).to_integral_value())
        return value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if dialect.name == "sqlite":
            return Decimal(int(value)) / _MICRO
        return Decimal(value)


class UTCDateTime(TypeDecorator):
    """timestamptz on PostgreSQL; on SQLite a naive UTC value. Always returns aware UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(dt.timezone.utc)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)


NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


NOW = text("CURRENT_TIMESTAMP")

IDENT_BY = ("ip", "name", "ani")
DIALECTS = ("cisco", "kamailio", "opensips", "yate", "generic")
CALLER_ADDRESS_SOURCES = ("h323-remote-address", "framed-ip-address", "nas-ip-address", "packet-source")
PROTOCOLS = ("sip", "h323")
LEGS = ("orig", "term")
CALL_STATES = ("reserved", "active")
CDR_RESULTS = ("success", "busy", "no_channel", "error")
WEB_ROLES = ("admin", "viewer")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class RateTable(Base):
    __tablename__ = "rate_tables"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    currency: Mapped[str] = mapped_column(String(3), server_default="USD")
    notes: Mapped[str] = mapped_column(Text, server_default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, server_default=NOW)

    rates: Mapped[list[Rate]] = relationship(back_populates="rate_table", cascade="all, delete-orphan")


class Rate(Base):
    """Price of calls to one destination prefix within a rate table, for a period."""

    __tablename__ = "rates"
    __table_args__ = (
        UniqueConstraint("rate_table_id", "prefix", "effective_from"),
        CheckConstraint("price_per_minute >= 0", name="price_not_negative"),
        CheckConstraint("connection_fee >= 0", name="fee_not_negative"),
        CheckConstraint("minimum_seconds >= 0", name="minimum_not_negative"),
        CheckConstraint("interval_seconds >= 1", name="interval_positive"),
        CheckConstraint("grace_seconds >= 0", name="grace_not_negative"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rate_table_id: Mapped[int] = mapped_column(ForeignKey("rate_tables.id", ondelete="CASCADE"), index=True)
    prefix: Mapped[str] = mapped_column(String(32))
    description: Mapped[str] = mapped_column(String(200), server_default="")
    price_per_minute: Mapped[Decimal] = mapped_column(Money)
    connection_fee: Mapped[Decimal] = mapped_column(Money, server_default="0")
    minimum_seconds: Mapped[int] = mapped_column(Integer, server_default="0")
    interval_seconds: Mapped[int] = mapped_column(Integer, server_default="1")
    grace_seconds: Mapped[int] = mapped_column(Integer, server_default="0")
    effective_from: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    effective_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    rate_table: Mapped[RateTable] = relationship(back_populates="rates")


class RoutingPlan(Base):
    __tablename__ = "routing_plans"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    notes: Mapped[str] = mapped_column(Text, server_default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, server_default=NOW)

    rules: Mapped[list[RoutingRule]] = relationship(
        back_populates="plan", cascade="all, delete-orphan", order_by="RoutingRule.priority"
    )


class RoutingRule(Base):
    """One ordered rule of a routing plan: calls to `prefix` ('' = any) go to a terminator account."""

    __tablename__ = "routing_rules"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    routing_plan_id: Mapped[int] = mapped_column(ForeignKey("routing_plans.id", ondelete="CASCADE"), index=True)
    priority: Mapped[int] = mapped_column(Integer, server_default="0")
    prefix: Mapped[str] = mapped_column(String(32), server_default="")
    terminator_account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    share: Mapped[int] = mapped_column(Integer, server_default="100")

    plan: Mapped[RoutingPlan] = relationship(back_populates="rules")


class Client(Base):
    """A carrier customer or vendor: holds the money and the client-level limits."""

    __tablename__ = "clients"
    __table_args__ = (
        CheckConstraint("capacity IS NULL OR capacity >= 0", name="capacity_not_negative"),
        CheckConstraint("max_call_duration IS NULL OR max_call_duration > 0", name="max_call_duration_positive"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    balance: Mapped[Decimal] = mapped_column(Money, server_default="0")
    # NULL credit limit = unlimited credit (max duration falls back to the configured cap).
    # No server default on purpose: "unlimited" must be said, and None through the ORM stays NULL.
    credit_limit: Mapped[Decimal | None] = mapped_column(Money)
    currency: Mapped[str] = mapped_column(String(3), server_default="USD")
    orig_rate_table_id: Mapped[int | None] = mapped_column(ForeignKey("rate_tables.id", ondelete="SET NULL"))
    term_rate_table_id: Mapped[int | None] = mapped_column(ForeignKey("rate_tables.id", ondelete="SET NULL"))
    routing_plan_id: Mapped[int | None] = mapped_column(ForeignKey("routing_plans.id", ondelete="SET NULL"))
    capacity: Mapped[int | None] = mapped_column(Integer)  # NULL = no client-level limit
    # Longest call answered for this client, seconds; NULL = no limit at this level. The Accept
    # answers the smallest of account, client and [limits] max_call_duration (core/authorize).
    max_call_duration: Mapped[int | None] = mapped_column(Integer)
    notes: Mapped[str] = mapped_column(Text, server_default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, server_default=NOW)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, server_default=NOW)
    # Usage counters, kept by the store's triggers on active_calls (never written by hand):
    # originating legs open (reserved or active) and the sum of their max_cost.
    open_calls: Mapped[int] = mapped_column(Integer, server_default="0")
    money_held: Mapped[Decimal] = mapped_column(Money, server_default="0")

    accounts: Mapped[list[Account]] = relationship(back_populates="client")


class Nas(Base):
    """A switch or gateway that talks RADIUS to us, known by source address or CIDR."""

    __tablename__ = "nas"
    __table_args__ = (
        CheckConstraint(_in("dialect", DIALECTS), name="dialect_known"),
        CheckConstraint(_in("caller_address_source", CALLER_ADDRESS_SOURCES), name="caller_source_known"),
        CheckConstraint(_in("message_authenticator", MESSAGE_AUTHENTICATOR_POLICIES),
                        name="message_authenticator_policy_known"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    address: Mapped[str] = mapped_column(String(64), unique=True)  # normalised CIDR, e.g. 10.0.0.1/32
    secret: Mapped[str] = mapped_column(String(2048))  # sealed (radiusd.secrets_at_rest), never clear
    # Access-Requests: yes | no | auto (radiusd.core.message_authenticator). Under auto the first
    # valid Message-Authenticator seen from the NAS is recorded in message_authenticator_seen_at
    # (written once, by the server) and from then on it is required.
    message_authenticator: Mapped[str] = mapped_column(String(4), server_default="auto")
    message_authenticator_seen_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    dialect: Mapped[str] = mapped_column(String(16), server_default="cisco")
    caller_address_source: Mapped[str] = mapped_column(String(32), server_default="h323-remote-address")
    active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    notes: Mapped[str] = mapped_column(Text, server_default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, server_default=NOW)


account_gateways = Table(
    "account_gateways",
    Base.metadata,
    Column("account_id", ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("nas_id", ForeignKey("nas.id", ondelete="CASCADE"), primary_key=True, index=True),
)


class Account(Base):
    """How a client's traffic is recognised (seed page: Accounts), with orig and term settings."""

    __tablename__ = "accounts"
    __table_args__ = (
        CheckConstraint(_in("ident_by", IDENT_BY), name="ident_by_known"),
        CheckConstraint("orig_capacity IS NULL OR orig_capacity >= 0", name="orig_capacity_not_negative"),
        CheckConstraint("term_capacity IS NULL OR term_capacity >= 0", name="term_capacity_not_negative"),
        CheckConstraint("term_port IS NULL OR (term_port BETWEEN 1 AND 65535)", name="term_port_range"),
        CheckConstraint("term_protocol IS NULL OR " + _in("term_protocol", PROTOCOLS), name="term_protocol_known"),
        CheckConstraint("ident_by <> 'ani' OR ani IS NOT NULL", name="ani_account_has_ani"),
        CheckConstraint("max_call_duration IS NULL OR max_call_duration > 0", name="max_call_duration_positive"),
        Index(
            "uq_accounts_ani_identity", "ani", "tech_prefix", unique=True,
            postgresql_where=text("ident_by = 'ani'"), sqlite_where=text("ident_by = 'ani'"),
        ),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="RESTRICT"), index=True)
    # The account name; for ident_by=name it is also the login (User-Name).
    name: Mapped[str] = mapped_column(String(100), unique=True)
    ident_by: Mapped[str] = mapped_column(String(8))
    ani: Mapped[str | None] = mapped_column(String(64))
    tech_prefix: Mapped[str] = mapped_column(String(32), server_default="")
    password: Mapped[str | None] = mapped_column(String(2048))  # sealed (radiusd.secrets_at_rest)
    active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    notes: Mapped[str] = mapped_column(Text, server_default="")
    # Longest call answered for this account, seconds; NULL = no limit at this level.
    max_call_duration: Mapped[int | None] = mapped_column(Integer)
    # Originator settings: the account sends calls to us.
    orig_enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    orig_rate_table_id: Mapped[int | None] = mapped_column(ForeignKey("rate_tables.id", ondelete="SET NULL"))
    orig_routing_plan_id: Mapped[int | None] = mapped_column(ForeignKey("routing_plans.id", ondelete="SET NULL"))
    orig_tag: Mapped[str] = mapped_column(String(64), server_default="")
    orig_capacity: Mapped[int | None] = mapped_column(Integer)
    # Terminator settings: we send calls to the account.
    term_enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    term_rate_table_id: Mapped[int | None] = mapped_column(ForeignKey("rate_tables.id", ondelete="SET NULL"))
    term_tag: Mapped[str] = mapped_column(String(64), server_default="")
    term_capacity: Mapped[int | None] = mapped_column(Integer)
    term_protocol: Mapped[str | None] = mapped_column(String(8))
    term_proxy: Mapped[str | None] = mapped_column(String(255))
    term_port: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, server_default=NOW)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, server_default=NOW)

    client: Mapped[Client] = relationship(back_populates="accounts")
    networks: Mapped[list[AccountNetwork]] = relationship(
        back_populates="account", cascade="all, delete-orphan", order_by="AccountNetwork.position"
    )
    gateways: Mapped[list[Nas]] = relationship(secondary=account_gateways, order_by="Nas.id")


class AccountNetwork(Base):
    """One entry of an IP-identified account's `;`-list, stored as a normalised CIDR."""

    __tablename__ = "account_networks"
    __table_args__ = (UniqueConstraint("account_id", "cidr"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    cidr: Mapped[str] = mapped_column(String(64), index=True)
    position: Mapped[int] = mapped_column(Integer, server_default="0")

    account: Mapped[Account] = relationship(back_populates="networks")


class ActiveCall(Base):
    """A call leg authorized (state=reserved, until expires_at) or started and not yet stopped.

    Every row counts against capacity. The row is deleted when the leg's CDR is written.

    Every accounting Start inserts a row and every Stop deletes it, so the table carries only
    what a query needs: foreign keys on `account_id` and `client_id` (admission learns from their
    failure, SQLSTATE 23503, that a client or account was deleted since the snapshot; deleting
    one removes its calls), none on `nas_id` and `rate_table_id` (each insert would check and
    KEY SHARE-lock the NAS row every call shares); deleting a NAS or rate table clears them
    (radiusd.store.accounting.forget_references).
    """

    __tablename__ = "active_calls"
    __table_args__ = (
        CheckConstraint(_in("leg", LEGS), name="leg_known"),
        CheckConstraint(_in("state", CALL_STATES), name="state_known"),
        Index("ix_active_calls_reserved_expiry", "expires_at",
              postgresql_where=text("state = 'reserved'"), sqlite_where=text("state = 'reserved'")),
        Index("ix_active_calls_nas_open", "nas_id",
              postgresql_where=text("state = 'active'"), sqlite_where=text("state = 'active'")),
        # admission deletes the expired reservations of the clients it locked
        Index("ix_active_calls_client_reserved_expiry", "client_id", "expires_at",
              postgresql_where=text("state = 'reserved'"), sqlite_where=text("state = 'reserved'")),
    )
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    # Idempotency key of the leg: NAS + Acct-Session-Id (+ Acct-Unique-Session-Id); for a
    # reservation made at Access-Accept, 'auth:' + NAS + call id until a Start takes it over.
    leg_key: Mapped[str] = mapped_column(String(255), unique=True)
    call_id: Mapped[str] = mapped_column(String(255))
    acct_session_id: Mapped[str | None] = mapped_column(String(255))
    nas_id: Mapped[int | None] = mapped_column(Integer)   # nas.id (no foreign key: see above)
    leg: Mapped[str] = mapped_column(String(4), server_default="orig")
    state: Mapped[str] = mapped_column(String(8))
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    client_id: Mapped[int | None] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"), index=True)
    caller: Mapped[str] = mapped_column(String(64), server_default="")
    called: Mapped[str] = mapped_column(String(64), server_default="")
    rate_table_id: Mapped[int | None] = mapped_column(Integer)   # rate_tables.id (no foreign key)
    prefix: Mapped[str | None] = mapped_column(String(32))
    max_cost: Mapped[Decimal] = mapped_column(Money, server_default="0")  # worst case, for exposure
    max_duration: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    # Acct-Session-Time is a 32-bit unsigned counter: 2^32 - 1 must fit
    session_seconds: Mapped[int] = mapped_column(BigInteger, server_default="0")
    setup_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # the switch's setup time
    # anomalies corrected in its Start/Interims so far, carried to the CDR (radiusd.core.sanity kinds)
    flags: Mapped[str] = mapped_column(String(128), server_default="")


class AccountUsage(Base):
    """An account's originating legs open (reserved or active), kept by the store's triggers on
    active_calls (never written by hand). Its own narrow table rather than a column of the wide,
    large `accounts`: it changes with every call. No row = 0; no foreign key (a deleted account's
    row is harmless and costs no check per call)."""

    __tablename__ = "account_usage"
    account_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    open_calls: Mapped[int] = mapped_column(Integer, server_default="0")


class Cdr(Base):
    """One finished, rated call leg.

    On PostgreSQL the table is partitioned by month of `disconnect_time` (radiusd.store.partitions:
    a DEFAULT partition `cdrs_default` plus `cdrs_YYYY_MM` created ahead). PostgreSQL wants every
    unique key of a partitioned table to contain the partition key, so the primary key there is
    (id, disconnect_time) and the one-CDR-per-leg rule lives in `cdr_legs` (CdrLeg).

    No foreign keys: a CDR is history, written once per call leg by accounting, and each key
    would cost a check and a KEY SHARE lock of the NAS/account/client/rate table row per CDR.
    Deleting an account deletes its CDRs (radiusd.admin.accounts), a client with CDRs is never
    deleted, deleting a NAS or rate table clears them (radiusd.store.accounting.forget_references).
    No index on `leg_key`: the leg's CDR is found through `cdr_legs` (cdr_id, disconnect_time).
    """

    __tablename__ = "cdrs"
    __table_args__ = (
        CheckConstraint(_in("leg", LEGS), name="leg_known"),
        CheckConstraint(_in("result", CDR_RESULTS), name="result_known"),
        Index("ix_cdrs_client_time", "client_id", "disconnect_time"),
        Index("ix_cdrs_account_time", "account_id", "disconnect_time"),
        Index("ix_cdrs_nas_time", "nas_id", "disconnect_time"),
        {"postgresql_partition_by": "RANGE (disconnect_time)", "info": {"partition_key": ("disconnect_time",)}},
    )
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    leg_key: Mapped[str] = mapped_column(String(255))  # unique through cdr_legs
    call_id: Mapped[str] = mapped_column(String(255), index=True)
    acct_session_id: Mapped[str | None] = mapped_column(String(255))
    nas_id: Mapped[int | None] = mapped_column(Integer)         # nas.id
    leg: Mapped[str] = mapped_column(String(4))
    account_id: Mapped[int | None] = mapped_column(Integer)     # accounts.id
    client_id: Mapped[int | None] = mapped_column(Integer)      # clients.id
    caller: Mapped[str] = mapped_column(String(64), server_default="")
    called: Mapped[str] = mapped_column(String(64), server_default="")  # tech prefix stripped
    tech_prefix: Mapped[str] = mapped_column(String(32), server_default="")
    remote_address: Mapped[str | None] = mapped_column(String(64))
    setup_time: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    connect_time: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    disconnect_time: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    duration: Mapped[int] = mapped_column(BigInteger, server_default="0")   # as reported: 32-bit unsigned
    billed_seconds: Mapped[int] = mapped_column(BigInteger, server_default="0")
    disconnect_cause: Mapped[str] = mapped_column(String(32), server_default="")
    result: Mapped[str] = mapped_column(String(12))
    rate_table_id: Mapped[int | None] = mapped_column(Integer)  # rate_tables.id
    prefix: Mapped[str | None] = mapped_column(String(32))
    price_per_minute: Mapped[Decimal | None] = mapped_column(Money)
    cost: Mapped[Decimal] = mapped_column(Money, server_default="0")
    currency: Mapped[str] = mapped_column(String(3), server_default="USD")
    # anomalies corrected on the way in, comma separated (radiusd.core.sanity kinds); "" = none
    flags: Mapped[str] = mapped_column(String(128), server_default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, server_default=NOW)


class CdrLeg(Base):
    """Idempotency registry: one row per call leg whose CDR was written (leg_key is the key).

    Accounting claims the leg key here (INSERT ... ON CONFLICT DO NOTHING) and writes the CDR only
    when the claim is new, in the same transaction, so a leg gets one CDR however often its Stop
    arrives, whichever partition the CDR lands in, and whatever disconnect time a later Stop gives.
    Rows are kept when CDRs are deleted (account delete, archiving a partition): a late
    retransmitted Stop of such a leg must stay a no-op, not write the CDR again.
    `cdr_id` + `disconnect_time` find the CDR (one partition).
    """

    __tablename__ = "cdr_legs"
    leg_key: Mapped[str] = mapped_column(String(255), primary_key=True)
    cdr_id: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    disconnect_time: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, server_default=NOW)


@compiles(PrimaryKeyConstraint, "postgresql")
def _primary_key_with_partition_key(constraint, compiler, **kw):
    """On PostgreSQL a partitioned table's primary key must contain the partition key columns."""
    sql = compiler.visit_primary_key_constraint(constraint, **kw)
    extra = [name for name in constraint.table.info.get("partition_key", ()) if name not in constraint.columns]
    if not extra or not sql.endswith(")"):
        return sql
    return sql[:-1] + ", " + ", ".join(compiler.preparer.quote(name) for name in extra) + ")"


# A partitioned table takes no rows until a partition holds them: the DEFAULT partition makes
# sure a CDR insert never fails, whatever its date (monthly partitions are created ahead).
CDR_DEFAULT_PARTITION = "CREATE TABLE IF NOT EXISTS cdrs_default PARTITION OF cdrs DEFAULT"
event.listen(Cdr.__table__, "after_create", DDL(CDR_DEFAULT_PARTITION).execute_if(dialect="postgresql"))


class AuditEntry(Base):
    """One admin change: who changed what, from where, and the field-level diff (secrets redacted)."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_object", "object_type", "object_id"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    object_type: Mapped[str] = mapped_column(String(32))
    object_id: Mapped[int | None] = mapped_column(Integer)
    object_name: Mapped[str] = mapped_column(String(200), server_default="")
    action: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(100))
    context: Mapped[str] = mapped_column(String(16))  # cli / seed / web / api
    changes: Mapped[str] = mapped_column(Text, server_default="{}")  # JSON: {field: [before, after]}


class WebUser(Base):
    """A person or program allowed into the web admin and the API (radiusd.admin.users)."""

    __tablename__ = "web_users"
    __table_args__ = (CheckConstraint(_in("role", WEB_ROLES), name="role_known"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))  # argon2id, with its parameters and salt
    role: Mapped[str] = mapped_column(String(8))
    active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, server_default=NOW)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, server_default=NOW)


class ApiToken(Base):
    """A bearer token of the API, acting as its user with the user's role.

    Only the SHA-256 of the token is kept: the token is shown once, when issued. (A fast hash is
    enough here: the token is 256 random bits, not a password someone chose.)
    """

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("web_users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # hex SHA-256
    label: Mapped[str] = mapped_column(String(100), server_default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, server_default=NOW)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class StoreVersion(Base):
    """A counter the admin module bumps on every change: servers reload their snapshot when it moves."""

    __tablename__ = "store_version"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, server_default="0")
    changed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, server_default=NOW)
