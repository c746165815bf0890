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
import uuid
from decimal import Decimal
from typing import Sequence

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from radiusd.config import Settings
from radiusd.core.admission import (RESERVATION_FIELDS, ClientUsage, Decision, Loaded, Replaced, Request,
                                    admit_batch, counted_accounts, limited_clients, request)
from radiusd.core.decision import CallPlan
from radiusd.core.keys import fit_key
from radiusd.store import sql

LOCK_WAIT_MS = 100          # longest wait for a client lock inside a multi-client batch
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
    """Batches over one kept connection (sql.kept_connection), so that BEGIN, SET LOCAL,
    the locks and the reads travel together in the first round trip, the upsert and COMMIT in the
    second; a batch without limits is one round trip (one statement, one implicit transaction)."""

    def __init__(self, engine: Engine, timeout_ms: int | None = None):
        self.engine = engine
        self.st = sql.statements("postgresql", "admission")
        self.timeout_ms = timeout_ms
        self._conn = None   # kept between batches (sql.kept_connection)

    def _cursor(self):
        if self._conn is None:
            self._conn = sql.kept_connection(self.engine, self.timeout_ms)
        cur = sql.driver_connection(self._conn).cursor()
        try:
            sql.prepare(sql.pool_connection(self._conn), cur, "admission")   # once per DBAPI connection
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
                pool = sql.pool_connection(self._conn)
                conn = pool.driver_connection
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
                raise sql.driver_error(exc, self.engine.dialect, pool, sent[:200], invalidated=dead) from None

    def close(self) -> None:
        conn, self._conn = self._conn, None
        sql.drop_connection(conn)

    reset = close


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
        if sql.is_timeout(decided[0]):
            stuck = decided[0]
        for i, result in zip(indexes, decided):
            results[i] = result
    return results


def store_for(bind, timeout_ms: int | None = None):
    """The batch store for a sessionmaker or an engine, by dialect."""
    bind = sql.engine_of(bind)
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
    with contextlib.closing(store_for(sessions)) as store:
        return _decide_items(store, items, settings)
