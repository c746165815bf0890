"""The accounting writer against real PostgreSQL: groups of records in one transaction, the
same records through two writers at once (duplicates through two servers), a bad record, a
broken connection, a deadlock, lost prepared statements, and Accounting-On inside a group.

The rules themselves are tested as pure data in test_accounting_transitions.py.
"""
from __future__ import annotations

import datetime as dt
import random
import threading
from decimal import Decimal

import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import DBAPIError

from radiusd.config import Settings
from radiusd.core.authorize import plan_call
from radiusd.core.facts import AcctFacts
from radiusd.db import make_engine, make_sessionmaker
from radiusd.models import ActiveCall, Cdr, CdrLeg, Client
from radiusd.store.accounting import apply, apply_group
from radiusd.pipeline.accounting_writer import AccountingWriter
from test_accounting_support import reserve_call
from test_accounting_support import CUSTOMER_IP, T0, VENDOR_IP, acct, auth, balance, cdrs, seed, snapshot_of

S = dt.timedelta(seconds=1)
NOW = T0 + 3600 * S
SETTINGS = Settings(reservation_ttl=30, stale_call_after=600)


@pytest.fixture
def pg_sessions(pg_engine):
    return make_sessionmaker(pg_engine)


def legs_of(ids) -> list[dict]:
    """Leg templates: who sends it and how it is identified."""
    a, b, k = ids["gw-a"], ids["gw-b"], ids["kam"]
    return [
        dict(nas=a, leg="orig", caller_address=CUSTOMER_IP, called_number="441612345678"),
        dict(nas=a, leg="orig", caller_address=CUSTOMER_IP, called_number="442079460000"),
        dict(nas=a, leg="orig", caller_address=CUSTOMER_IP, called_number="33123456"),     # unrated today
        dict(nas=k, leg="orig", user_name="alice", called_number="4420123"),
        dict(nas=b, leg="term", remote_address=VENDOR_IP, called_number="441612345678"),  # vendor leg
        dict(nas=b, leg="orig", caller_address="10.0.0.1", called_number="441612345678"),  # nobody's
    ]


def scenario(ids, rnd: random.Random, calls: int = 14) -> tuple[list[AcctFacts], list[str]]:
    """Random events of `calls` calls (interleaved), and the call ids that hold a reservation."""
    templates = legs_of(ids)
    per_leg: list[list[AcctFacts]] = []
    reserved = []
    for n in range(calls):
        t = rnd.choice(templates)
        call_id = f"call-{n}" if rnd.random() < 0.85 else "shared"  # two legs may share a call id
        if t["leg"] == "orig" and t["nas"] == ids["gw-a"] and rnd.random() < 0.5:
            reserved.append(call_id)
        start_at = T0 + rnd.randint(0, 200) * S
        length = rnd.choice([0, 5, 43, 61, 130])
        kw = {name: value for name, value in t.items() if name not in ("nas", "leg")}
        sid = f"S{n}"

        def event(status, at, **extra):
            return acct(t["nas"], status, sid, leg=t["leg"], call_id=call_id, event_time=at, **kw, **extra)

        events = [event("start", start_at, connect_time=start_at if rnd.random() < 0.5 else None)]
        if length > 20 and rnd.random() < 0.6:
            events.append(event("interim", start_at + 20 * S, session_time=rnd.choice([20, None])))
        end = start_at + length * S
        if rnd.random() < 0.1:
            events.append(event("failed", end, session_time=0, disconnect_cause="11"))
        elif rnd.random() < 0.9:  # else: still open at the end
            events.append(event("stop", end, session_time=rnd.choice([length, None]), disconnect_time=end,
                                disconnect_cause=rnd.choice(["10", "10", "11", None]), terminate_cause=1))
        if rnd.random() < 0.3:
            events.append(event("interim", end + 5 * S, session_time=length + 5))  # after the stop
        if rnd.random() < 0.15 and len(events) > 1:
            events[0], events[-1] = events[-1], events[0]  # Stop before Start
        events += [rnd.choice(events) for _ in range(rnd.randint(0, 2))]  # retransmissions
        per_leg.append(events)
    merged = []
    while any(per_leg):
        events = rnd.choice([e for e in per_leg if e])
        merged.append(events.pop(0))
    if rnd.random() < 0.3:  # a reboot of gw-a somewhere in the middle
        merged.insert(rnd.randint(0, len(merged)), acct(ids["gw-a"], "on", "", event_time=T0 + 100 * S))
    return merged, reserved


def reset(sessions, ids, reserved: list[str]) -> None:
    """Back to the seed: no calls, no CDRs, the seed balances; then the Access-Accept reservations."""
    with sessions() as s, s.begin():
        s.execute(delete(ActiveCall))
        s.execute(delete(Cdr))
        s.execute(delete(CdrLeg))
        for name, money in (("acme", "100"), ("kamco", "50"), ("vendorco", "0")):
            s.execute(update(Client).where(Client.id == ids[name]).values(balance=Decimal(money)))
    snap = snapshot_of(sessions)
    for call_id in dict.fromkeys(reserved):
        reserve_call(sessions, plan_call(auth(ids["gw-a"], call_id), snap, T0), T0, SETTINGS)


def state(sessions) -> dict:
    """Everything accounting writes, without generated ids."""
    with sessions() as s:
        cdr_rows = sorted(tuple((c.name, getattr(r, c.name)) for c in Cdr.__table__.c if c.name not in ("id", "created_at"))
                          for r in s.scalars(select(Cdr)))
        calls = sorted(tuple((c.name, getattr(r, c.name)) for c in ActiveCall.__table__.c if c.name != "id")
                       for r in s.scalars(select(ActiveCall)))
        legs = sorted((r.leg_key, r.disconnect_time) for r in s.scalars(select(CdrLeg)))
        money = sorted((r.name, r.balance) for r in s.scalars(select(Client)))
    return {"cdrs": cdr_rows, "calls": calls, "legs": legs, "balances": money}


def one_by_one(sessions, snap, events) -> None:
    for facts in events:
        with sessions() as s, s.begin():
            apply(s, facts, snap, NOW)


def test_a_whole_call_in_one_group_takes_over_the_reservation_and_debits_once(pg_sessions):
    ids = seed(pg_sessions, capacity=None, credit_limit=None)
    snap = snapshot_of(pg_sessions)
    a = ids["gw-a"]
    reset(pg_sessions, ids, ["c1"])
    common = dict(call_id="c1", caller_address=CUSTOMER_IP, called_number="441612345678")
    start = acct(a, "start", "A1", event_time=T0 + 2 * S, **common)
    stop = acct(a, "stop", "A1", event_time=T0 + 45 * S, session_time=43, **common)
    with pg_sessions() as s, s.begin():
        apply_group(s, [start, start, stop, start, stop], snap, NOW)
    [cdr] = cdrs(pg_sessions)
    assert (cdr.account_id, cdr.connect_time, cdr.duration, cdr.cost) == (ids["acme-gw"], T0 + 2 * S, 43,
                                                                         Decimal("0.080000"))
    assert state(pg_sessions)["calls"] == []  # the reservation became the call, and the call ended
    assert balance(pg_sessions, ids["acme"]) == Decimal("99.920000")


def test_two_writers_given_the_same_legs_at_once_write_each_cdr_and_debit_once(pg_url, pg_engine, tmp_path):
    engine = pg_engine
    sessions = make_sessionmaker(engine)
    ids = seed(sessions, capacity=None, credit_limit=None)
    snap = snapshot_of(sessions)
    a = ids["gw-a"]
    events = []
    for n in range(150):
        common = dict(call_id=f"d{n}", caller_address=CUSTOMER_IP, called_number="441612345678")
        events.append(acct(a, "start", f"D{n}", event_time=T0 + n * S, **common))
        events.append(acct(a, "stop", f"D{n}", event_time=T0 + (n + 43) * S, session_time=43, **common))
    writers = [AccountingWriter(make_sessionmaker(make_engine(pg_url)), lambda: snap,
                                Settings(spool_path=str(tmp_path / f"spool-{i}")), linger=0.002, batch_max=25)
               for i in range(2)]
    acks, lock = [], threading.Lock()

    def done(ok):
        with lock:
            acks.append(ok)

    for writer in writers:
        writer.start()
    rnd = random.Random(5)
    for i, facts in enumerate(events):
        order = writers if rnd.random() < 0.5 else writers[::-1]
        for writer in order:  # both servers got the packet
            writer.submit(facts, done)
    for writer in writers:
        writer.stop()
    assert len(acks) == 2 * len(events) and all(acks)
    assert sum(w.counters["spooled"] for w in writers) == 0
    rows = cdrs(sessions)
    assert len(rows) == 150 and len({r.leg_key for r in rows}) == 150
    assert balance(sessions, ids["acme"]) == Decimal("100") - 150 * Decimal("0.08")
    assert state(sessions)["calls"] == []
    for writer in writers:
        writer.groups.sessions.kw["bind"].dispose()



def stop_record(nas_id: int, n: int, seconds: int = 43) -> AcctFacts:
    """A Stop with no Start: one CDR of 0.08 (43 s on prefix 44) for acme."""
    return acct(nas_id, "stop", f"G{n}", call_id=f"g{n}", caller_address=CUSTOMER_IP, called_number="441612345678",
                event_time=T0 + n * S, session_time=seconds)


class Acks:
    def __init__(self):
        self.lock = threading.Lock()
        self.results: dict[str, bool] = {}
        self.all = threading.Event()
        self.expected = 0

    def callback(self, key: str):
        def done(ok: bool):
            with self.lock:
                self.results[key] = ok
                if len(self.results) >= self.expected:
                    self.all.set()
        return done

    def wait(self, count: int, timeout: float = 30) -> None:
        self.expected = count
        with self.lock:
            if len(self.results) >= count:
                return
        assert self.all.wait(timeout), f"only {len(self.results)} of {count} records answered"


def test_a_bad_record_sends_its_group_to_savepoints_and_the_rest_is_written_once(pg_sessions, tmp_path):
    ids = seed(pg_sessions, capacity=None, credit_limit=None)
    snap = snapshot_of(pg_sessions)
    writer = AccountingWriter(pg_sessions, lambda: snap, Settings(spool_path=str(tmp_path / "spool")), linger=0.2)
    writer.start()
    acks = Acks()
    bad = AcctFacts(nas_id=ids["gw-a"], status="bogus", acct_session_id="B", leg_key="bad", event_time=T0)
    records = [stop_record(ids["gw-a"], 1), stop_record(ids["gw-a"], 2), bad, stop_record(ids["gw-a"], 3)]
    for facts in records:
        writer.submit(facts, acks.callback(facts.leg_key))
    acks.wait(4)
    writer.stop()
    assert all(acks.results.values())  # the bad one is kept in the dead-letter file, so answered too
    assert writer.counters["group_retries"] == 1 and writer.counters["dead_lettered"] == 1
    assert len(cdrs(pg_sessions)) == 3  # the fast attempt was rolled back: nothing twice
    assert balance(pg_sessions, ids["acme"]) == Decimal("100") - 3 * Decimal("0.08")


def test_groups_without_trouble_take_the_fast_path(pg_sessions, tmp_path):
    ids = seed(pg_sessions, capacity=None, credit_limit=None)
    snap = snapshot_of(pg_sessions)
    writer = AccountingWriter(pg_sessions, lambda: snap, Settings(spool_path=str(tmp_path / "spool")), linger=0.01)
    writer.start()
    acks = Acks()
    for n in range(120):
        facts = stop_record(ids["gw-a"], n)
        writer.submit(facts, acks.callback(facts.leg_key))
    acks.wait(120)
    writer.stop()
    assert all(acks.results.values()) and writer.counters["committed"] == 120
    assert writer.counters["group_retries"] == 0 and writer.counters["groups"] < 120
    assert len(cdrs(pg_sessions)) == 120


def test_a_broken_writer_connection_is_replaced_without_spooling(pg_url, pg_engine, tmp_path):
    engine = pg_engine
    sessions = make_sessionmaker(engine)
    ids = seed(sessions, capacity=None, credit_limit=None)
    snap = snapshot_of(sessions)
    writer = AccountingWriter(sessions, lambda: snap, Settings(spool_path=str(tmp_path / "spool")), linger=0.01)
    writer.start()
    acks = Acks()
    first = stop_record(ids["gw-a"], 1)
    writer.submit(first, acks.callback(first.leg_key))
    acks.wait(1)
    # the store drops the writer's (idle) connection, as a PostgreSQL restart or idle timeout would
    with sessions() as s, s.begin():
        killed = s.execute(text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'idle'")).all()
    assert killed
    second = stop_record(ids["gw-a"], 2)
    writer.submit(second, acks.callback(second.leg_key))
    acks.wait(2)
    writer.stop()
    assert all(acks.results.values())
    assert writer.counters["committed"] == 2 and writer.counters["spooled"] == 0
    assert len(cdrs(sessions)) == 2



def test_a_deadlock_with_another_transaction_is_retried_not_spooled(pg_url, pg_engine, tmp_path):
    engine = pg_engine
    sessions = make_sessionmaker(engine)
    ids = seed(sessions, capacity=None, credit_limit=None)
    snap = snapshot_of(sessions)
    a = ids["gw-a"]
    common = dict(call_id="dl", caller_address=CUSTOMER_IP, called_number="441612345678")
    with sessions() as s, s.begin():
        apply(s, acct(a, "start", "DL", event_time=T0, **common), snap, T0)
    # (a store_timeout longer than this test needs to provoke the deadlock, however slow the machine)
    writer = AccountingWriter(sessions, lambda: snap, Settings(spool_path=str(tmp_path / "spool"), store_timeout=30),
                              linger=0)
    writer.start()
    other = engine.connect()
    tx = other.begin()
    other.exec_driver_sql("SET LOCAL deadlock_timeout = '20s'")  # the writer notices first: it is the victim
    other.execute(update(Client).where(Client.id == ids["acme"]).values(balance=Client.balance))  # lock acme
    acks = Acks()
    stop = acct(a, "stop", "DL", event_time=T0 + 43 * S, session_time=43, **common)
    writer.submit(stop, acks.callback("stop"))  # locks the open call, then waits for acme

    def writer_waits() -> bool:
        with engine.connect() as c:
            return bool(c.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND query LIKE :q"), {"q": "%radiusd_acct_cdrs%"}).scalar())

    for _ in range(500):
        if writer_waits():
            break
        threading.Event().wait(0.01)
    else:
        pytest.fail("the writer never waited for the client row")
    # now the other transaction wants the open call the writer holds: a deadlock
    other.execute(select(ActiveCall.id).where(ActiveCall.leg_key == f"{a}:DL").with_for_update()).all()
    tx.rollback()  # reached once the writer was chosen as the victim and rolled back
    other.close()
    acks.wait(1)
    writer.stop()
    assert acks.results == {"stop": True}
    assert writer.counters["conflicts"] == 1 and writer.counters["spooled"] == 0
    [cdr] = cdrs(sessions)
    assert cdr.cost == Decimal("0.080000") and balance(sessions, ids["acme"]) == Decimal("99.920000")
    assert state(sessions)["calls"] == []



def test_prepared_statements_lost_by_the_connection_are_prepared_again(pg_sessions):
    ids = seed(pg_sessions, capacity=None, credit_limit=None)
    snap = snapshot_of(pg_sessions)
    with pg_sessions() as s, s.begin():
        apply_group(s, [stop_record(ids["gw-a"], 1)], snap, NOW)
        s.connection().exec_driver_sql("DEALLOCATE ALL")  # e.g. a pooler gave us another server session
    with pytest.raises(DBAPIError):
        with pg_sessions() as s, s.begin():
            apply_group(s, [stop_record(ids["gw-a"], 2)], snap, NOW)
    with pg_sessions() as s, s.begin():  # the writer's next try (savepoints, or the next group)
        apply_group(s, [stop_record(ids["gw-a"], 2)], snap, NOW)
    assert len(cdrs(pg_sessions)) == 2


def test_the_writer_groups_an_accounting_on_with_other_records_like_apply(pg_sessions, tmp_path):
    ids = seed(pg_sessions, capacity=None, credit_limit=None)
    snap = snapshot_of(pg_sessions)
    rnd = random.Random(99)
    events, reserved = scenario(ids, rnd, calls=10)
    events.insert(len(events) // 2, acct(ids["gw-a"], "on", "", event_time=T0 + 100 * S))
    reset(pg_sessions, ids, reserved)
    one_by_one(pg_sessions, snap, events)
    expected = state(pg_sessions)
    reset(pg_sessions, ids, reserved)
    writer = AccountingWriter(pg_sessions, lambda: snap, Settings(spool_path=str(tmp_path / "spool")), linger=0.3)
    writer.start()
    acks = Acks()
    for i, facts in enumerate(events):
        writer.submit(facts, acks.callback(str(i)))
    acks.wait(len(events))
    writer.stop()
    assert all(acks.results.values()) and writer.counters["group_retries"] == 0
    assert writer.counters["groups"] < len(events)
    got = state(pg_sessions)
    # the writer's `now` is the wall clock: compare what does not depend on it
    for part in ("cdrs", "legs", "balances"):
        assert got[part] == expected[part], part
    assert [dict(row)["leg_key"] for row in got["calls"]] == [dict(row)["leg_key"] for row in expected["calls"]]


def test_a_successor_takes_the_spool_once_its_predecessor_lets_it_go(sessions, tmp_path):
    """A worker replaced on a reload starts beside the one it replaces (make before break): it
    records through the store at once, takes the shared spool when the predecessor stops, and
    replays what the predecessor spooled."""
    ids = seed(sessions, capacity=None, credit_limit=None)
    snap = snapshot_of(sessions)
    settings = Settings(spool_path=str(tmp_path / "spool"))
    predecessor = AccountingWriter(sessions, lambda: snap, settings, linger=0.01)
    predecessor.start()
    spooled = stop_record(ids["gw-a"], 1)
    predecessor.spool.append([spooled])        # left by an outage, not replayed yet
    successor = AccountingWriter(sessions, lambda: snap, settings, linger=0.01)
    successor.start(take_over=True)            # no SpoolBusy: the predecessor still holds it
    assert successor.spool is None
    acks = Acks()
    fresh = stop_record(ids["gw-a"], 2)
    successor.submit(fresh, acks.callback(fresh.leg_key))
    acks.wait(1)
    assert acks.results == {fresh.leg_key: True}
    predecessor._next_replay = float("inf")    # it stops before its replay is due
    predecessor.stop()
    deadline = dt.datetime.now() + dt.timedelta(seconds=10)
    while len(cdrs(sessions)) < 2 and dt.datetime.now() < deadline:
        threading.Event().wait(0.05)
    successor.stop()
    assert sorted(c.leg_key for c in cdrs(sessions)) == sorted([spooled.leg_key, fresh.leg_key])
