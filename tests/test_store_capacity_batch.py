"""Reservations decided many at a time: a batch is exactly as strict as one call after the other."""
from __future__ import annotations

import datetime as dt
import threading
import time
from decimal import Decimal

from sqlalchemy import delete, text

from radiusd.config import Settings
from radiusd.core.authorize import plan_call
from radiusd.core.decision import Accept, Reject
from radiusd.core.facts import AuthFacts, PapCredentials
from radiusd.db import create_schema, make_engine, make_sessionmaker
from radiusd.models import Account
from radiusd.pipeline.reservation_batcher import ReservationBatcher
from radiusd.store.capacity import reserve_batch
from test_accounting_support import T0, auth, open_calls, seed, snapshot_of

SETTINGS = Settings(reservation_ttl=30)


def _plans(snap, nas_id, call_ids, at=T0):
    return [(plan_call(auth(nas_id, call_id), snap, at), at) for call_id in call_ids]


def _alice(ids, call_id):
    return AuthFacts(nas_id=ids["kam"], caller_address=None, user_name="alice", credentials=PapCredentials("alice-pw"),
                     calling_number="15551230000", called_number="441612345678", call_id=call_id)


def _reasons(results):
    return [r.reason.name if isinstance(r, Reject) else "ACCEPT" for r in results]


def test_one_batch_of_many_calls_of_one_client_admits_exactly_its_capacity(sessions):
    ids = seed(sessions, capacity=3)
    snap = snapshot_of(sessions)
    results = reserve_batch(sessions, _plans(snap, ids["gw-a"], [f"b{n}" for n in range(10)]), SETTINGS)
    assert _reasons(results) == ["ACCEPT"] * 3 + ["CAPACITY_CLIENT"] * 7
    assert sorted(row.call_id for row in open_calls(sessions)) == ["b0", "b1", "b2"]
    # the next batch sees what the first one committed
    later = reserve_batch(sessions, _plans(snap, ids["gw-a"], ["b10", "b11"]), SETTINGS)
    assert _reasons(later) == ["CAPACITY_CLIENT"] * 2


def test_reauth_inside_a_batch_refreshes_one_reservation(sessions):
    ids = seed(sessions, capacity=1)
    snap = snapshot_of(sessions)
    results = reserve_batch(sessions, _plans(snap, ids["gw-a"], ["same", "same", "other"]), SETTINGS)
    assert _reasons(results) == ["ACCEPT", "ACCEPT", "CAPACITY_CLIENT"]
    [row] = open_calls(sessions)
    assert row.leg_key == f"auth:{ids['gw-a']}:same" and row.state == "reserved"
    # a re-auth of an existing reservation is not counted against itself, a new call is
    again = reserve_batch(sessions, _plans(snap, ids["gw-a"], ["other", "same"], T0 + dt.timedelta(seconds=5)),
                          SETTINGS)
    assert _reasons(again) == ["CAPACITY_CLIENT", "ACCEPT"]
    [row] = open_calls(sessions)
    assert row.expires_at == T0 + dt.timedelta(seconds=35)


def test_money_held_by_earlier_calls_of_the_batch_counts_for_later_ones(sessions):
    # 0.20 buys 120 s at 0.10/min: the first call may take all of it, the second finds nothing left
    ids = seed(sessions, capacity=None, balance="0.20")
    snap = snapshot_of(sessions)
    first, second = reserve_batch(sessions, _plans(snap, ids["gw-a"], ["m1", "m2"]), SETTINGS)
    assert isinstance(first, Accept) and first.max_duration == 120 and first.max_cost == Decimal("0.2")
    assert isinstance(second, Reject) and second.reason.return_code == 12
    assert [row.max_cost for row in open_calls(sessions)] == [Decimal("0.2")]


def test_two_limited_clients_in_one_batch_are_each_held_to_their_own_limits(sessions):
    ids = seed(sessions, capacity=1)   # acme: 1 call; kamco (alice): no capacity, balance 50, no credit
    snap = snapshot_of(sessions)
    requests = []
    for n in range(3):
        requests.append((plan_call(auth(ids["gw-a"], f"a{n}"), snap, T0), T0))
        requests.append((plan_call(_alice(ids, f"k{n}"), snap, T0), T0))
    results = reserve_batch(sessions, requests, SETTINGS)
    assert _reasons(results) == ["ACCEPT", "ACCEPT", "CAPACITY_CLIENT", "ACCEPT", "CAPACITY_CLIENT", "ACCEPT"]
    assert len(open_calls(sessions, client_id=ids["kamco"])) == 3
    assert len(open_calls(sessions, client_id=ids["acme"])) == 1


def test_an_account_deleted_since_the_snapshot_rejects_only_its_own_calls(sessions):
    ids = seed(sessions, capacity=None, credit_limit=None)   # nothing limited: no lock, no count
    snap = snapshot_of(sessions)
    requests = [(plan_call(_alice(ids, "k1"), snap, T0), T0)] + _plans(snap, ids["gw-a"], ["g1"])
    with sessions() as s, s.begin():
        s.execute(delete(Account).where(Account.id == ids["alice"]))
    results = reserve_batch(sessions, requests, SETTINGS)
    assert isinstance(results[0], Reject) and results[0].reason.name == "UNKNOWN_ACCOUNT"
    assert results[0].detail == "account not in store"
    assert isinstance(results[1], Accept)
    assert [row.call_id for row in open_calls(sessions)] == ["g1"]


def test_the_batcher_thread_answers_every_request_and_keeps_capacity_exact(sessions):
    ids = seed(sessions, capacity=4)
    snap = snapshot_of(sessions)
    answers: dict[str, object] = {}
    done = threading.Event()

    def deliver(pairs):
        for call_id, result in pairs:
            answers[call_id] = result
        if len(answers) == 40:
            done.set()

    batcher = ReservationBatcher(sessions, SETTINGS, deliver=deliver, max_batch=8).start()
    try:
        for n in range(40):
            call_id = f"q{n}"
            batcher.submit(plan_call(auth(ids["gw-a"], call_id), snap, T0), T0, call_id)
        assert done.wait(30)
    finally:
        batcher.stop()
    assert sum(isinstance(r, Accept) for r in answers.values()) == 4
    assert all(isinstance(r, Accept | Reject) for r in answers.values())
    assert len(open_calls(sessions)) == 4 and batcher.decided == 40


def test_a_batch_kept_waiting_for_a_client_lock_is_decided_client_by_client(pg_url):
    """A batch holding one client's lock while waiting for another's could deadlock with an
    accounting group that debits them in the other order: past LOCK_WAIT_MS it backs off and
    decides each client in its own transaction, with the same result."""
    engine = make_engine(pg_url)
    create_schema(engine)
    sessions = make_sessionmaker(engine)
    ids = seed(sessions, capacity=1)
    snap = snapshot_of(sessions)
    requests = []
    for n in range(2):
        requests.append((plan_call(auth(ids["gw-a"], f"a{n}"), snap, T0), T0))
        requests.append((plan_call(_alice(ids, f"k{n}"), snap, T0), T0))
    holder = engine.connect()
    tx = holder.begin()
    holder.execute(text("SELECT id FROM clients WHERE id = :id FOR UPDATE"), {"id": ids["kamco"]})
    out = []
    worker = threading.Thread(target=lambda: out.append(reserve_batch(sessions, requests, SETTINGS)))
    worker.start()
    try:
        time.sleep(0.6)
        # backed off and decided acme alone, while kamco's row is still locked by the other transaction
        assert len(open_calls(sessions, client_id=ids["acme"])) == 1 and not out
    finally:
        tx.commit()
        worker.join(30)
        holder.close()
    [results] = out
    assert _reasons(results) == ["ACCEPT", "ACCEPT", "CAPACITY_CLIENT", "ACCEPT"]
    assert len(open_calls(sessions)) == 3
    engine.dispose()


def test_asynchronous_commit_stays_inside_the_reservation_transaction(pg_url):
    engine = make_engine(pg_url)
    create_schema(engine)
    sessions = make_sessionmaker(engine)
    ids = seed(sessions, capacity=2)
    snap = snapshot_of(sessions)
    reserve_batch(engine, _plans(snap, ids["gw-a"], ["s1"]), SETTINGS)
    # SET LOCAL synchronous_commit = off: the connection handed back to the pool (which the
    # accounting writer uses too) commits synchronously again
    with engine.connect() as conn:
        assert conn.execute(text("SHOW synchronous_commit")).scalar() == "on"
    assert [row.call_id for row in open_calls(sessions)] == ["s1"]
    engine.dispose()


def test_reservation_rows_keep_what_the_switch_sent_exactly(sessions):
    """The PostgreSQL upsert carries the rows as one JSON text: quotes, backslashes, braces and
    non-ASCII numbers come back unchanged, money exact, times from `now` and the ttl."""
    ids = seed(sessions, capacity=5)
    snap = snapshot_of(sessions)
    awkward = ['it\'s "x"', "back\\slash{1,2}", "ünïcødé-☎", "NULL", "\t tab"]
    plans = []
    for n, text_ in enumerate(awkward):
        facts = AuthFacts(nas_id=ids["gw-a"], caller_address="198.51.100.10", calling_number=text_,
                          called_number="441612345678", call_id=f"{text_}-{n}")
        plans.append((plan_call(facts, snap, T0), T0))
    results = reserve_batch(sessions, plans, SETTINGS)
    assert _reasons(results) == ["ACCEPT"] * len(awkward)
    rows = {row.call_id: row for row in open_calls(sessions)}
    assert {row.caller for row in rows.values()} == set(awkward)
    for result, (plan, _) in zip(results, plans):
        row = rows[plan.call_id]
        assert (row.max_cost, row.max_duration) == (result.max_cost, result.max_duration)
        assert (row.created_at, row.last_seen_at, row.expires_at) == (T0, T0, T0 + dt.timedelta(seconds=30))
