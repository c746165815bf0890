"""Capacity and money reservations at Access-Request time, exact under concurrency."""
from __future__ import annotations

import datetime as dt
import multiprocessing
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

from radiusd.config import Settings
from radiusd.core.authorize import plan_call
from radiusd.core.decision import Accept, Reject
from radiusd.db import make_engine, make_sessionmaker
from test_accounting_support import reserve_call
from test_accounting_support import T0, acct, auth, feed, open_calls, seed, snapshot_of

SETTINGS = Settings(reservation_ttl=30)
S = dt.timedelta(seconds=1)


def test_reauth_for_the_same_call_refreshes_instead_of_counting_twice(sessions):
    ids = seed(sessions, capacity=1)
    snap = snapshot_of(sessions)
    plan = plan_call(auth(ids["gw-a"], "same-call"), snap, T0)
    assert isinstance(reserve_call(sessions, plan, T0, SETTINGS), Accept)
    assert isinstance(reserve_call(sessions, plan, T0 + 5 * S, SETTINGS), Accept)
    [row] = open_calls(sessions)
    assert row.state == "reserved" and row.expires_at == T0 + 35 * S and row.leg_key == f"auth:{ids['gw-a']}:same-call"
    other = reserve_call(sessions, plan_call(auth(ids["gw-a"], "other"), snap, T0 + 6 * S), T0 + 6 * S, SETTINGS)
    assert isinstance(other, Reject) and other.reason.name == "CAPACITY_CLIENT"


def test_an_expired_reservation_no_longer_counts(sessions):
    ids = seed(sessions, capacity=1)
    snap = snapshot_of(sessions)
    reserve_call(sessions, plan_call(auth(ids["gw-a"], "r1"), snap, T0), T0, SETTINGS)
    late = T0 + 31 * S
    assert isinstance(reserve_call(sessions, plan_call(auth(ids["gw-a"], "r2"), snap, late), late, SETTINGS), Accept)


def test_worst_case_cost_of_calls_in_progress_is_held_against_the_balance(sessions):
    # 0.20 buys 120 s at 0.10/min: the first call may take all of it, the second finds nothing left
    ids = seed(sessions, capacity=None, balance="0.20")
    snap = snapshot_of(sessions)
    first = reserve_call(sessions, plan_call(auth(ids["gw-a"], "m1"), snap, T0), T0, SETTINGS)
    assert isinstance(first, Accept) and first.max_duration == 120 and first.max_cost == Decimal("0.2")
    second = reserve_call(sessions, plan_call(auth(ids["gw-a"], "m2"), snap, T0), T0, SETTINGS)
    assert isinstance(second, Reject) and second.reason.return_code == 12
    # the first call ends after 30 s (0.05): what is left (0.15) buys the next call 90 s
    feed(sessions, snap, acct(ids["gw-a"], "stop", "M1", call_id="m1", called_number="441612345678",
                              event_time=T0 + 40 * S, session_time=30))
    third = reserve_call(sessions, plan_call(auth(ids["gw-a"], "m3"), snap, T0 + 41 * S), T0 + 41 * S, SETTINGS)
    assert isinstance(third, Accept) and third.max_duration == 90


def test_capacity_exact_with_concurrent_threads(sessions):
    ids = seed(sessions, capacity=3)
    snap = snapshot_of(sessions)
    gate = threading.Barrier(6)

    def attempt(worker):
        gate.wait()
        return [reserve_call(sessions, plan_call(auth(ids["gw-a"], f"t{worker}-{n}"), snap, T0), T0, SETTINGS)
                for n in range(5)]

    with ThreadPoolExecutor(6) as pool:
        results = [r for batch in pool.map(attempt, range(6)) for r in batch]
    assert sum(isinstance(r, Accept) for r in results) == 3
    assert len(open_calls(sessions)) == 3


def _hammer(url: str, worker: int, attempts: int, start, out) -> None:
    """One radiusd-like process: its own engine, snapshot and threads, all reserving for acme."""
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    snap = snapshot_of(sessions)
    start.wait(30)

    def one(n):
        plan = plan_call(auth(1, f"p{worker}-{n}"), snap, T0)
        return isinstance(reserve_call(sessions, plan, T0, SETTINGS), Accept)

    with ThreadPoolExecutor(4) as pool:
        accepted = sum(pool.map(one, range(attempts)))
    engine.dispose()
    out.put(accepted)


def test_capacity_exact_across_two_processes_on_postgresql(pg_url):
    engine = make_engine(pg_url)
    from radiusd.db import create_schema

    create_schema(engine)
    sessions = make_sessionmaker(engine)
    ids = seed(sessions, capacity=5)
    assert ids["gw-a"] == 1
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(pg_url, w, 40, start, out)) for w in range(2)]
    for p in procs:
        p.start()
    try:
        start.set()
        accepted = [out.get(timeout=120) for _ in procs]
    finally:
        for p in procs:
            p.join(30)
    assert all(p.exitcode == 0 for p in procs)
    assert sum(accepted) == 5  # 80 attempts from two processes, capacity 5
    assert len(open_calls(sessions)) == 5
    engine.dispose()
