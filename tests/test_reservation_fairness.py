"""Fairness between NAS where Access-Requests wait for the store: the reservation batcher keeps
one queue per NAS and forms each batch round robin across them, so a flooding NAS cannot delay
another NAS's request beyond one batch, and cannot fill the admission queue for the others.

The batcher runs against a real store (SQLite and PostgreSQL); the test holds its first batch at
the delivery (the batcher's own thread waits on an event) so the queues fill deterministically."""
from __future__ import annotations

import threading

import pytest

from radiusd.config import Settings
from radiusd.core.authorize import plan_call
from radiusd.core.decision import Accept
from radiusd.core.round_robin import RoundRobin
from radiusd.pipeline.reservation_batcher import ReservationBatcher
from test_accounting_support import T0, auth, seed, snapshot_of

WAIT = 30   # seconds: a bound on waiting for the batcher thread, never a speed assertion


# --- the serving rule (pure) ------------------------------------------------------------------

def test_one_item_per_key_per_turn_whatever_one_key_has_queued():
    rr = RoundRobin()
    for n in range(100):
        rr.put("flood", f"f{n}")
    rr.put("quiet", "q0")
    batch = rr.take_many(4)
    assert batch == ["f0", "q0", "f1", "f2"]
    assert rr.waiting("quiet") == 0 and rr.waiting("flood") == 97 and len(rr) == 97


def test_the_turn_order_carries_over_from_one_batch_to_the_next():
    # more NAS than a batch holds: each is served within ceil(keys / batch) batches
    rr = RoundRobin()
    for key in "abcde":
        rr.put(key, key + "1")
        rr.put(key, key + "2")
    assert rr.take_many(3) == ["a1", "b1", "c1"]
    assert rr.take_many(3) == ["d1", "e1", "a2"]
    assert rr.take_many(10) == ["b2", "c2", "d2", "e2"]
    assert rr.take_many(10) == [] and rr.take() is None and rr.keys() == 0


# --- the batcher over a real store ----------------------------------------------------------

class HeldBatcher:
    """A ReservationBatcher whose first batch is held in `deliver` until `release()`; every
    delivered batch is recorded as the list of its tokens, in order."""

    def __init__(self, sessions, settings: Settings, max_batch: int):
        self.batches: list[list[str]] = []
        self.results: dict[str, object] = {}
        self.holding = threading.Event()
        self._release = threading.Event()
        self._changed = threading.Condition()
        self.batcher = ReservationBatcher(sessions, settings, deliver=self._deliver, max_batch=max_batch).start()

    def _deliver(self, pairs) -> None:
        if not self.batches:
            self.holding.set()
            assert self._release.wait(WAIT)
        with self._changed:
            self.batches.append([token for token, _ in pairs])
            self.results.update(pairs)
            self._changed.notify_all()

    def release(self) -> None:
        self._release.set()

    def wait_decided(self, count: int) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.results) >= count, WAIT), self.batches

    def batch_of(self, token: str) -> int:
        return next(n for n, batch in enumerate(self.batches) if token in batch)


@pytest.fixture
def store(sessions):
    ids = seed(sessions, capacity=None, credit_limit=None)   # no limits: every call accepted
    return ids, snapshot_of(sessions)


def _plan(store, nas: str, call_id: str):
    ids, snap = store
    return plan_call(auth(ids[nas], call_id), snap, T0)


def test_a_flooding_nas_delays_another_by_at_most_the_batch_in_the_store(sessions, store):
    held = HeldBatcher(sessions, Settings(reservation_ttl=30), max_batch=8)
    try:
        assert held.batcher.submit(_plan(store, "gw-a", "first"), T0, "first") is None
        assert held.holding.wait(WAIT)          # batch 0 is out of the queue, held at delivery
        flood = [f"flood{n}" for n in range(200)]
        for call_id in flood:
            assert held.batcher.submit(_plan(store, "gw-a", call_id), T0, call_id) is None
        assert held.batcher.submit(_plan(store, "gw-b", "quiet"), T0, "quiet") is None
        assert held.batcher.waiting(store[0]["gw-a"]) == 200
        held.release()
        held.wait_decided(202)
    finally:
        held.release()
        held.batcher.stop()
    # the quiet NAS's request, queued behind 200 of the flooder's, is in the very next batch,
    # which the flooder shares with it; the flooder's own requests keep their order
    assert held.batch_of("quiet") == 1
    assert held.batches[1] == ["flood0", "quiet", *flood[1:7]]
    assert [t for batch in held.batches[1:] for t in batch if t != "quiet"] == flood
    assert all(isinstance(held.results[t], Accept) for t in ["first", "quiet", *flood])
    assert held.batcher.decided == 202


def test_one_nas_cannot_fill_the_admission_queue_for_the_others(sessions, store):
    ids = store[0]
    # 12 requests may wait; one NAS alone may hold half, and with n NAS waiting 12 // (n + 1)
    held = HeldBatcher(sessions, Settings(reservation_ttl=30, reservation_queue=12), max_batch=4)
    try:
        assert held.batcher.submit(_plan(store, "gw-a", "first"), T0, "first") is None
        assert held.holding.wait(WAIT)
        flooder = [held.batcher.submit(_plan(store, "gw-a", f"a{n}"), T0, f"a{n}") for n in range(20)]
        assert flooder == [None] * 6 + ["nas_share"] * 14
        # a second NAS still gets in, up to its share once two NAS wait (12 // 3)
        second = [held.batcher.submit(_plan(store, "gw-b", f"b{n}"), T0, f"b{n}") for n in range(6)]
        assert second == [None] * 4 + ["nas_share"] * 2
        # a third NAS: 12 // 4 = 3 each, but only 2 places are left in all
        third = [held.batcher.submit(_plan(store, "kam", f"k{n}"), T0, f"k{n}") for n in range(4)]
        assert third == [None, None, "queue_full", "queue_full"]
        assert held.batcher.queue_depth() == 12
        assert held.batcher.refused == {"queue_full": 2, "store_stuck": 0, "nas_share": 16}
        assert (held.batcher.waiting(ids["gw-a"]), held.batcher.waiting(ids["gw-b"]),
                held.batcher.waiting(ids["kam"])) == (6, 4, 2)
        held.release()
        held.wait_decided(13)
    finally:
        held.release()
        held.batcher.stop()
    # round robin across the three: the late NAS are not behind the flooder's six
    assert held.batches[1] == ["a0", "b0", "k0", "a1"]
    assert held.batches[2] == ["b1", "k1", "a2", "b2"]
    assert held.batcher.queue_depth() == 0


def test_stop_decides_every_queued_request_of_every_nas(sessions, store):
    held = HeldBatcher(sessions, Settings(reservation_ttl=30), max_batch=5)
    held.batcher.submit(_plan(store, "gw-a", "first"), T0, "first")
    assert held.holding.wait(WAIT)
    tokens = [f"{nas}-{n}" for n in range(7) for nas in ("gw-a", "gw-b")]
    for token in tokens:
        assert held.batcher.submit(_plan(store, token.rsplit("-", 1)[0], token), T0, token) is None
    stopper = threading.Thread(target=held.batcher.stop)
    stopper.start()
    held.release()
    stopper.join(WAIT)
    assert not stopper.is_alive()
    assert sorted(held.results) == sorted(["first", *tokens])


# --- the accounting writer's queue ------------------------------------------------------------

def test_one_nas_cannot_fill_the_accounting_queue_for_the_others(sessions, store, tmp_path):
    from radiusd.pipeline.accounting_writer import AccountingWriter
    from test_accounting_writer import Acks, stop_record

    ids, snap = store
    writer = AccountingWriter(sessions, lambda: snap, Settings(spool_path=str(tmp_path / "spool"), accounting_queue=12),
                              linger=0)
    holding, release = threading.Event(), threading.Event()

    def hold(ok: bool) -> None:   # the writer thread answers the first record, then waits here
        holding.set()
        assert release.wait(WAIT)

    acks = Acks()
    writer.start()
    try:
        writer.submit(stop_record(ids["gw-a"], 0), hold)
        assert holding.wait(WAIT)

        def submit(nas: str, n: int) -> bool | None:
            record = stop_record(ids[nas], n)
            writer.submit(record, acks.callback(record.leg_key))
            return acks.results.get(record.leg_key)   # False at once when refused, else None for now

        # 12 may wait; once half full, one NAS may hold 12 // (n + 1) with n NAS waiting
        assert [submit("gw-a", n) for n in range(1, 21)] == [None] * 6 + [False] * 14
        assert [submit("gw-b", n) for n in range(21, 27)] == [None] * 4 + [False] * 2
        assert [submit("kam", n) for n in range(27, 31)] == [None, None, False, False]
        assert writer.queue_depth() == 12
        assert (writer.counters["nas_share"], writer.counters["queue_full"]) == (16, 2)
        release.set()
        acks.wait(30)
    finally:
        release.set()
        writer.stop()
    stored = sorted(key for key, ok in acks.results.items() if ok)
    assert len(stored) == 12 and writer.counters["committed"] == 13
