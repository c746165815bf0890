"""Accounting in the store: load what a group of events needs, let the core decide, write the plan.

Every rule (which leg, which account, duration, cause, rate, cost, idempotency, the leg states)
lives in radiusd.core.accounting. Here, for each kind of caller:

- `apply_group(session, records, snapshot, now)`: Accounting-Requests in order, in the caller's
  transaction (the writer, radiusd.store.accounting_writer, groups many per transaction). Loads
  the open rows and reservations of the group's legs and which of its leg keys have a CDR (one
  round trip), folds the events over them, writes the plan (one round trip on PostgreSQL).
  Accounting-On/Off loads every row of its NAS instead. `apply` is a group of one.
- `close_stale` / `expire_reservations`: the sweeper (radiusd.store.sweeper).
- `remove_call`: `radiusd calls remove`.
- `forget_references`: a NAS or rate table deleted (the hot tables have no foreign keys to them).

Idempotent against other writers too: the CDR is written only when its leg key's claim in
`cdr_legs` is new (a concurrent duplicate claims nothing and debits nothing), and a row opened
for a leg another writer closed meanwhile is dropped. The statements are the SQL layer's
(radiusd.store.sql, area `accounting`), one set per dialect.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
from dataclasses import dataclass
from decimal import Decimal

import structlog
from sqlalchemy import exc as sa_exc
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from radiusd.core.accounting import (
    Close, Effects, Event, Leg, LegState, Plan, SnapshotView, View, call_id_of, fold, normalised,
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
        if table_id is None:
            return None
        if table_id not in self._tables:
            table = self.session.get(RateTable, table_id)
            rates = self.session.scalars(select(Rate).where(Rate.rate_table_id == table_id)).all()
            self._tables[table_id] = None if table is None else build_rate_table(table.id, table.name, table.currency, [
                RateInfo(r.rate_table_id, r.prefix, r.price_per_minute, r.connection_fee, r.minimum_seconds,
                         r.interval_seconds, r.grace_seconds, r.effective_from, r.effective_until, r.description)
                for r in rates])
        return self._tables[table_id]

    def currency(self, client_id: int | None) -> str:
        if client_id is None:
            return "USD"
        if client_id not in self._currencies:
            self._currencies[client_id] = self.session.scalar(
                select(Client.currency).where(Client.id == client_id)) or "USD"
        return self._currencies[client_id]

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
    anomaly of each CDR written (the server counts them).

    `commit=True` (PostgreSQL only; no transaction open on the session's connection): the group
    is its own transaction, begun with its first statement and committed with its last write
    (`BEGIN; load` and `writes; COMMIT`: two round trips), `lock_ms` its lock wait. Rolled back
    on any failure. Returns once committed. Cheapest on a connection kept in autocommit mode
    (the writer's)."""
    view = SnapshotView(snapshot)
    outcomes: list[Outcome] = []
    units: list[list[AcctFacts] | AcctFacts] = []   # runs of packets, and each Accounting-On/Off alone
    for facts in records:
        if facts.status in ("on", "off"):
            units.append(facts)
        elif units and isinstance(units[-1], list):
            units[-1].append(facts)
        else:
            units.append([facts])
    with _io(session, own=commit, lock_ms=lock_ms) as io:
        for n, unit in enumerate(units):
            io.final = n == len(units) - 1   # its write carries the COMMIT
            if isinstance(unit, list):
                outcomes += _packets(io, unit, now, view, limits, on_anomaly)
            else:
                outcomes.append(_nas_reset(io, unit, now, view, limits, on_anomaly))
        io.finish()
    return outcomes


def _packets(io, records: list[AcctFacts], now: dt.datetime, view: View, limits: Limits = DEFAULT_LIMITS,
             on_anomaly=None) -> list[Outcome]:
    records = [normalised(facts) for facts in records]
    legs = list(dict.fromkeys(facts.leg_key for facts in records))
    keys = legs + list(dict.fromkeys(reservation_key(facts.nas_id, call_id_of(facts))
                                     for facts in records if facts.leg == "orig"))
    rows, closed = io.load_group(keys, legs)
    plan, claimed = _write(io, fold(rows, closed, records, now, view, limits), on_anomaly)
    return [_outcome(effects, claimed) for effects in plan.effects]


def _nas_reset(io, facts: AcctFacts, now: dt.datetime, view: View, limits: Limits = DEFAULT_LIMITS,
               on_anomaly=None) -> Outcome:
    """Accounting-On/Off: every call the NAS had open ended at its time; its reservations are void."""
    rows = io.rows("nas", nas_id=facts.nas_id)
    plan, claimed = _write(io, fold(rows, io.closed([r.leg_key for r in rows]), [facts], now, view, limits),
                           on_anomaly)
    written = [cdr for cdr in plan.cdrs if cdr.leg_key in claimed]
    dropped = sum(1 for e in plan.effects if e.action == "released")
    log.info("nas_reset", nas_id=facts.nas_id, closed=len(written), reservations_dropped=dropped)
    return Outcome("nas_reset", cdrs=len(written), debited=sum((c.debit for c in written), Decimal(0)),
                   detail=f"{dropped} reservations dropped")


def close_stale(session: Session, cutoff: dt.datetime, limit: int, now: dt.datetime,
                limits: Limits = DEFAULT_LIMITS) -> tuple[int, int]:
    """Close up to `limit` calls not seen since `cutoff` (rows another sweeper holds are skipped).

    Returns (rows looked at, CDRs written)."""
    with _io(session) as io:
        rows = io.rows("stale", cutoff=cutoff, limit=limit)
        events = [(row.leg_key, Close(Event.EXPIRE, now)) for row in rows]
        plan, claimed = _write(io, fold(rows, io.closed([r.leg_key for r in rows]), events, now,
                                        StoreCatalog(session), limits))
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
        rows = io.rows("row", id=row_id)
        if not rows:
            return None
        [row] = rows
        plan, claimed = _write(io, fold(rows, io.closed([row.leg_key]), [(row.leg_key, Close(Event.REMOVE, now))],
                                        now, StoreCatalog(session)))
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


def _write(io, plan: Plan, on_anomaly=None) -> tuple[Plan, set[str]]:
    claimed = io.write(plan)
    for effects in plan.effects:
        if effects.unassigned:
            row = effects.row
            log.info("accounting_leg_unassigned", leg_key=row.leg_key, leg=row.leg, nas_id=row.nas_id)
    for cdr in plan.cdrs:
        if cdr.unrated and cdr.leg_key in claimed:
            log.warning("cdr_unrated", leg_key=cdr.leg_key, account_id=cdr.account_id, called=cdr.called)
        if cdr.flags and cdr.leg_key in claimed:
            log.warning("cdr_anomaly", leg_key=cdr.leg_key, nas_id=cdr.nas_id, flags=cdr.flags,
                        duration=cdr.duration, billed_seconds=cdr.billed_seconds)
            if on_anomaly is not None:
                for kind in cdr.flags.split(","):
                    on_anomaly(kind)
    return plan, claimed


def _outcome(effects: Effects, claimed: set[str]) -> Outcome:
    cdr = effects.cdr
    if cdr is None:
        return Outcome(effects.action)
    if cdr.leg_key not in claimed:
        return Outcome("duplicate")  # a concurrent duplicate wrote it first: it also debited
    return Outcome(effects.action, cdrs=1, debited=cdr.debit)


# -- one implementation per dialect: load the state, write the plan ----------------------------

def _io(session: Session, own: bool = False, lock_ms: int | None = None):
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        return _Pg(conn, own, lock_ms)
    if own:
        raise ValueError("apply_group(commit=True) is for PostgreSQL; commit the session instead")
    return _Lite(conn)


class _Lite:
    """SQLite (and the typed loads on every dialect): statements through SQLAlchemy, row at a time."""

    final = False

    def __init__(self, conn):
        self.conn = conn
        self.st = sql.statements(conn, "accounting")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def finish(self) -> None:
        """The caller commits."""

    def rows(self, name: str, **params) -> list[Leg]:
        return [Leg(**row._mapping) for row in self.conn.execute(self.st[name], params)]

    def closed(self, keys: list[str]) -> set[str]:
        return {key for (key,) in self.conn.execute(self.st["closed"], {"keys": keys})} if keys else set()

    def load_group(self, keys: list[str], legs: list[str]) -> tuple[list[Leg], set[str]]:
        return self.rows("legs", keys=keys), self.closed(legs)

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


def _values(record) -> dict:
    return {name: getattr(record, name) for name in record.__slots__}


class _Pg(_Lite):
    """PostgreSQL: the group's load and its writes are one round trip each, prepared statements
    fed arrays, through psycopg2's own cursor (no per-statement overhead).

    Owning the transaction (`own`), the driver connection is put in autocommit mode for the
    group and the transaction block is spelled out: BEGIN travels with the first statement,
    COMMIT with the last write (psycopg2 would send each as a round trip of its own)."""

    def __init__(self, conn, own: bool = False, lock_ms: int | None = None):
        super().__init__(conn)
        self.own = own
        self.lock_ms = lock_ms
        self.begun = False   # own: BEGIN sent, COMMIT/ROLLBACK not yet

    def __enter__(self):
        driver = sql.driver_connection(self.conn)
        self.cursor = driver.cursor()
        # a caller that keeps its connection in autocommit mode (the writer) saves psycopg2's
        # `SET default_transaction_isolation` round trip that each switch may send
        self.switched = self.own and not driver.autocommit
        if self.switched:
            driver.autocommit = True
        return self

    def __exit__(self, *exc) -> None:
        if self.own and self.begun:   # failed in the middle: leave no transaction (and no locks) behind
            try:
                self.cursor.execute(self.st["rollback"])
            except Exception:
                with contextlib.suppress(Exception):   # state unknown: never reuse it
                    self.conn.invalidate()
        if self.switched:
            with contextlib.suppress(Exception):
                sql.driver_connection(self.conn).autocommit = False
        with contextlib.suppress(Exception):  # the connection may be gone already
            self.cursor.close()

    def _opening(self) -> list:
        """What must precede the next statement: BEGIN (and the lock wait) once, when owning."""
        if not self.own or self.begun:
            return []
        self.begun = True
        parts = [self.st["begin"].encode()]
        if self.lock_ms is not None:
            parts.append(self.cursor.mogrify(sql.statement("postgresql", "timeouts", "local_lock"),
                                             {"ms": self.lock_ms}))
        return parts

    def _begin_alone(self) -> None:
        """Before a statement sent through SQLAlchemy (Accounting-On/Off loads)."""
        opening = self._opening()
        if opening:
            with self._errors():
                self.cursor.execute(b"; ".join(opening))

    def rows(self, name: str, **params) -> list[Leg]:
        self._begin_alone()
        return super().rows(name, **params)

    def closed(self, keys: list[str]) -> set[str]:
        self._begin_alone()
        return super().closed(keys)

    def finish(self) -> None:
        """Owning: COMMIT if the last write did not carry it."""
        if self.own and self.begun:
            with self._errors():
                self.cursor.execute(self.st["commit"])
            self.begun = False

    def load_group(self, keys: list[str], legs: list[str]) -> tuple[list[Leg], set[str]]:
        with self._errors():
            sql.prepare(sql.pool_connection(self.conn), self.cursor, "accounting")
            opening = self._opening()
            load = self.cursor.mogrify(self.st["load"].execute, (keys, legs))
            self.cursor.execute(b"; ".join(opening + [load]))
            fetched = self.cursor.fetchall()
        rows, closed = [], set()
        for done, *values in fetched:
            closed = set(done or ())
            if values[0] is None:
                continue  # no open call: the one row the outer join gives
            row = dict(zip(CALL_FIELDS, values))
            for name in _TIMES:  # aware UTC, as the models return them
                if row[name] is not None:
                    row[name] = row[name].astimezone(dt.timezone.utc)
            rows.append(Leg(**row))
        return rows, closed

    def write(self, plan: Plan) -> set[str]:
        st, cursor = self.st, self.cursor
        with self._errors():
            sql.prepare(sql.pool_connection(self.conn), cursor, "accounting")
            parts = []
            if plan.clients:
                parts.append(cursor.mogrify(st["lock_clients"].execute, (plan.clients,)))
            if plan.deletes:
                parts.append(cursor.mogrify(st["delete"].execute, (plan.deletes,)))
            for name, rows in (("update", plan.updates), ("insert", plan.inserts)):
                if rows:
                    parts.append(cursor.mogrify(st[name].execute, st[name].column_arrays(rows)))
            if plan.touched:
                parts.append(cursor.mogrify(st["ended"].execute, (plan.touched,)))
            committing = self.own and self.final
            if plan.cdrs:  # last before COMMIT: its result (or the setting it leaves) is returned
                cdrs = st["cdrs_noted" if committing else "cdrs"]
                parts.append(cursor.mogrify(cdrs.execute, cdrs.column_arrays(plan.cdrs)))
            if committing:
                parts = self._opening() + parts + [st["commit"].encode()]
                if plan.cdrs:
                    parts.append(st["written"].encode())
            if not parts:
                return set()
            cursor.execute(b"; ".join(parts))
            if committing:
                self.begun = False
                return set(json.loads(cursor.fetchone()[0])) if plan.cdrs else set()
            return {key for (key,) in cursor.fetchall()} if plan.cdrs else set()

    @contextlib.contextmanager
    def _errors(self):
        """Driver errors as SQLAlchemy reports them: its class (OperationalError = store away) and
        whether the connection is dead (then it must not go back to the pool)."""
        dialect = self.conn.dialect
        try:
            yield
        except dialect.loaded_dbapi.Error as exc:
            if getattr(exc, "pgcode", None) == "26000":
                # our prepared statements are gone (a pooler moved the session): prepare again next time
                sql.forget_prepared(sql.pool_connection(self.conn))
            lost = dialect.is_disconnect(exc, sql.driver_connection(self.conn), self.cursor)
            if lost:
                self.conn.invalidate(exc)
            raise sa_exc.DBAPIError.instance(None, None, exc, dialect.loaded_dbapi.Error,
                                             connection_invalidated=lost) from exc
