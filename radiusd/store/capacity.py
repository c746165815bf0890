"""Capacity and money at Access-Request time: atomic check-and-reserve, many calls per transaction.

`reserve_batch` is the only place an Access-Accept is decided against live numbers. In ONE
transaction it locks the rows of the clients whose limits need live numbers, reads what those
clients and their accounts already have open (active calls + unexpired reservations,
originating legs only) and their balances, asks the pure `radiusd.core.authorize.admit` for each
call in arrival order — counting the calls admitted earlier in the same batch — and records every
accepted call's reservation (which the later Accounting-Start takes over, radiusd.store.accounting)
with one multi-row upsert. Because every check for a client runs under that client's lock, N
radiusd processes sharing one PostgreSQL never admit more calls than the capacity, nor spend the
same balance twice. `reserve_call` is the one-call form; `ReservationBatcher` is the thread that
feeds queued Access-Requests to `reserve_batch`.

- PostgreSQL: `SELECT ... ORDER BY id FOR NO KEY UPDATE` on the clients' rows — always in id
  order, so two batches (two workers, two hosts) lock in the same order and cannot deadlock each
  other. NO KEY UPDATE serialises reservers and balance debits (an UPDATE of the balance takes
  the same lock) but not the foreign-key checks of rows inserted for the client. The counts are
  read by a *new* statement afterwards, so under READ COMMITTED they see every reservation
  committed by whoever held a lock before us.
- A batch holds several client locks at once, while an accounting group commit debits clients in
  arrival order: the two could deadlock. The batch therefore waits at most LOCK_WAIT_MS for a
  lock; past that (or on a deadlock report) it is undone and decided again one client per
  transaction — a transaction holding one lock cannot take part in such a cycle.
- Clients and accounts without any limit (no capacity, unlimited credit) need no live numbers:
  `admit` accepts them without looking, so they are neither locked nor counted; their
  reservations are still written (the Accounting-Start takes them over; `calls list` shows them).
- Round trips (PostgreSQL, psycopg2): one kept connection in autocommit mode, statements
  PREPAREd once per connection. A batch with limited clients is two round trips
  (`BEGIN; SET LOCAL ...; EXECUTE lock; EXECUTE usage` then `EXECUTE upsert; COMMIT`), a batch
  without limits one (`SET LOCAL ...; EXECUTE upsert`, one implicit transaction). The upsert
  sends the rows as array literals that `unnest` turns back into rows.
- Reservation commits do not wait for the WAL flush (`SET LOCAL synchronous_commit = off`,
  PostgreSQL): a reservation is ephemeral (it expires after `reservation_ttl`) and moves no money;
  locks and visibility are unchanged, so the capacity check stays exact while PostgreSQL runs.
  If PostgreSQL itself crashes, reservations committed in its last few hundred milliseconds can
  be lost: capacity is under-counted for those calls until their Accounting-Starts arrive (or the
  reservations would have expired anyway). Accounting stays fully synchronous.
- SQLite: radiusd.db begins every transaction with BEGIN IMMEDIATE, which already serialises
  writers on the whole database (FOR UPDATE is ignored there).

Store errors (PostgreSQL down ...) propagate to the caller (`reserve_call` raises; the batcher
hands the exception to each waiting request): the edge answers Reject 8 (service unavailable).
"""
from __future__ import annotations

import datetime as dt
import queue
import threading
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Callable, Sequence

from sqlalchemy import and_, func, or_, select, type_coerce
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from radiusd.config import Settings
from radiusd.core.authorize import admit
from radiusd.core.decision import Accept, CallPlan, Reject, Usage
from radiusd.core.reasons import RejectReason
from radiusd.models import Account, ActiveCall, Client, Money

LOCK_WAIT_MS = 100          # longest wait for a client lock inside a multi-client batch
MAX_BATCH = 64              # Access-Requests decided in one transaction
_NO_USAGE = Usage(balance=Decimal(0), account_calls=0, client_calls=0, exposure=Decimal(0))
_RETRY_ONE_BY_ONE = {"55P03", "40P01", "40001"}   # lock_not_available, deadlock, serialization

Decision = Accept | Reject


def reservation_key(nas_id: int, call_id: str) -> str:
    """leg_key of the reservation made at Access-Accept; a Start with the same call id takes it."""
    return f"auth:{nas_id}:{call_id}"


def open_legs_filter(now: dt.datetime, leg: str = "orig"):
    """Rows that count against capacity at `now`: started calls and unexpired reservations."""
    return and_(
        ActiveCall.leg == leg,
        or_(ActiveCall.state == "active", and_(ActiveCall.state == "reserved", ActiveCall.expires_at > now)),
    )


def read_usage(session: Session, client_id: int, account_id: int, now: dt.datetime,
               balance: Decimal, exclude_key: str | None = None) -> Usage:
    """The client's live numbers. Call with the client's row locked (see module docstring)."""
    conditions = [ActiveCall.client_id == client_id, open_legs_filter(now)]
    if exclude_key is not None:
        conditions.append(ActiveCall.leg_key != exclude_key)
    row = session.execute(
        select(
            func.count(ActiveCall.id),
            type_coerce(func.coalesce(func.sum(ActiveCall.max_cost), 0), Money()),
            func.count(ActiveCall.id).filter(ActiveCall.account_id == account_id),
        ).where(*conditions)
    ).one()
    client_calls, exposure, account_calls = row
    return Usage(balance=balance, account_calls=int(account_calls), client_calls=int(client_calls),
                 exposure=Decimal(exposure))


def terminator_usage(session: Session, account_ids, now: dt.datetime) -> dict[int, int]:
    """Open terminating legs per terminator account (for routing decisions and `calls list`)."""
    ids = list(account_ids)
    if not ids:
        return {}
    rows = session.execute(
        select(ActiveCall.account_id, func.count(ActiveCall.id))
        .where(ActiveCall.account_id.in_(ids), open_legs_filter(now, leg="term"))
        .group_by(ActiveCall.account_id)
    ).all()
    return {account_id: int(count) for account_id, count in rows}


def needs_usage(plan: CallPlan) -> bool:
    """Whether `admit` looks at live numbers for this call (any capacity or a credit limit)."""
    return (plan.account.orig_capacity is not None or plan.client.capacity is not None
            or plan.client.credit_limit is not None)


# --- deciding a batch (both stores) ------------------------------------------------------------

@dataclass(slots=True)
class _Item:
    plan: CallPlan
    now: dt.datetime
    key: str
    call_id: str


def _item(plan: CallPlan, now: dt.datetime) -> _Item:
    from radiusd.store.accounting import fit_key  # accounting imports this module: resolve late

    call_id = fit_key(plan.call_id) if plan.call_id else f"noid-{uuid.uuid4().hex}"
    return _Item(plan, now, reservation_key(plan.nas_id, call_id), call_id)


class _Usage:
    """Live numbers of the locked clients, kept up to date while a batch is decided.

    `base_*` are the open legs not touched by this batch; the rows whose leg_key some call of the
    batch would replace (re-auth) are kept one by one in `keyed`, so each call is counted without
    its own earlier reservation — exactly as if the calls had been decided one after the other.
    """

    def __init__(self):
        self.balances: dict[int, Decimal] = {}
        self.base_client: dict[int, int] = {}
        self.base_account: dict[tuple[int, int], int] = {}
        self.base_exposure: dict[int, Decimal] = {}
        self.keyed: dict[str, tuple[int | None, int | None, Decimal]] = {}

    def add_open(self, client_id: int, account_id: int | None, count: int, exposure) -> None:
        self.base_client[client_id] = self.base_client.get(client_id, 0) + int(count)
        self.base_account[(client_id, account_id)] = int(count)
        self.base_exposure[client_id] = self.base_exposure.get(client_id, Decimal(0)) + Decimal(exposure or 0)

    def usage(self, plan: CallPlan, key: str) -> Usage:
        client_id, account_id = plan.client.id, plan.account.id
        client_calls = self.base_client.get(client_id, 0)
        account_calls = self.base_account.get((client_id, account_id), 0)
        exposure = self.base_exposure.get(client_id, Decimal(0))
        for other, (c, a, cost) in self.keyed.items():
            if c == client_id and other != key:
                client_calls += 1
                exposure += cost
                if a == account_id:
                    account_calls += 1
        return Usage(self.balances[client_id], account_calls, client_calls, exposure)


def _admit_all(items: list[_Item], settings: Settings, usage: _Usage | None, limited: list[int],
               missing_clients: set[int], missing_accounts: set[int]) -> tuple[list[Decision], dict[str, tuple]]:
    """`admit` for each call in arrival order; accepted calls count against the later ones.
    Returns the decisions and the reservations to write, one per leg_key (a later re-auth of the
    same call in the batch replaces the earlier one)."""
    decisions: list[Decision] = []
    accepted: dict[str, tuple[_Item, Accept]] = {}
    missing_clients = missing_clients | (set(limited) - usage.balances.keys() if usage is not None else set(limited))
    for item in items:
        plan = item.plan
        client_id = plan.client.id
        if client_id in missing_clients:  # deleted since the snapshot was built
            decisions.append(Reject(RejectReason.UNKNOWN_ACCOUNT, plan.account.id, client_id, "client not in store"))
            continue
        if plan.account.id in missing_accounts:
            decisions.append(Reject(RejectReason.UNKNOWN_ACCOUNT, plan.account.id, client_id, "account not in store"))
            continue
        counted = usage is not None and client_id in usage.balances
        decision = admit(plan, usage.usage(plan, item.key) if counted else _NO_USAGE, settings.max_call_duration)
        if isinstance(decision, Accept):
            accepted[item.key] = (item, decision)
            if usage is not None:
                usage.keyed[item.key] = (client_id, plan.account.id, decision.max_cost)
        decisions.append(decision)
    return decisions, accepted


def _limited(items: list[_Item]) -> list[int]:
    return sorted({item.plan.client.id for item in items if needs_usage(item.plan)})


# --- SQLAlchemy (SQLite; any store) -------------------------------------------------------------

_ROW_COLUMNS = ("leg_key", "call_id", "acct_session_id", "nas_id", "leg", "state", "account_id", "client_id",
                "caller", "called", "rate_table_id", "prefix", "max_cost", "max_duration", "created_at",
                "expires_at", "started_at", "last_seen_at", "session_seconds")
_UPSERTS: dict[str, object] = {}


def _upsert_statement(dialect: str):
    """INSERT ... ON CONFLICT (leg_key) DO UPDATE, built once per dialect."""
    stmt = _UPSERTS.get(dialect)
    if stmt is None:
        if dialect == "postgresql":
            insert = postgresql.insert(ActiveCall.__table__)
        elif dialect == "sqlite":
            insert = sqlite.insert(ActiveCall.__table__)
        else:  # pragma: no cover - the store is PostgreSQL or SQLite
            raise RuntimeError(f"unsupported store dialect {dialect}")
        stmt = insert.on_conflict_do_update(
            index_elements=["leg_key"],
            set_={name: insert.excluded[name] for name in _ROW_COLUMNS if name != "leg_key"},
        )
        if dialect == "postgresql":   # with RETURNING, all rows go as ONE statement (insertmanyvalues)
            stmt = stmt.returning(ActiveCall.__table__.c.id)
        _UPSERTS[dialect] = stmt
    return stmt


def _reservation_row(item: _Item, decision: Accept, ttl: int) -> dict:
    plan, now = item.plan, item.now
    return dict(
        leg_key=item.key, call_id=item.call_id, acct_session_id=None, nas_id=plan.nas_id, leg="orig",
        state="reserved", account_id=plan.account.id, client_id=plan.client.id,
        caller=(plan.calling_number or "")[:64], called=(plan.called_number or "")[:64],
        rate_table_id=plan.rate_table.id, prefix=plan.rate.prefix, max_cost=decision.max_cost,
        max_duration=decision.max_duration, created_at=now, expires_at=now + dt.timedelta(seconds=ttl),
        started_at=None, last_seen_at=now, session_seconds=0,
    )


def _existing(conn, model, ids: set[int]) -> set[int]:
    if not ids:
        return set()
    return set(conn.scalars(select(model.id).where(model.id.in_(sorted(ids)))))


def _sql_read_usage(conn, items: list[_Item], limited: list[int]) -> _Usage:
    state = _Usage()
    state.balances = dict(conn.execute(
        select(Client.id, Client.balance).where(Client.id.in_(limited)).order_by(Client.id)
        .with_for_update(key_share=True)
    ).all())
    if not state.balances:
        return state
    keys = [item.key for item in items]
    now = max(item.now for item in items)
    for client_id, account_id, count, exposure in conn.execute(
        select(ActiveCall.client_id, ActiveCall.account_id, func.count(ActiveCall.id),
               type_coerce(func.coalesce(func.sum(ActiveCall.max_cost), 0), Money()))
        .where(ActiveCall.client_id.in_(list(state.balances)), open_legs_filter(now), ActiveCall.leg_key.not_in(keys))
        .group_by(ActiveCall.client_id, ActiveCall.account_id)
    ):
        state.add_open(client_id, account_id, count, exposure)
    for key, client_id, account_id, cost in conn.execute(
        select(ActiveCall.leg_key, ActiveCall.client_id, ActiveCall.account_id, ActiveCall.max_cost)
        .where(ActiveCall.leg_key.in_(keys), open_legs_filter(now))
    ):
        state.keyed[key] = (client_id, account_id, Decimal(cost or 0))
    return state


def _sql_decide(conn, items: list[_Item], settings: Settings, *, lock_wait: bool,
                check_existence: bool) -> list[Decision]:
    """Decide `items` in the transaction open on `conn` (the caller commits)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL synchronous_commit = off"
                             + (f"; SET LOCAL lock_timeout = '{LOCK_WAIT_MS}ms'" if lock_wait else ""))
    limited = _limited(items)
    usage = _sql_read_usage(conn, items, limited) if limited else None
    missing_clients: set[int] = set()
    missing_accounts: set[int] = set()
    if check_existence:
        unlimited = {item.plan.client.id for item in items} - set(limited)
        missing_clients = unlimited - _existing(conn, Client, unlimited)
        accounts = {item.plan.account.id for item in items}
        missing_accounts = accounts - _existing(conn, Account, accounts)
    decisions, accepted = _admit_all(items, settings, usage, limited, missing_clients, missing_accounts)
    if accepted:
        ttl = settings.reservation_ttl
        conn.execute(_upsert_statement(conn.dialect.name),
                     [_reservation_row(item, decision, ttl) for item, decision in accepted.values()])
    return decisions


class _SqlStore:
    """Batches through SQLAlchemy: one transaction per decide(), statement by statement."""

    def __init__(self, bind: Engine | Connection):
        self.bind = bind
        self.dialect = bind.dialect.name

    def decide(self, items, settings, *, lock_wait: bool, check_existence: bool) -> list[Decision]:
        if isinstance(self.bind, Connection):
            with self.bind.begin():
                return _sql_decide(self.bind, items, settings, lock_wait=lock_wait, check_existence=check_existence)
        with self.bind.begin() as conn:
            return _sql_decide(conn, items, settings, lock_wait=lock_wait, check_existence=check_existence)

    def reset(self) -> None:
        pass   # SQLAlchemy has invalidated the connection; the next begin() takes a fresh one

    def close(self) -> None:
        pass


# --- PostgreSQL, the hot path: two round trips for a batch with limits, one without -------------

# Statements prepared once per connection (PREPARE): PostgreSQL then neither parses nor plans
# them per batch. $n are typed by the PREPARE.
_OPEN = "leg = 'orig' AND (state = 'active' OR (state = 'reserved' AND expires_at > {now}))"
# One result set, tagged by its first column: 0 = a locked client's balance, 1 = open legs per
# (client, account) not replaced by this batch, 2 = open legs this batch would replace (by key),
# 3 / 4 = clients / accounts of the batch that still exist (only after a foreign-key failure).
_PG_USAGE = (
    "SELECT 0, id, NULL::int, NULL::varchar, 0::bigint, balance FROM clients WHERE id = ANY({locked})"
    " UNION ALL SELECT 1, client_id, account_id, NULL::varchar, count(*), coalesce(sum(max_cost), 0)"
    " FROM active_calls WHERE client_id = ANY({locked}) AND NOT (leg_key = ANY({keys})) AND " + _OPEN
    + " GROUP BY client_id, account_id"
    " UNION ALL SELECT 2, client_id, account_id, leg_key, 1::bigint, max_cost FROM active_calls"
    " WHERE leg_key = ANY({keys}) AND " + _OPEN
)
_PG_EXISTING = (
    "SELECT 3, id, NULL::int, NULL::varchar, 0::bigint, NULL::numeric FROM clients WHERE id = ANY(%(clients)s::int[])"
    " UNION ALL SELECT 4, NULL::int, id, NULL::varchar, 0::bigint, NULL::numeric FROM accounts"
    " WHERE id = ANY(%(accounts)s::int[])"
)
_PG_LOCK = "SELECT id FROM clients WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE"
# Every reservation of the batch in ONE statement: the rows travel as 11 array literals and
# `unnest` turns them back into rows (a multi-row VALUES with 19 bound parameters per row costs
# several times more to build and to parse).
_PG_UPSERT = (
    "INSERT INTO active_calls (" + ", ".join(_ROW_COLUMNS) + ") "
    "SELECT 'auth:' || v.nas_id || ':' || v.call_id, v.call_id, NULL, v.nas_id, 'orig', 'reserved', v.account_id,"
    " v.client_id, v.caller, v.called, v.rate_table_id, v.prefix, v.max_cost, v.max_duration, v.created_at,"
    " v.created_at + $1 * interval '1 second', NULL, v.created_at, 0"
    " FROM unnest($2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
    " AS v(call_id, nas_id, account_id, client_id, caller, called, rate_table_id, prefix, max_cost, max_duration,"
    " created_at)"
    " ON CONFLICT (leg_key) DO UPDATE SET "
    + ", ".join(f"{name} = excluded.{name}" for name in _ROW_COLUMNS if name != "leg_key")
)
_PREPARE = (
    "PREPARE radiusd_reserve_lock (int[]) AS " + _PG_LOCK + "; "
    "PREPARE radiusd_reserve_usage (int[], varchar[], timestamptz) AS "
    + _PG_USAGE.format(locked="$1", keys="$2", now="$3") + "; "
    "PREPARE radiusd_reserve_upsert (int, varchar[], int[], int[], int[], varchar[], varchar[], int[], varchar[],"
    " numeric[], int[], timestamptz[]) AS " + _PG_UPSERT
)
_EXEC_LOCK = "EXECUTE radiusd_reserve_lock(%(locked)s); "
_EXEC_USAGE = "EXECUTE radiusd_reserve_usage(%(locked)s, %(keys)s, %(now)s)"
_EXEC_UPSERT = ("EXECUTE radiusd_reserve_upsert(%(ttl)s, %(call_id)s, %(nas_id)s, %(account_id)s, %(client_id)s,"
                " %(caller)s, %(called)s, %(rate_table_id)s, %(prefix)s, %(max_cost)s, %(max_duration)s,"
                " %(created_at)s)")
_SYNC_OFF = "SET LOCAL synchronous_commit TO off; "


def _literal(values) -> str:
    """A PostgreSQL array literal of numbers or ISO times (no character that needs quoting)."""
    return "{" + ",".join("NULL" if v is None else str(v) for v in values) + "}"


def _text(value: str | None) -> str:
    if value is None:
        return "NULL"
    return '"' + value.replace("\x00", "").replace("\\", "\\\\").replace('"', '\\"') + '"'


def _text_literal(values) -> str:
    """A PostgreSQL array literal of strings, every element quoted (one string for psycopg2 to
    escape instead of one adapter per element)."""
    return "{" + ",".join(map(_text, values)) + "}"


def _pg_rows(accepted: dict[str, tuple[_Item, Accept]], ttl: int) -> dict:
    pairs = list(accepted.values())
    plans = [item.plan for item, _ in pairs]
    return {
        "ttl": ttl,
        "call_id": _text_literal([item.call_id for item, _ in pairs]),
        "nas_id": _literal([p.nas_id for p in plans]),
        "account_id": _literal([p.account.id for p in plans]),
        "client_id": _literal([p.client.id for p in plans]),
        "caller": _text_literal([(p.calling_number or "")[:64] for p in plans]),
        "called": _text_literal([(p.called_number or "")[:64] for p in plans]),
        "rate_table_id": _literal([p.rate_table.id for p in plans]),
        "prefix": _text_literal([p.rate.prefix for p in plans]),
        "max_cost": _literal([decision.max_cost for _, decision in pairs]),
        "max_duration": _literal([decision.max_duration for _, decision in pairs]),
        "created_at": _literal([item.now.isoformat() for item, _ in pairs]),
    }


class _PgStore:
    """Batches over one psycopg2 connection in autocommit mode, so that BEGIN, SET LOCAL, the
    locks and the reads travel together: the first round trip locks the limited clients and
    reads their numbers, the second writes the reservations and commits. A batch without limits
    is one round trip (one statement = one implicit transaction)."""

    dialect = "postgresql"

    def __init__(self, engine: Engine):
        self.engine = engine
        self._fairy = None   # pooled connection, kept between batches

    def _cursor(self):
        if self._fairy is None:
            fairy = self.engine.raw_connection()
            try:
                fairy.driver_connection.autocommit = True
                if not fairy.info.get("radiusd_reserve_prepared"):   # info is per DBAPI connection
                    with fairy.driver_connection.cursor() as cur:
                        cur.execute(_PREPARE)
                    fairy.info["radiusd_reserve_prepared"] = True
            except Exception:
                fairy.invalidate()
                raise
            self._fairy = fairy
        return self._fairy.driver_connection.cursor()

    def decide(self, items, settings, *, lock_wait: bool, check_existence: bool) -> list[Decision]:
        import psycopg2

        cur = self._cursor()
        in_block = False
        sql = "(connect)"
        try:
            limited = _limited(items)
            keys = [item.key for item in items]
            params: dict = {"now": max(item.now for item in items)}
            usage = None
            missing_clients: set[int] = set()
            missing_accounts: set[int] = set()
            if limited or check_existence:
                sql = "BEGIN; " + _SYNC_OFF
                if lock_wait:
                    sql += f"SET LOCAL lock_timeout = '{LOCK_WAIT_MS}ms'; "
                if limited:
                    sql += _EXEC_LOCK + _EXEC_USAGE
                    params["locked"] = _literal(limited)
                    params["keys"] = _text_literal(keys)
                usage_rows: list = []
                if check_existence:   # rare (after a foreign-key failure): not worth preparing
                    params["clients"] = sorted({item.plan.client.id for item in items})
                    params["accounts"] = sorted({item.plan.account.id for item in items})
                    if limited:   # only the last result set comes back: read the usage first
                        in_block = True
                        cur.execute(sql, params)
                        usage_rows = cur.fetchall()
                        sql = _PG_EXISTING
                    else:
                        sql += _PG_EXISTING
                in_block = True
                cur.execute(sql, params)
                rows = usage_rows + cur.fetchall()
                usage = _Usage() if limited else None
                clients, accounts = set(), set()
                for kind, client_id, account_id, key, count, amount in rows:
                    if kind == 0:
                        usage.balances[client_id] = amount
                    elif kind == 1:
                        usage.add_open(client_id, account_id, count, amount)
                    elif kind == 2:
                        usage.keyed[key] = (client_id, account_id, Decimal(amount or 0))
                    elif kind == 3:
                        clients.add(client_id)
                    else:
                        accounts.add(account_id)
                if check_existence:
                    missing_clients = set(params["clients"]) - clients - set(limited)
                    missing_accounts = set(params["accounts"]) - accounts
            decisions, accepted = _admit_all(items, settings, usage, limited, missing_clients, missing_accounts)
            if in_block:
                sql = (_EXEC_UPSERT + "; COMMIT") if accepted else "COMMIT"
                cur.execute(sql, _pg_rows(accepted, settings.reservation_ttl) if accepted else None)
                in_block = False
            elif accepted:
                sql = _SYNC_OFF + _EXEC_UPSERT
                cur.execute(sql, _pg_rows(accepted, settings.reservation_ttl))
            return decisions
        except BaseException as exc:
            dead = self._undo(exc, in_block)
            if isinstance(exc, psycopg2.Error):
                raise sa_exc.DBAPIError.instance(sql[:200], None, exc, psycopg2.Error,
                                                 connection_invalidated=dead) from None
            raise
        finally:
            cur.close()

    def _undo(self, exc: BaseException, in_block: bool) -> bool:
        """Roll back an open transaction (never leave locks behind on a kept connection);
        returns whether the connection is dead (then it is dropped), as SQLAlchemy would judge."""
        import psycopg2

        conn = self._fairy.driver_connection
        dead = isinstance(exc, psycopg2.Error) and self.engine.dialect.is_disconnect(exc, conn, None)
        if not dead and in_block:
            try:
                with conn.cursor() as cur:
                    cur.execute("ROLLBACK")
            except Exception:
                dead = True
        if dead:
            self.reset()
        return dead

    def reset(self) -> None:
        fairy, self._fairy = self._fairy, None
        if fairy is not None:
            try:
                fairy.invalidate()
            except Exception:
                pass

    def close(self) -> None:
        fairy, self._fairy = self._fairy, None
        if fairy is not None:
            try:
                fairy.driver_connection.autocommit = False
                fairy.close()   # back to the pool, as it came
            except Exception:
                fairy.invalidate()


# --- retries and fallbacks ----------------------------------------------------------------------

def _pgcode(exc: BaseException) -> str | None:
    return getattr(getattr(exc, "orig", None), "pgcode", None)


def _run(store, items: list[_Item], settings: Settings, lock_wait: bool) -> list[Decision]:
    """One transaction; a foreign-key failure (client/account deleted since the snapshot) is
    answered by deciding again with explicit existence checks; a connection found dead is
    replaced once (what pool_pre_ping would have done), since the upsert makes a retry harmless."""
    check_existence = False
    reconnected = False
    while True:
        try:
            return store.decide(items, settings, lock_wait=lock_wait, check_existence=check_existence)
        except sa_exc.IntegrityError:
            if check_existence:
                raise
            check_existence = True
        except sa_exc.DBAPIError as exc:
            if _pgcode(exc) == "23503" and not check_existence:   # foreign key (raw path)
                check_existence = True
                continue
            if not exc.connection_invalidated or reconnected:
                raise
            store.reset()
            reconnected = True


def _decide_items(store, items: list[_Item], settings: Settings) -> list[Decision | BaseException]:
    if len(_limited(items)) <= 1 or store.dialect != "postgresql":
        try:
            return list(_run(store, items, settings, lock_wait=False))
        except Exception as exc:
            return [exc] * len(items)
    try:
        return list(_run(store, items, settings, lock_wait=True))
    except Exception as exc:
        if not isinstance(exc, sa_exc.DBAPIError) or _pgcode(exc) not in _RETRY_ONE_BY_ONE:
            return [exc] * len(items)
    # A lock wait too long (maybe a deadlock with an accounting group): one client per transaction.
    by_client: dict[int, list[int]] = {}
    for index, item in enumerate(items):
        by_client.setdefault(item.plan.client.id, []).append(index)
    results: list[Decision | BaseException | None] = [None] * len(items)
    for client_id in sorted(by_client):
        indexes = by_client[client_id]
        try:
            decided = _run(store, [items[i] for i in indexes], settings, lock_wait=False)
        except Exception as exc:
            decided = [exc] * len(indexes)
        for i, result in zip(indexes, decided):
            results[i] = result
    return results  # type: ignore[return-value]


def _store_for(bind):
    """The batch store for a sessionmaker, engine or connection (a connection: SQLAlchemy path)."""
    if isinstance(bind, sessionmaker):
        bind = bind.kw.get("bind")
    if isinstance(bind, Engine):
        return _PgStore(bind) if bind.dialect.name == "postgresql" and bind.dialect.driver == "psycopg2" \
            else _SqlStore(bind)
    if isinstance(bind, Connection):
        return _SqlStore(bind)
    raise ValueError("reserve_batch needs a sessionmaker bound to an engine, an engine or a connection")


def reserve_batch(sessions: sessionmaker[Session] | Engine | Connection, requests: Sequence[tuple[CallPlan, dt.datetime]],
                  settings: Settings, *, store=None) -> list[Decision | BaseException]:
    """Decide capacity and money for each (plan, now), in arrival order, in as few transactions
    as correctness allows; on Accept the reservation is held. Each result is the decision or, if
    the store failed for that call, the exception (the caller answers service unavailable).

    A repeated Access-Request for the same call id on the same NAS (re-auth, retransmission
    after our reply was lost) refreshes its reservation instead of counting twice.
    """
    if not requests:
        return []
    items = [_item(plan, now) for plan, now in requests]
    if store is not None:
        return _decide_items(store, items, settings)
    store = _store_for(sessions)
    try:
        return _decide_items(store, items, settings)
    finally:
        store.close()


def reserve_call(sessions: sessionmaker[Session], plan: CallPlan, now: dt.datetime,
                 settings: Settings) -> Accept | Reject:
    """Check capacity and money for `plan` and, on Accept, hold a reservation, atomically.
    Store errors raise."""
    [result] = reserve_batch(sessions, [(plan, now)], settings)
    if isinstance(result, BaseException):
        raise result
    return result


# --- the batcher thread -------------------------------------------------------------------------

Done = Callable[[object], None]          # called with the Accept/Reject, or the exception
Deliver = Callable[[list[tuple[object, object]]], None]
_STOP = object()


class ReservationBatcher:
    """A thread that takes every Access-Request waiting (up to `max_batch`) and decides them in
    one `reserve_batch` call: while one batch is in the store the next one gathers, so the
    number of transactions adapts to the load (one per request when idle).

    `submit(plan, now, token)` may be called from any thread; results go out through
    `deliver([(token, result), ...])` once per batch, from the batcher thread (default: call each
    token, a callable, with its result there). The RADIUS edge passes a `deliver` that hops to
    its event loop once per batch rather than once per request.
    """

    def __init__(self, sessions, settings: Settings, deliver: Deliver | None = None,
                 max_batch: int = MAX_BATCH, name: str = "reserve"):
        self.sessions = sessions
        self.settings = settings
        self.max_batch = max(1, max_batch)
        self._deliver = deliver or _deliver_here
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._store = None
        self.batches = 0
        self.decided = 0

    def start(self) -> "ReservationBatcher":
        self._thread.start()
        return self

    def submit(self, plan: CallPlan, now: dt.datetime, token) -> None:
        self._queue.put((plan, now, token))

    def stop(self, timeout: float = 10.0) -> None:
        """Decide what is queued, then end the thread."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)

    def _run(self) -> None:
        get, get_nowait = self._queue.get, self._queue.get_nowait
        stopping = False
        while not stopping:
            first = get()
            if first is _STOP:
                break
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    entry = get_nowait()
                except queue.Empty:
                    break
                if entry is _STOP:
                    stopping = True
                    break
                batch.append(entry)
            results = self._decide([(plan, now) for plan, now, _ in batch])
            self.batches += 1
            self.decided += len(batch)
            try:
                self._deliver([(token, result) for (_, _, token), result in zip(batch, results)])
            except Exception:
                pass  # the receiver is gone (event loop closed during shutdown)
        if self._store is not None:
            self._store.close()

    def _decide(self, requests) -> list:
        """reserve_batch on a store (connection) kept for the next batch: no pool checkout and
        no ping per batch; a dead connection is replaced inside reserve_batch."""
        try:
            if self._store is None:
                self._store = _store_for(self.sessions)
            return reserve_batch(self.sessions, requests, self.settings, store=self._store)
        except Exception as exc:  # a bug must cost this batch, never the thread
            return [exc] * len(requests)


def _deliver_here(pairs) -> None:
    for done, result in pairs:
        done(result)
