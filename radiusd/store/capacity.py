"""Capacity and money at Access-Request time: atomic check-and-reserve, many calls per transaction.

`reserve_batch` is the only place an Access-Accept is decided against live numbers. In ONE
transaction it locks the batch's clients, deletes the expired reservations of those whose limits
need live numbers, reads their usage from the counters the triggers keep (radiusd.core.admission:
the cost does not grow with the calls in progress), has the pure `admit_batch` decide every call
in arrival order, and upserts the reservations it returns (the Accounting-Start takes them over).
Every check for a client runs under that client's lock, so N radiusd processes sharing one
PostgreSQL never admit more calls than the capacity, nor spend the same balance twice.

- PostgreSQL locks the clients `FOR NO KEY UPDATE` in id order (the store's lock order,
  radiusd.store.sql): that serialises reservers, counter updates and debits, not the foreign-key
  checks of rows inserted for a client; the counters are read by *new* statements afterwards, so
  under READ COMMITTED they include whatever the previous lock holder committed. On SQLite, BEGIN
  IMMEDIATE (radiusd.db) serialises writers on the whole database.
- A batch holds several client locks at once, while an accounting group debits clients in arrival
  order: the two could deadlock. A batch waits at most LOCK_WAIT_MS for a lock; past that (or on a
  deadlock) it is decided again one client per transaction, which cannot take part in a cycle.
- A batch without limits (no capacity, unlimited credit) is neither locked nor read first: its
  upsert's triggers lock and count.
- Reservation commits do not wait for the WAL flush: a reservation moves no money and expires; a
  PostgreSQL crash may lose those of its last few hundred milliseconds (capacity under-counted
  until their Starts arrive). Locks and visibility are unchanged: the check stays exact.

Back-pressure: the batcher's PostgreSQL connection runs under `lock_timeout`/`statement_timeout`
= `store_timeout`, so a locked client row or a stalled server fails the batch (55P03 / 57014)
instead of holding every Access-Request behind it; the one-client fallback stops at the first
such timeout, and the batcher refuses at once while a batch is in the store longer than
`degraded_after` and for `degraded_after` seconds after a timeout (the next request probes the
store again). Store errors reach the caller: the edge answers Reject 8 (service unavailable).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import threading
import time
import uuid
from decimal import Decimal
from typing import Callable, Sequence

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from radiusd.config import Settings
from radiusd.core.admission import (RESERVATION_FIELDS, ClientUsage, Decision, Loaded, Replaced, Request,
                                    admit_batch, counted_accounts, limited_clients, request)
from radiusd.core.decision import Accept, CallPlan, Reject
from radiusd.core.keys import fit_key
from radiusd.core.round_robin import RoundRobin, fair_share
from radiusd.store import sql

LOCK_WAIT_MS = 100          # longest wait for a client lock inside a multi-client batch
MAX_BATCH = 64              # Access-Requests decided in one transaction
_RETRY_ONE_BY_ONE = {"55P03"} | sql.CONFLICT_CODES   # lock_not_available, deadlock, serialization


def _client_ids(items: list[Request]) -> list[int]:
    return sorted({i.plan.client.id for i in items})


def _ids(items: list[Request]) -> dict[str, list[int]]:
    return {"clients": _client_ids(items), "accounts": sorted({i.plan.account.id for i in items})}


def _admit(items: list[Request], settings: Settings, usage, existing) -> tuple[list[Decision], list]:
    """`admit_batch` over what the `usage` and `existing` statements read (same rows on both dialects)."""
    loaded = Loaded(accounts=dict.fromkeys(counted_accounts(items), 0))   # no counter row: 0
    for kind, client_id, account_id, key, calls, amount, held in usage:
        if kind == "client":
            loaded.clients[client_id] = ClientUsage(amount, int(calls), held)
        elif kind == "account":
            loaded.accounts[account_id] = int(calls)
        else:   # 'replaced'
            loaded.replaced[key] = Replaced(client_id, account_id, Decimal(amount or 0))
    if existing is not None:   # rare: after a foreign-key failure
        loaded.existing_clients = {found for kind, found in existing if kind == "client"}
        loaded.existing_accounts = {found for kind, found in existing if kind == "account"}
    return admit_batch(items, loaded, settings.max_call_duration, settings.reservation_ttl)


class _SqliteStore:
    """Through SQLAlchemy, one transaction per decide(): statements are local calls, nothing to batch."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.st = sql.statements(engine, "admission")

    def decide(self, items: list[Request], settings: Settings, *, lock_wait: bool,
               check_existence: bool) -> list[Decision]:
        st = self.st
        with self.engine.begin() as conn:
            usage = []
            limited = limited_clients(items)
            if limited:
                now = max(item.now for item in items)
                conn.execute(st["expire"], {"clients": limited, "now": now})
                usage = conn.execute(st["usage"], {"clients": limited, "accounts": counted_accounts(items),
                                                   "now": now, "keys": [i.key for i in items]}).all()
            existing = conn.execute(st["existing"], _ids(items)).all() if check_existence else None
            decisions, reservations = _admit(items, settings, usage, existing)
            if reservations:
                conn.execute(st["upsert"], [{n: getattr(r, n) for n in RESERVATION_FIELDS} for r in reservations])
        return decisions

    def close(self) -> None:
        pass   # nothing kept (a dead connection: SQLAlchemy has invalidated it, begin() takes another)

    reset = close


class _PgStore:
    """Batches over one kept psycopg2 connection in autocommit mode, so that BEGIN, SET LOCAL,
    the locks and the reads travel together in the first round trip, the upsert and COMMIT in the
    second; a batch without limits is one round trip (one statement, one implicit transaction)."""

    def __init__(self, engine: Engine, timeout_ms: int | None = None):
        self.engine = engine
        self.st = sql.statements("postgresql", "admission")
        self.timeout_ms = timeout_ms
        self._fairy = None   # pooled connection, kept between batches

    def _cursor(self):
        fresh = self._fairy is None
        if fresh:
            self._fairy = sql.raw_connection(self.engine)
        cur = self._fairy.driver_connection.cursor()
        try:
            if fresh:
                self._fairy.driver_connection.autocommit = True
                if self.timeout_ms:   # once per connection: no cost per batch
                    cur.execute(sql.statement("postgresql", "timeouts", "session"), {"ms": self.timeout_ms})
            sql.prepare(self._fairy, cur, "admission")   # once per DBAPI connection
        except Exception:
            cur.close()
            self.reset()
            raise
        return cur

    def _read(self, cur, items: list[Request], lock_wait: bool, check_existence: bool) -> tuple[list, list | None]:
        """The first round trip: opens the transaction, locks, reads (the `usage`, `existing` rows)."""
        st = self.st
        parts = [st["begin"], st["sync_off"]]
        if lock_wait:
            parts.append(cur.mogrify(st["lock_timeout"], (LOCK_WAIT_MS,)).decode())
        limited = limited_clients(items)
        if limited:
            now = max(item.now for item in items)
            for name, params in (("lock", (_client_ids(items),)), ("expire", (limited, now)),
                                 ("usage", (limited, counted_accounts(items), now, [i.key for i in items]))):
                parts.append(cur.mogrify(st[name].execute, params).decode())
        cur.execute("; ".join(parts))
        usage = cur.fetchall() if limited else []
        if check_existence:
            cur.execute(st["existing"], _ids(items))
        return usage, cur.fetchall() if check_existence else None

    def decide(self, items: list[Request], settings: Settings, *, lock_wait: bool,
               check_existence: bool) -> list[Decision]:
        import psycopg2

        st = self.st
        in_block = bool(limited_clients(items)) or check_existence
        sent = "(load)" if in_block else "(connect)"
        with self._cursor() as cur:
            try:
                usage, existing = self._read(cur, items, lock_wait, check_existence) if in_block else ([], None)
                decisions, reservations = _admit(items, settings, usage, existing)
                if reservations:
                    # in leg-key order: two batches re-authorizing the same calls (a switch retrying
                    # through two workers) take the key index's locks in one order, never a cycle
                    rows = json.dumps([[getattr(r, n) for n in st["upsert"].names]
                                       for r in sorted(reservations, key=lambda r: r.leg_key)], default=str)
                    upsert = cur.mogrify(st["upsert"].execute,
                                         (max(i.now for i in items), settings.reservation_ttl, rows)).decode()
                    sent = f"{upsert}; {st['commit']}" if in_block else f"{st['sync_off']}; {upsert}"
                elif in_block:
                    sent = st["commit"]
                if reservations or in_block:
                    cur.execute(sent)
                return decisions
            except BaseException as exc:
                # roll back an open transaction (never leave locks behind on a kept connection);
                # a dead connection is dropped, as SQLAlchemy would judge
                conn = self._fairy.driver_connection
                dead = isinstance(exc, psycopg2.Error) and self.engine.dialect.is_disconnect(exc, conn, None)
                if in_block and not dead:
                    try:
                        with conn.cursor() as rollback:
                            rollback.execute(st["rollback"])
                    except Exception:
                        dead = True
                if dead:
                    self.reset()
                if not isinstance(exc, psycopg2.Error):
                    raise
                raise sql.driver_error(exc, self.engine.dialect, self._fairy, sent[:200],
                                       invalidated=dead) from None

    def reset(self) -> None:
        fairy, self._fairy = self._fairy, None
        if fairy is not None:
            fairy.invalidate()   # (SQLAlchemy logs a failing close, never raises)

    def close(self) -> None:
        fairy, self._fairy = self._fairy, None
        if fairy is not None:
            try:
                if self.timeout_ms:
                    with fairy.driver_connection.cursor() as cur:
                        cur.execute(sql.statement("postgresql", "timeouts", "reset"))
                fairy.driver_connection.autocommit = False
                fairy.close()   # back to the pool, as it came
            except Exception:
                fairy.invalidate()


def _run(store, items: list[Request], settings: Settings, lock_wait: bool) -> list[Decision]:
    """One transaction; a foreign-key failure (client/account deleted since the snapshot) is
    answered by deciding again with explicit existence checks; a connection found dead is
    replaced once (what pool_pre_ping would have done), since the upsert makes a retry harmless."""
    check_existence = reconnected = False
    while True:
        try:
            return store.decide(items, settings, lock_wait=lock_wait, check_existence=check_existence)
        except sa_exc.IntegrityError:   # (PostgreSQL's raw path too: DBAPIError.instance maps 23503)
            if check_existence:
                raise
            check_existence = True
        except sa_exc.DBAPIError as exc:
            if not exc.connection_invalidated or reconnected:
                raise
            store.reset()
            reconnected = True


def _decide_items(store, items: list[Request], settings: Settings) -> list[Decision | BaseException]:
    several = isinstance(store, _PgStore) and len(limited_clients(items)) > 1
    try:
        return _run(store, items, settings, lock_wait=several)
    except Exception as exc:
        if not several or sql.pgcode(exc) not in _RETRY_ONE_BY_ONE:
            return [exc] * len(items)
    # A lock wait too long (maybe a deadlock with an accounting group): each client a batch of its own.
    by_client: dict[int, list[int]] = {}
    for index, item in enumerate(items):
        by_client.setdefault(item.plan.client.id, []).append(index)
    results: list[Decision | BaseException] = [None] * len(items)   # type: ignore[list-item]
    stuck: BaseException | None = None   # the store is too slow: don't wait store_timeout per client
    for client_id in sorted(by_client):
        indexes = by_client[client_id]
        decided = [stuck] * len(indexes) if stuck else _decide_items(store, [items[i] for i in indexes], settings)
        if sql.pgcode(decided[0]) in sql.TIMEOUT_CODES:
            stuck = decided[0]
        for i, result in zip(indexes, decided):
            results[i] = result
    return results


def _store_for(bind, timeout_ms: int | None = None):
    """The batch store for a sessionmaker or an engine, by dialect."""
    if isinstance(bind, sessionmaker):
        with bind() as session:   # its engine, through the public API (no connection is taken)
            bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        return _PgStore(bind, timeout_ms)
    if timeout_ms:
        sql.limit_sqlite_waits(bind, timeout_ms / 1000)
    return _SqliteStore(bind)   # (any other dialect: sql.statements refuses it)


def reserve_batch(sessions: sessionmaker[Session] | Engine, requests: Sequence[tuple[CallPlan, dt.datetime]],
                  settings: Settings, *, store=None) -> list[Decision | BaseException]:
    """Decide capacity and money for each (plan, now), in arrival order, in as few transactions
    as correctness allows; on Accept the reservation is held. Each result is the decision or, if
    the store failed for that call, the exception (the caller answers service unavailable).

    A repeated Access-Request for the same call id on the same NAS (re-auth, retransmission
    after our reply was lost) refreshes its reservation instead of counting twice.
    """
    if not requests:
        return []
    items = [request(plan, now, fit_key(plan.call_id) if plan.call_id else f"noid-{uuid.uuid4().hex}")
             for plan, now in requests]
    if store is not None:
        return _decide_items(store, items, settings)
    with contextlib.closing(_store_for(sessions)) as store:
        return _decide_items(store, items, settings)


def reserve_call(sessions: sessionmaker[Session], plan: CallPlan, now: dt.datetime,
                 settings: Settings) -> Accept | Reject:
    """Check capacity and money for `plan` and, on Accept, hold a reservation, atomically.
    Store errors raise."""
    [result] = reserve_batch(sessions, [(plan, now)], settings)
    if isinstance(result, BaseException):
        raise result
    return result


class ReservationBatcher:
    """A thread that takes the Access-Requests waiting (up to `max_batch`) and decides them in
    one `reserve_batch` call: while one batch is in the store the next one gathers, so the
    number of transactions adapts to the load (one per request when idle).

    Requests wait in one queue per NAS and batches are formed round robin across them, so a
    request of a quiet NAS waits for at most the batch in the store, then its own, whatever a
    flooding NAS has queued. Refused at once (the edge answers code 8 and counts the reason):
    past `reservation_queue` requests ('queue_full'), past a NAS's `fair_share` of them
    ('nas_share'), while the store is stuck ('store_stuck').

    `submit(plan, now, token)` is called from one thread (the event loop); the results (Accept,
    Reject or the exception) go out through `deliver([(token, result), ...])` once per batch, from
    the batcher thread (default: call each token with its result).
    """

    def __init__(self, sessions, settings: Settings, deliver: Callable[[list], None] | None = None,
                 max_batch: int = MAX_BATCH, name: str = "reserve"):
        self.sessions = sessions
        self.settings = settings
        self.max_batch = max(1, max_batch)
        self._deliver = deliver or _deliver_here
        self._waiting = RoundRobin()               # nas_id -> (plan, now, token), under _ready's lock
        self._ready = threading.Condition(threading.Lock())
        self._idle = False                         # the thread waits on _ready: wake it
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._store = None
        self.queue_max = settings.reservation_queue
        self.stall_after = settings.degraded_after
        self._busy_since: float | None = None      # monotonic start of the batch in the store
        self._slow_until = 0.0                     # monotonic: refuse at once until then
        self.batches = 0
        self.decided = 0
        self.refused = {"queue_full": 0, "store_stuck": 0, "nas_share": 0}

    def start(self) -> "ReservationBatcher":
        self._thread.start()
        return self

    def submit(self, plan: CallPlan, now: dt.datetime, token) -> str | None:
        """Queue one request; returns None, or why it was refused at once (see the class)."""
        waiting = self._waiting
        if len(waiting) >= self.queue_max:
            self.refused["queue_full"] += 1
            return "queue_full"
        if self.stalled():
            self.refused["store_stuck"] += 1
            return "store_stuck"
        with self._ready:
            mine = waiting.waiting(plan.nas_id)
            if mine >= fair_share(self.queue_max, waiting.keys() + (0 if mine else 1)):
                self.refused["nas_share"] += 1
                return "nas_share"
            waiting.put(plan.nas_id, (plan, now, token))
            if self._idle:
                self._idle = False
                self._ready.notify()
        return None

    def queue_depth(self) -> int:
        return len(self._waiting)

    def waiting(self, nas_id: int) -> int:
        """Requests of one NAS waiting for a batch."""
        with self._ready:
            return self._waiting.waiting(nas_id)

    def stall(self) -> float:
        """Seconds the batch now in the store has been there (0 when idle)."""
        since = self._busy_since
        return 0.0 if since is None else max(0.0, time.monotonic() - since)

    def stalled(self) -> bool:
        return self.stall() > self.stall_after or time.monotonic() < self._slow_until

    def stop(self, timeout: float = 10.0) -> None:
        """Decide what is queued, then end the thread."""
        if self._thread.is_alive():
            with self._ready:
                self._stopping = True
                self._ready.notify()
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._waiting and not self._stopping:
                    self._idle = True
                    self._ready.wait()
                self._idle = False
                batch = self._waiting.take_many(self.max_batch)   # round robin across NAS
                if not batch:   # stopping, nothing left
                    break
                self._busy_since = time.monotonic()
            try:
                results = self._decide([(plan, now) for plan, now, _ in batch])
            finally:
                self._busy_since = None
            if any(isinstance(r, BaseException) and sql.pgcode(r) in sql.TIMEOUT_CODES for r in results):
                self._slow_until = time.monotonic() + self.stall_after
            self.batches += 1
            self.decided += len(batch)
            with contextlib.suppress(Exception):   # the receiver is gone (event loop closed at shutdown)
                self._deliver([(token, result) for (_, _, token), result in zip(batch, results)])
        if self._store is not None:
            self._store.close()

    def _decide(self, requests) -> list:
        """reserve_batch on a store (connection) kept for the next batch: no pool checkout and
        no ping per batch; a dead connection is replaced inside reserve_batch."""
        try:
            if self._store is None:
                self._store = _store_for(self.sessions, int(self.settings.store_timeout * 1000))
            return reserve_batch(self.sessions, requests, self.settings, store=self._store)
        except Exception as exc:  # a bug must cost this batch, never the thread
            return [exc] * len(requests)


def _deliver_here(pairs) -> None:
    for done, result in pairs:
        done(result)
