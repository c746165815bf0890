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
  `admit` accepts them without looking, so they are neither locked nor counted — only their
  reservations are written (they still count against nothing but show in `calls list`).
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


# --- one transaction ----------------------------------------------------------------------------

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

    def __init__(self, balances: dict[int, Decimal]):
        self.balances = balances
        self.base_client: dict[int, int] = {}
        self.base_account: dict[tuple[int, int], int] = {}
        self.base_exposure: dict[int, Decimal] = {}
        self.keyed: dict[str, tuple[int | None, int | None, Decimal]] = {}

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


def _read_usage(conn, items: list[_Item], locked: dict[int, Decimal]) -> _Usage:
    state = _Usage(locked)
    keys = [item.key for item in items]
    now = max(item.now for item in items)
    rows = conn.execute(
        select(ActiveCall.client_id, ActiveCall.account_id, func.count(ActiveCall.id),
               type_coerce(func.coalesce(func.sum(ActiveCall.max_cost), 0), Money()))
        .where(ActiveCall.client_id.in_(list(locked)), open_legs_filter(now), ActiveCall.leg_key.not_in(keys))
        .group_by(ActiveCall.client_id, ActiveCall.account_id)
    )
    for client_id, account_id, count, exposure in rows:
        state.base_client[client_id] = state.base_client.get(client_id, 0) + count
        state.base_account[(client_id, account_id)] = count
        state.base_exposure[client_id] = state.base_exposure.get(client_id, Decimal(0)) + Decimal(exposure)
    for key, client_id, account_id, cost in conn.execute(
        select(ActiveCall.leg_key, ActiveCall.client_id, ActiveCall.account_id, ActiveCall.max_cost)
        .where(ActiveCall.leg_key.in_(keys), open_legs_filter(now))
    ):
        state.keyed[key] = (client_id, account_id, Decimal(cost or 0))
    return state


def _existing(conn, model, ids: set[int]) -> set[int]:
    if not ids:
        return set()
    return set(conn.scalars(select(model.id).where(model.id.in_(sorted(ids)))))


def _upsert(conn, rows: list[dict]) -> None:
    dialect = conn.dialect.name
    if dialect == "postgresql":
        stmt = postgresql.insert(ActiveCall.__table__)
    elif dialect == "sqlite":
        stmt = sqlite.insert(ActiveCall.__table__)
    else:  # pragma: no cover - the store is PostgreSQL or SQLite
        raise RuntimeError(f"unsupported store dialect {dialect}")
    stmt = stmt.on_conflict_do_update(
        index_elements=["leg_key"],
        set_={name: stmt.excluded[name] for name in rows[0] if name != "leg_key"},
    )
    conn.execute(stmt, rows)


def _reservation_row(item: _Item, decision: Accept, ttl: int) -> dict:
    plan, now = item.plan, item.now
    return dict(
        leg_key=item.key,
        call_id=item.call_id,
        acct_session_id=None,
        nas_id=plan.nas_id,
        leg="orig",
        state="reserved",
        account_id=plan.account.id,
        client_id=plan.client.id,
        caller=(plan.calling_number or "")[:64],
        called=(plan.called_number or "")[:64],
        rate_table_id=plan.rate_table.id,
        prefix=plan.rate.prefix,
        max_cost=decision.max_cost,
        max_duration=decision.max_duration,
        created_at=now,
        expires_at=now + dt.timedelta(seconds=ttl),
        started_at=None,
        last_seen_at=now,
        session_seconds=0,
    )


def _decide(conn, items: list[_Item], settings: Settings, *, lock_wait: bool, check_existence: bool) -> list[Decision]:
    """Decide `items` in the transaction open on `conn` (the caller commits)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL synchronous_commit = off"
                             + (f"; SET LOCAL lock_timeout = '{LOCK_WAIT_MS}ms'" if lock_wait else ""))
    limited = sorted({item.plan.client.id for item in items if needs_usage(item.plan)})
    balances: dict[int, Decimal] = {}
    if limited:
        balances = dict(conn.execute(
            select(Client.id, Client.balance).where(Client.id.in_(limited))
            .order_by(Client.id).with_for_update(key_share=True)
        ).all())
    missing_clients = set(limited) - balances.keys()
    missing_accounts: set[int] = set()
    if check_existence:
        unlimited = {item.plan.client.id for item in items} - set(limited)
        missing_clients |= unlimited - _existing(conn, Client, unlimited)
        accounts = {item.plan.account.id for item in items}
        missing_accounts = accounts - _existing(conn, Account, accounts)
    usage = _read_usage(conn, items, balances) if balances else None

    decisions: list[Decision] = []
    rows: dict[str, dict] = {}   # one row per leg_key: a later re-auth in the batch replaces it
    for item in items:
        plan = item.plan
        if plan.client.id in missing_clients:  # deleted since the snapshot was built
            decisions.append(Reject(RejectReason.UNKNOWN_ACCOUNT, plan.account.id, plan.client.id,
                                    "client not in store"))
            continue
        if plan.account.id in missing_accounts:
            decisions.append(Reject(RejectReason.UNKNOWN_ACCOUNT, plan.account.id, plan.client.id,
                                    "account not in store"))
            continue
        counted = usage is not None and plan.client.id in balances
        decision = admit(plan, usage.usage(plan, item.key) if counted else _NO_USAGE, settings.max_call_duration)
        if isinstance(decision, Accept):
            rows[item.key] = _reservation_row(item, decision, settings.reservation_ttl)
            if usage is not None:
                usage.keyed[item.key] = (plan.client.id, plan.account.id, decision.max_cost)
        decisions.append(decision)
    if rows:
        _upsert(conn, list(rows.values()))
    return decisions


def _engine(sessions):
    bind = getattr(sessions, "kw", {}).get("bind") if isinstance(sessions, sessionmaker) else sessions
    if bind is None:
        raise ValueError("reserve_batch needs a sessionmaker bound to an engine, or an engine")
    return bind


def _pgcode(exc: BaseException) -> str | None:
    return getattr(getattr(exc, "orig", None), "pgcode", None)


def _run(engine, items: list[_Item], settings: Settings, lock_wait: bool) -> list[Decision]:
    """One transaction; a foreign-key failure (client/account deleted since the snapshot) is
    answered by deciding again with explicit existence checks; a connection found dead is
    replaced once (what pool_pre_ping would have done), since the upsert makes a retry harmless."""
    check_existence = False
    reconnected = False
    while True:
        try:
            with engine.begin() as conn:
                return _decide(conn, items, settings, lock_wait=lock_wait, check_existence=check_existence)
        except sa_exc.IntegrityError:
            if check_existence:
                raise
            check_existence = True
        except sa_exc.DBAPIError as exc:
            if not exc.connection_invalidated or reconnected:
                raise
            reconnected = True


def _decide_items(engine, items: list[_Item], settings: Settings) -> list[Decision | BaseException]:
    clients = {item.plan.client.id for item in items if needs_usage(item.plan)}
    if len(clients) <= 1 or engine.dialect.name != "postgresql":
        try:
            return list(_run(engine, items, settings, lock_wait=False))
        except Exception as exc:
            return [exc] * len(items)
    try:
        return list(_run(engine, items, settings, lock_wait=True))
    except sa_exc.OperationalError as exc:
        if _pgcode(exc) not in _RETRY_ONE_BY_ONE:
            return [exc] * len(items)
    # A lock wait too long (maybe a deadlock with an accounting group): one client per transaction.
    by_client: dict[int, list[int]] = {}
    for index, item in enumerate(items):
        by_client.setdefault(item.plan.client.id, []).append(index)
    results: list[Decision | BaseException | None] = [None] * len(items)
    for client_id in sorted(by_client):
        indexes = by_client[client_id]
        try:
            decided = _run(engine, [items[i] for i in indexes], settings, lock_wait=False)
        except Exception as exc:
            decided = [exc] * len(indexes)
        for i, result in zip(indexes, decided):
            results[i] = result
    return results  # type: ignore[return-value]


def reserve_batch(sessions, requests: Sequence[tuple[CallPlan, dt.datetime]],
                  settings: Settings) -> list[Decision | BaseException]:
    """Decide capacity and money for each (plan, now), in arrival order, in as few transactions
    as correctness allows; on Accept the reservation is held. Each result is the decision or, if
    the store failed for that call, the exception (the caller answers service unavailable).

    A repeated Access-Request for the same call id on the same NAS (re-auth, retransmission
    after our reply was lost) refreshes its reservation instead of counting twice.
    """
    if not requests:
        return []
    items = [_item(plan, now) for plan, now in requests]
    return _decide_items(_engine(sessions), items, settings)


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
Deliver = Callable[[list[tuple[Done, object]]], None]
_STOP = object()


class ReservationBatcher:
    """A thread that takes every Access-Request waiting (up to `max_batch`) and decides them in
    one `reserve_batch` call: while one batch is in the store the next one gathers, so the
    number of transactions adapts to the load (one per request when idle).

    `submit(plan, now, done)` may be called from any thread; results go out through
    `deliver([(done, result), ...])` once per batch, from the batcher thread (default: call each
    `done(result)` there). The RADIUS edge passes a `deliver` that hops to its event loop once
    per batch rather than once per request.
    """

    def __init__(self, sessions, settings: Settings, deliver: Deliver | None = None,
                 max_batch: int = MAX_BATCH, name: str = "reserve"):
        self.sessions = sessions
        self.settings = settings
        self.max_batch = max(1, max_batch)
        self._deliver = deliver or _deliver_here
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.batches = 0
        self.decided = 0

    def start(self) -> "ReservationBatcher":
        self._thread.start()
        return self

    def submit(self, plan: CallPlan, now: dt.datetime, done: Done) -> None:
        self._queue.put((plan, now, done))

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
            try:
                results = reserve_batch(self.sessions, [(plan, now) for plan, now, _ in batch], self.settings)
            except Exception as exc:  # a bug must cost this batch, never the thread
                results = [exc] * len(batch)
            self.batches += 1
            self.decided += len(batch)
            try:
                self._deliver([(done, result) for (_, _, done), result in zip(batch, results)])
            except Exception:
                pass  # the receiver is gone (event loop closed during shutdown)


def _deliver_here(pairs: list[tuple[Done, object]]) -> None:
    for done, result in pairs:
        done(result)
