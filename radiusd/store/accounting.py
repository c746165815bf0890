"""Accounting in the store: load what a group of events needs, let the core decide, write the plan.

Every rule (which leg, which account, duration, cause, rate, cost, idempotency, the leg states)
lives in radiusd.core.accounting; the statements are the SQL layer's (radiusd.store.sql, area
`accounting`). Callers: `apply_group`/`apply` (group commit, radiusd.store.group_commit),
`close_stale`/`expire_reservations` (the sweeper), `remove_call` (`radiusd calls remove`),
`forget_references` (a NAS or rate table deleted: the hot tables have no foreign keys to them).

Idempotent against other writers too: the CDR is written only when its leg key's claim in
`cdr_legs` is new (a concurrent duplicate claims nothing and debits nothing), and a row opened
for a leg another writer closed meanwhile is dropped.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
from dataclasses import dataclass
from decimal import Decimal

import structlog
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from radiusd.core.accounting import (
    Close, Event, Leg, LegState, Plan, SnapshotView, View, call_id_of, fold, normalised,
)
from radiusd.core.facts import AcctFacts
from radiusd.core.sanity import DEFAULT_LIMITS, Limits
from radiusd.core.keys import reservation_key
from radiusd.core.snapshot import AccountInfo, RateTableInfo, Snapshot, build_rate_table
from radiusd.core.snapshot import Rate as RateInfo
from radiusd.models import ActiveCall, Cdr, Client, Rate, RateTable
from radiusd.store import sql
from radiusd.store.sql.accounting_shared import CALL_FIELDS

log = structlog.get_logger("radiusd.accounting")
_TIMES = tuple(n for n in CALL_FIELDS if n.endswith("_at"))


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one accounting event did (for logs, counters and tests)."""
    action: str          # opened | took_over | updated | closed | duplicate | ignored | nas_reset
    cdrs: int = 0        # CDRs written by this event
    debited: Decimal = Decimal(0)
    detail: str = ""


class StoreCatalog:
    """Rate tables and client currencies read from the store (sweeper and CLI run without a snapshot)."""

    def __init__(self, session: Session):
        self.session = session
        self._tables: dict[int, RateTableInfo | None] = {}
        self._currencies: dict[int, str] = {}

    def rate_table(self, table_id: int | None) -> RateTableInfo | None:
        if table_id is not None and table_id not in self._tables:
            table = self.session.get(RateTable, table_id)
            rates = self.session.scalars(select(Rate).where(Rate.rate_table_id == table_id)).all()
            self._tables[table_id] = None if table is None else build_rate_table(table.id, table.name, table.currency, [
                RateInfo(r.rate_table_id, r.prefix, r.price_per_minute, r.connection_fee, r.minimum_seconds,
                         r.interval_seconds, r.grace_seconds, r.effective_from, r.effective_until, r.description)
                for r in rates])
        return self._tables.get(table_id)

    def currency(self, client_id: int | None) -> str:
        if client_id is not None and client_id not in self._currencies:
            self._currencies[client_id] = self.session.scalar(
                select(Client.currency).where(Client.id == client_id)) or "USD"
        return self._currencies.get(client_id, "USD")

    def account(self, account_id: int | None) -> AccountInfo | None:
        return None  # only packets read accounts, and packets come with the server's snapshot

    def identify(self, facts: AcctFacts):
        raise TypeError("a packet's leg is identified from the server's snapshot (SnapshotView)")


# -- the events --------------------------------------------------------------------------------

def apply(session: Session, facts: AcctFacts, snapshot: Snapshot, now: dt.datetime,
          limits: Limits = DEFAULT_LIMITS, on_anomaly=None) -> Outcome:
    """Apply one accounting event in the caller's transaction. Idempotent per leg key."""
    return apply_group(session, [facts], snapshot, now, limits, on_anomaly)[0]


def apply_group(session: Session, records: list[AcctFacts], snapshot: Snapshot, now: dt.datetime,
                limits: Limits = DEFAULT_LIMITS, on_anomaly=None, *, commit: bool = False,
                lock_ms: int | None = None) -> list[Outcome]:
    """Apply records in order in the caller's transaction (no savepoints: any error fails the group).

    `limits`: the sanity bounds (radiusd.core.sanity); `on_anomaly(kind)` is called once per
    anomaly of each CDR written. `commit=True` (PostgreSQL, a connection in autocommit mode: the
    writer's): the group is its own transaction, BEGIN sent with its first statement and COMMIT
    with its last write, `lock_ms` its lock wait; rolled back on any failure."""
    view = SnapshotView(snapshot)
    units = []   # runs of packets (their legs loaded together), each Accounting-On/Off alone
    for reset, run in itertools.groupby(records, key=lambda facts: facts.status in ("on", "off")):
        units += [(_nas_reset, [facts]) for facts in run] if reset else [(_packets, list(run))]
    outcomes: list[Outcome] = []
    with _io(session, own=commit, lock_ms=lock_ms) as io:
        for step, unit in units:
            io.final = unit is units[-1][1]   # its write carries the COMMIT
            outcomes += step(io, unit, now, view, limits, on_anomaly)
    return outcomes


def _packets(io, records: list[AcctFacts], now: dt.datetime, view: View, limits: Limits,
             on_anomaly) -> list[Outcome]:
    records = [normalised(facts) for facts in records]
    legs = list(dict.fromkeys(facts.leg_key for facts in records))
    reservations = dict.fromkeys(reservation_key(f.nas_id, call_id_of(f)) for f in records if f.leg == "orig")
    plan, claimed = _settle(io, io.load("legs", legs, keys=legs + list(reservations)), records, now, view,
                            limits, on_anomaly)
    return [Outcome(e.action) if e.cdr is None
            else Outcome("duplicate") if e.cdr.leg_key not in claimed   # a concurrent duplicate wrote (and debited) it
            else Outcome(e.action, cdrs=1, debited=e.cdr.debit) for e in plan.effects]


def _nas_reset(io, records: list[AcctFacts], now: dt.datetime, view: View, limits: Limits,
               on_anomaly) -> list[Outcome]:
    """Accounting-On/Off: every call the NAS had open ended at its time; its reservations are void."""
    [facts] = records
    plan, claimed = _settle(io, io.load("nas", nas_id=facts.nas_id), records, now, view, limits, on_anomaly)
    written = [cdr for cdr in plan.cdrs if cdr.leg_key in claimed]
    dropped = sum(1 for e in plan.effects if e.action == "released")
    log.info("nas_reset", nas_id=facts.nas_id, closed=len(written), reservations_dropped=dropped)
    return [Outcome("nas_reset", cdrs=len(written), debited=sum((c.debit for c in written), Decimal(0)),
                    detail=f"{dropped} reservations dropped")]


def close_stale(session: Session, cutoff: dt.datetime, limit: int, now: dt.datetime,
                limits: Limits = DEFAULT_LIMITS) -> tuple[int, int]:
    """Close up to `limit` calls not seen since `cutoff` (rows another sweeper holds are skipped).

    Returns (rows looked at, CDRs written)."""
    with _io(session) as io:
        rows, closed = io.load("stale", cutoff=cutoff, limit=limit)
        events = [(row.leg_key, Close(Event.EXPIRE, now)) for row in rows]
        _, claimed = _settle(io, (rows, closed), events, now, StoreCatalog(session), limits)
    return len(rows), len(claimed)


def expire_reservations(session: Session, now: dt.datetime) -> int:
    """Delete Access-Accept reservations no Start took over before they expired (their clients'
    rows locked first, in id order, as admission locks them)."""
    conn, bind = session.connection(), session.get_bind()
    clients = list(conn.execute(sql.statement(bind, "accounting", "expired_clients"), {"now": now}).scalars())
    return conn.execute(sql.statement(bind, "accounting", "expired"), {"now": now, "clients": clients}).rowcount or 0


def remove_call(session: Session, row_id: int, now: dt.datetime) -> tuple[Leg, dict] | None:
    """End one open call or reservation by hand (charged like a Stop now). None: no such row.

    Returns (the row as it was, what was done: {'id', 'removed', 'cdr' | 'duration', 'cost'})."""
    with _io(session) as io:
        rows, closed = io.load("row", id=row_id)
        if not rows:
            return None
        [row] = rows
        plan, claimed = _settle(io, (rows, closed), [(row.leg_key, Close(Event.REMOVE, now))], now,
                                StoreCatalog(session))
    if row.state == LegState.RESERVED.value:
        return row, {"id": row_id, "removed": "reservation", "cdr": None}
    cdr = plan.effects[0].cdr
    return row, {"id": row_id, "removed": "call", "duration": cdr.duration if cdr else 0,
                 "cost": cdr.cost if cdr is not None and cdr.leg_key in claimed else None}


def forget_references(session: Session, *, nas_id: int | None = None, rate_table_id: int | None = None) -> None:
    """A NAS or rate table is being deleted: open calls and CDRs that name it keep no dangling id
    (what ON DELETE SET NULL did before those foreign keys were dropped from the hot tables)."""
    for column, value in (("nas_id", nas_id), ("rate_table_id", rate_table_id)):
        if value is not None:
            for model in (ActiveCall, Cdr):
                session.execute(update(model).where(getattr(model, column) == value).values({column: None}))


def _settle(io, loaded: tuple[list[Leg], set[str]], events: list, now: dt.datetime, view: View,
            limits: Limits = DEFAULT_LIMITS, on_anomaly=None) -> tuple[Plan, set[str]]:
    """Fold the events over the loaded rows and write the plan; returns it and the leg keys whose
    CDR this write claimed (the others were written, and debited, before)."""
    plan = fold(*loaded, events, now, view, limits)
    claimed = io.write(plan)
    for effects in plan.effects:
        if effects.unassigned:
            log.info("accounting_leg_unassigned", leg_key=effects.row.leg_key, leg=effects.row.leg,
                     nas_id=effects.row.nas_id)
    for cdr in plan.cdrs:
        if cdr.leg_key not in claimed:
            continue
        if cdr.unrated:
            log.warning("cdr_unrated", leg_key=cdr.leg_key, account_id=cdr.account_id, called=cdr.called)
        if cdr.flags:
            log.warning("cdr_anomaly", leg_key=cdr.leg_key, nas_id=cdr.nas_id, flags=cdr.flags,
                        duration=cdr.duration, billed_seconds=cdr.billed_seconds)
            for kind in cdr.flags.split(",") if on_anomaly is not None else ():
                on_anomaly(kind)
    return plan, claimed


# -- one implementation per dialect: load the state, write the plan ----------------------------

def _io(session: Session, own: bool = False, lock_ms: int | None = None):
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        return _Pg(conn, own, lock_ms)
    if own:
        raise ValueError("apply_group(commit=True) is for PostgreSQL; commit the session instead")
    return _Lite(conn)


def _values(record) -> dict:
    return {name: getattr(record, name) for name in record.__slots__}


class _Lite:
    """SQLite (and the rare loads on every dialect): typed statements through SQLAlchemy, row at a time."""

    final = False   # set by apply_group: the unit being written is the group's last

    def __init__(self, conn):
        self.conn = conn
        self.st = sql.statements(conn, "accounting")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def load(self, name: str, legs: list[str] | None = None, **params) -> tuple[list[Leg], set[str]]:
        """The rows statement `name` picks, and which of `legs` (default: theirs) have a CDR already."""
        rows = [Leg(**row._mapping) for row in self.conn.execute(self.st[name], params)]
        legs = [row.leg_key for row in rows] if legs is None else legs
        return rows, {key for (key,) in self.conn.execute(self.st["closed"], {"keys": legs})} if legs else set()

    def write(self, plan: Plan) -> set[str]:
        run, st = self.conn.execute, self.st
        for row_id in plan.deletes:
            run(st["delete"], {"id": row_id})
        for row in plan.updates + plan.inserts:
            run(st["update" if row.id is not None else "insert"], _values(row))
        claimed = set()
        for cdr in plan.cdrs:
            values = _values(cdr)
            if run(st["claim"], values).rowcount != 1:
                continue  # claimed before: written (and debited) then
            run(st["link"], {"cdr_id": run(st["cdr"], values).lastrowid, "leg_key": cdr.leg_key})
            if cdr.debit:
                run(st["debit"], {"cost": cdr.debit, "client_id": cdr.client_id})
            claimed.add(cdr.leg_key)
        return claimed


class _Pg(_Lite):
    """PostgreSQL: a group's load and its writes are one round trip each, prepared statements fed
    arrays, through psycopg2's own cursor (no per-statement overhead).

    Owning the transaction (`own`, the connection in autocommit mode) the transaction block is
    spelled out: BEGIN travels with the first statement, COMMIT with the last unit's write
    (psycopg2 would send each as a round trip of its own)."""

    def __init__(self, conn, own: bool = False, lock_ms: int | None = None):
        super().__init__(conn)
        self.cursor = sql.driver_connection(conn).cursor()
        self.own = own
        self.begun = False   # own: BEGIN sent, COMMIT/ROLLBACK not yet
        self.opening = [(self.st["begin"], None)] if own else []   # sent ahead of the first statement
        if own and lock_ms is not None:
            self.opening.append((sql.statement("postgresql", "timeouts", "local_lock"), {"ms": lock_ms}))

    def __exit__(self, *exc) -> None:
        if self.begun:   # failed in the middle: leave no transaction (and no locks) behind
            try:
                self.cursor.execute(self.st["rollback"])
            except Exception:
                with contextlib.suppress(Exception):   # state unknown: never reuse it
                    self.conn.invalidate()
        with contextlib.suppress(Exception):  # the connection may be gone already
            self.cursor.close()

    def _send(self, statements: list[tuple[str, object]]) -> list[tuple]:
        """(statement, parameters) in one round trip (after BEGIN, when owning and not sent yet);
        the last statement's rows. Driver errors are raised as SQLAlchemy's (OperationalError: the
        store is away), a dead connection invalidated (it must not go back to the pool)."""
        dialect = self.conn.dialect
        try:
            sql.prepare(sql.pool_connection(self.conn), self.cursor, "accounting")
            if self.opening:
                self.begun = True
                statements = self.opening + statements
                self.opening = []
            if not statements:
                return []
            self.cursor.execute(b"; ".join(self.cursor.mogrify(text, params) for text, params in statements))
            return self.cursor.fetchall() if self.cursor.description else []
        except dialect.loaded_dbapi.Error as exc:
            pool = sql.pool_connection(self.conn)   # (read before invalidate() drops it)
            lost = dialect.is_disconnect(exc, pool.driver_connection, self.cursor)
            error = sql.driver_error(exc, dialect, pool, None, invalidated=lost)
            if lost:
                self.conn.invalidate(exc)
            raise error from exc

    def load(self, name: str, legs: list[str] | None = None, **params) -> tuple[list[Leg], set[str]]:
        if name != "legs":   # the rare loads: typed statements sent by SQLAlchemy, after our BEGIN
            self._send([])
            return super().load(name, legs, **params)
        rows, closed = [], set()
        for done, *values in self._send([(self.st["load"].execute, (params["keys"], legs))]):
            closed = set(done or ())
            if values[0] is None:
                continue  # no open call: the one row the outer join gives
            row = dict(zip(CALL_FIELDS, values))
            # aware UTC, as the models return them
            row.update({name: row[name].astimezone(dt.timezone.utc) for name in _TIMES if row[name] is not None})
            rows.append(Leg(**row))
        return rows, closed

    def write(self, plan: Plan) -> set[str]:
        st = self.st
        committing = self.own and self.final
        steps = (("lock_clients", plan.clients), ("delete", plan.deletes), ("update", plan.updates),
                 ("insert", plan.inserts), ("ended", plan.touched), ("cdrs_noted", plan.cdrs))
        statements = [(st[name].execute, st[name].column_arrays(rows) if st[name].names else (rows,))
                      for name, rows in steps if rows]
        statements += [(st["commit"], None)] if committing else []
        statements += [(st["written"], None)] if plan.cdrs else []   # the leg keys `cdrs_noted` kept
        result = self._send(statements)
        if committing:
            self.begun = False
        return set(json.loads(result[0][0])) if plan.cdrs else set()
