"""Capacity and money at Access-Request time: atomic check-and-reserve, many calls per transaction.

`reserve_batch` is the only place an Access-Accept is decided against live numbers. In ONE
transaction it locks the rows of the batch's clients, deletes the expired reservations of those
whose limits need live numbers and reads their usage from counters kept by triggers (balance,
open calls, money held, the accounts' open calls; definitions in `radiusd.core.admission`: the
cost does not grow with the calls in progress), asks the pure `admit_batch` to decide every call
in arrival order, and writes the reservations it returns (which the Accounting-Start takes over)
with one multi-row upsert. This module only loads and writes, once per dialect (`_PgStore`,
`_SqliteStore`; statements in radiusd/store/sql/<dialect>/admission.py). Because every check for
a client runs under that client's lock, N radiusd processes sharing one PostgreSQL never admit
more calls than the capacity, nor spend the same balance twice. `reserve_call` is the one-call
form; `ReservationBatcher` is the thread that feeds queued Access-Requests to `reserve_batch`.

- PostgreSQL: `SELECT ... ORDER BY id FOR NO KEY UPDATE` on the rows of every client of the
  batch — always in id order, so two batches (two workers, two hosts) lock in the same order and
  cannot deadlock each other (and the upsert's triggers find their rows locked). NO KEY UPDATE
  serialises reservers, counter updates and balance debits (they UPDATE the same row) but not the
  foreign-key checks of rows inserted for the client. The counters are read by *new* statements
  afterwards, so under READ COMMITTED they include every leg committed by whoever held a lock
  before us.
- A batch holds several client locks at once, while an accounting group commit debits clients in
  arrival order: the two could deadlock. The batch therefore waits at most LOCK_WAIT_MS for a
  lock; past that (or on a deadlock report) it is undone and decided again one client per
  transaction — a transaction holding one lock cannot take part in such a cycle.
- Clients and accounts without any limit (no capacity, unlimited credit) need no live numbers:
  `admit` accepts them without looking; a batch of only those is not locked nor read first
  (its upsert's triggers lock and count), its reservations are written all the same.
- Round trips (PostgreSQL, psycopg2): one kept connection in autocommit mode, statements
  PREPAREd once per connection (radiusd.store.sql). A batch with limited clients is two round
  trips (`BEGIN; SET LOCAL ...; EXECUTE lock; EXECUTE expire; EXECUTE usage` then
  `EXECUTE upsert; COMMIT`), a batch without limits one (`SET LOCAL ...; EXECUTE upsert`, one
  implicit transaction). The upsert sends the rows as one JSON text (one string for psycopg2 to
  adapt), its times computed from one `now` and the ttl.
- Reservation commits do not wait for the WAL flush (`SET LOCAL synchronous_commit = off`,
  PostgreSQL): a reservation is ephemeral (it expires after `reservation_ttl`) and moves no money;
  locks and visibility are unchanged, so the capacity check stays exact while PostgreSQL runs.
  If PostgreSQL itself crashes, reservations committed in its last few hundred milliseconds can
  be lost: capacity is under-counted for those calls until their Accounting-Starts arrive (or the
  reservations would have expired anyway). Accounting stays fully synchronous.
- SQLite: radiusd.db begins every transaction with BEGIN IMMEDIATE, which serialises writers on
  the whole database: no row locks to take.

Time limits and back-pressure: the batcher's PostgreSQL connection runs with `lock_timeout` and
`statement_timeout` = `store_timeout` (set once per connection, reset before it goes back to the
pool), so a client row locked by someone else or a stalled server fails the batch within that
time (SQLSTATE 55P03 / 57014) instead of holding every Access-Request behind it; the one-client-
per-transaction fallback stops at the first such timeout. `ReservationBatcher.submit` refuses at
once (the edge answers code 8) when `reservation_queue` requests already wait, while a batch
has been in the store longer than `degraded_after`, or for `degraded_after` seconds after a batch
ran out of time (the store is stuck: new requests would only queue behind it; the first request
after that window probes the store again).

Store errors (PostgreSQL down ...) propagate to the caller (`reserve_call` raises; the batcher
hands the exception to each waiting request): the edge answers Reject 8 (service unavailable).
"""
from __future__ import annotations

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
_RETRY_ONE_BY_ONE = {"55P03", "40P01", "40001"}   # lock_not_available, deadlock, serialization
_TOO_SLOW = {"55P03", "57014"}   # a lock wait or statement past store_timeout


def _request(plan: CallPlan, now: dt.datetime) -> Request:
    return request(plan, now, fit_key(plan.call_id) if plan.call_id else f"noid-{uuid.uuid4().hex}")


# --- SQLite (through SQLAlchemy: statements are local calls, nothing to batch) ------------------

class _SqliteStore:
    """One transaction per decide(); BEGIN IMMEDIATE (radiusd.db) serialises writers."""

    dialect = "sqlite"

    def __init__(self, engine: Engine):
        self.engine = engine
        self.st = sql.statements("sqlite", "admission")

    def decide(self, items: list[Request], settings: Settings, *, lock_wait: bool,
               check_existence: bool) -> list[Decision]:
        st = self.st
        with self.engine.begin() as conn:
            loaded = Loaded()
            limited = limited_clients(items)
            if limited:
                now = max(item.now for item in items)
                conn.execute(st["expire"], {"clients": limited, "now": now})
                loaded.clients = {r.client_id: ClientUsage(r.balance, r.open_calls, r.money_held)
                                  for r in conn.execute(st["clients"], {"clients": limited})}
                loaded.accounts = dict.fromkeys(counted_accounts(items), 0)
                loaded.accounts.update(conn.execute(st["accounts"], {"accounts": list(loaded.accounts)}).all())
                loaded.replaced = {r.leg_key: Replaced(r.client_id, r.account_id, Decimal(r.max_cost or 0)) for r in
                                   conn.execute(st["replaced"], {"keys": [i.key for i in items], "now": now})}
            if check_existence:
                loaded.existing_clients = set(conn.scalars(
                    st["existing_clients"], {"ids": sorted({i.plan.client.id for i in items})}))
                loaded.existing_accounts = set(conn.scalars(
                    st["existing_accounts"], {"ids": sorted({i.plan.account.id for i in items})}))
            decisions, reservations = admit_batch(items, loaded, settings.max_call_duration, settings.reservation_ttl)
            if reservations:
                conn.execute(st["upsert"], [{n: getattr(r, n) for n in RESERVATION_FIELDS} for r in reservations])
        return decisions

    def reset(self) -> None:
        pass   # SQLAlchemy has invalidated the connection; the next begin() takes a fresh one

    def close(self) -> None:
        pass


# --- PostgreSQL, the hot path: two round trips for a batch with limits, one without -------------

class _PgStore:
    """Batches over one psycopg2 connection in autocommit mode, so that BEGIN, SET LOCAL, the
    locks and the reads travel together: the first round trip locks the limited clients and
    reads their usage, the second writes the reservations and commits. A batch without limits
    is one round trip (one statement = one implicit transaction)."""

    dialect = "postgresql"

    def __init__(self, engine: Engine, timeout_ms: int | None = None):
        self.engine = engine
        self.st = sql.statements("postgresql", "admission")
        self.timeouts = sql.statements("postgresql", "timeouts")
        self.timeout_ms = timeout_ms
        self._fairy = None   # pooled connection, kept between batches

    def _cursor(self):
        if self._fairy is None:
            fairy = sql.raw_connection(self.engine)
            try:
                fairy.driver_connection.autocommit = True
                if self.timeout_ms:   # once per connection: no cost per batch
                    with fairy.driver_connection.cursor() as cur:
                        cur.execute(self.timeouts["session"], {"ms": self.timeout_ms})
            except Exception:
                fairy.invalidate()
                raise
            self._fairy = fairy
        cur = self._fairy.driver_connection.cursor()
        try:
            sql.prepare(self._fairy, cur, "admission")   # once per DBAPI connection
        except Exception:
            cur.close()
            self.reset()
            raise
        return cur

    def _load(self, cur, items: list[Request], *, lock_wait: bool, check_existence: bool) -> Loaded:
        """The first round trip when the batch needs one: opens the transaction, locks, reads."""
        st = self.st
        loaded = Loaded()
        parts = [st["begin"], st["sync_off"]]
        if lock_wait:
            parts.append(cur.mogrify(st["lock_timeout"], (LOCK_WAIT_MS,)).decode())
        limited = limited_clients(items)
        if limited:
            now = max(item.now for item in items)
            loaded.accounts = dict.fromkeys(counted_accounts(items), 0)   # no counter row: 0
            parts.append(cur.mogrify(st["lock"].execute, (sorted({i.plan.client.id for i in items}),)).decode())
            parts.append(cur.mogrify(st["expire"].execute, (limited, now)).decode())
            parts.append(cur.mogrify(st["usage"].execute, (limited, list(loaded.accounts), now,
                                                           [item.key for item in items])).decode())
        cur.execute("; ".join(parts))
        for kind, client_id, account_id, key, calls, amount, held in (cur.fetchall() if limited else ()):
            if kind == "client":
                loaded.clients[client_id] = ClientUsage(amount, int(calls), held)
            elif kind == "account":
                loaded.accounts[account_id] = int(calls)
            else:   # 'replaced'
                loaded.replaced[key] = Replaced(client_id, account_id, Decimal(amount or 0))
        if check_existence:   # rare (after a foreign-key failure)
            cur.execute(st["existing"], {"clients": sorted({i.plan.client.id for i in items}),
                                         "accounts": sorted({i.plan.account.id for i in items})})
            loaded.existing_clients, loaded.existing_accounts = set(), set()
            for kind, found in cur.fetchall():
                (loaded.existing_clients if kind == "client" else loaded.existing_accounts).add(found)
        return loaded

    def decide(self, items: list[Request], settings: Settings, *, lock_wait: bool,
               check_existence: bool) -> list[Decision]:
        import psycopg2

        st = self.st
        cur = self._cursor()
        in_block = False
        sent = "(connect)"
        try:
            if limited_clients(items) or check_existence:
                in_block = True
                sent = "(load)"
                loaded = self._load(cur, items, lock_wait=lock_wait, check_existence=check_existence)
            else:
                loaded = Loaded()
            decisions, reservations = admit_batch(items, loaded, settings.max_call_duration, settings.reservation_ttl)
            upsert = st["upsert"]
            if reservations:
                # in leg-key order: two batches re-authorizing the same calls (a switch retrying
                # through two workers) take the key index's locks in one order, never a cycle
                rows = json.dumps([[getattr(r, n) for n in upsert.names]
                                   for r in sorted(reservations, key=lambda r: r.leg_key)], default=str)
                sent = cur.mogrify(upsert.execute, (max(i.now for i in items), settings.reservation_ttl, rows))
                if in_block:
                    sent += b"; " + st["commit"].encode()
                else:
                    sent = st["sync_off"].encode() + b"; " + sent
                cur.execute(sent)
            elif in_block:
                sent = st["commit"]
                cur.execute(sent)
            in_block = False
            return decisions
        except BaseException as exc:
            dead = self._undo(exc, in_block)
            if isinstance(exc, psycopg2.Error):
                if getattr(exc, "pgcode", None) == "26000" and self._fairy is not None:
                    sql.forget_prepared(self._fairy)   # a pooler moved the session: prepare again
                text = sent.decode(errors="replace") if isinstance(sent, bytes) else sent
                raise sa_exc.DBAPIError.instance(text[:200], None, exc, psycopg2.Error,
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
                    cur.execute(self.st["rollback"])
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
                if self.timeout_ms:
                    with fairy.driver_connection.cursor() as cur:
                        cur.execute(self.timeouts["reset"])
                fairy.driver_connection.autocommit = False
                fairy.close()   # back to the pool, as it came
            except Exception:
                fairy.invalidate()


# --- retries and fallbacks ----------------------------------------------------------------------

def _pgcode(exc: BaseException) -> str | None:
    return getattr(getattr(exc, "orig", None), "pgcode", None)


def _run(store, items: list[Request], settings: Settings, lock_wait: bool) -> list[Decision]:
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


def _decide_items(store, items: list[Request], settings: Settings) -> list[Decision | BaseException]:
    if len(limited_clients(items)) <= 1 or store.dialect != "postgresql":
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
    stuck: BaseException | None = None
    for client_id in sorted(by_client):
        indexes = by_client[client_id]
        if stuck is not None:   # the store is too slow: don't wait store_timeout once per client
            decided = [stuck] * len(indexes)
        else:
            try:
                decided = _run(store, [items[i] for i in indexes], settings, lock_wait=False)
            except Exception as exc:
                decided = [exc] * len(indexes)
                if _pgcode(exc) in _TOO_SLOW:
                    stuck = exc
        for i, result in zip(indexes, decided):
            results[i] = result
    return results  # type: ignore[return-value]


def _store_for(bind, timeout_ms: int | None = None):
    """The batch store for a sessionmaker or an engine, by dialect."""
    if isinstance(bind, sessionmaker):
        with bind() as session:   # its engine, through the public API (no connection is taken)
            bind = session.get_bind()
    if not isinstance(bind, Engine):
        raise ValueError("reserve_batch needs a sessionmaker bound to an engine, or an engine")
    if bind.dialect.name == "postgresql":
        return _PgStore(bind, timeout_ms)
    if bind.dialect.name == "sqlite":
        if timeout_ms:
            sql.limit_sqlite_waits(bind, timeout_ms / 1000)
        return _SqliteStore(bind)
    raise RuntimeError(f"unsupported store dialect {bind.dialect.name}")


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
    items = [_request(plan, now) for plan, now in requests]
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


class ReservationBatcher:
    """A thread that takes the Access-Requests waiting (up to `max_batch`) and decides them in
    one `reserve_batch` call: while one batch is in the store the next one gathers, so the
    number of transactions adapts to the load (one per request when idle).

    Fair between NAS: requests wait in one queue per NAS (`plan.nas_id`) and a batch is formed
    round robin across them (radiusd.core.round_robin), so a request of a quiet NAS goes into
    the next batch whatever a flooding NAS has queued: it waits for at most the batch in the
    store, then its own. Bounds, each refused at once (the edge answers code 8 and counts the
    reason): `reservation_queue` requests in all ('queue_full'); one NAS at most
    reservation_queue // (n + 1) of them, n = NAS with requests waiting, itself included
    ('nas_share': a NAS alone may fill half, so a newcomer always finds room); and nothing while
    the store is stuck ('store_stuck').

    `submit(plan, now, token)` is called from one thread (the event loop); results go out through
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
        """Queue one request; returns None, or why it was refused at once ('queue_full',
        'store_stuck', 'nas_share': the caller answers service unavailable, nothing was queued)."""
        waiting = self._waiting
        if len(waiting) >= self.queue_max:
            self.refused["queue_full"] += 1
            return "queue_full"
        if self.stalled():
            self.refused["store_stuck"] += 1
            return "store_stuck"
        nas = plan.nas_id
        with self._ready:
            mine = waiting.waiting(nas)
            if mine >= self.nas_share(waiting.keys() + (0 if mine else 1)):
                self.refused["nas_share"] += 1
                return "nas_share"
            waiting.put(nas, (plan, now, token))
            if self._idle:
                self._idle = False
                self._ready.notify()
        return None

    def nas_share(self, nas_waiting: int) -> int:
        """Requests one NAS may have waiting while `nas_waiting` NAS (itself included) have some."""
        return fair_share(self.queue_max, nas_waiting)

    def queue_depth(self) -> int:
        return len(self._waiting)

    def waiting(self, nas_id: int) -> int:
        """Requests of one NAS waiting for a batch."""
        with self._ready:
            return self._waiting.waiting(nas_id)

    def stall(self, now: float | None = None) -> float:
        """Seconds the batch now in the store has been there (0 when idle)."""
        since = self._busy_since
        return 0.0 if since is None else max(0.0, (time.monotonic() if now is None else now) - since)

    def stalled(self) -> bool:
        return self.stall() > self.stall_after or time.monotonic() < self._slow_until

    def stop(self, timeout: float = 10.0) -> None:
        """Decide what is queued, then end the thread."""
        if self._thread.is_alive():
            with self._ready:
                self._stopping = True
                self._ready.notify()
            self._thread.join(timeout)

    def _next_batch(self) -> list:
        """The next batch, round robin across NAS; [] once stopping with nothing left."""
        with self._ready:
            while not self._waiting and not self._stopping:
                self._idle = True
                self._ready.wait()
            self._idle = False
            batch = self._waiting.take_many(self.max_batch)
            if batch:
                self._busy_since = time.monotonic()
            return batch

    def _run(self) -> None:
        while batch := self._next_batch():
            try:
                results = self._decide([(plan, now) for plan, now, _ in batch])
            finally:
                self._busy_since = None
            if any(isinstance(r, BaseException) and _pgcode(r) in _TOO_SLOW for r in results):
                self._slow_until = time.monotonic() + self.stall_after
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
                self._store = _store_for(self.sessions, int(self.settings.store_timeout * 1000))
            return reserve_batch(self.sessions, requests, self.settings, store=self._store)
        except Exception as exc:  # a bug must cost this batch, never the thread
            return [exc] * len(requests)


def _deliver_here(pairs) -> None:
    for done, result in pairs:
        done(result)
