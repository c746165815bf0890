"""Usage counters (radiusd.core.admission): open calls and money held per client, open calls per
account, kept by triggers on active_calls. Whatever path writes the legs, the counters equal a
recount of the legs; a counter made to drift misleads admission until the sweeper repairs it."""
from __future__ import annotations

import datetime as dt
import random
import threading
from decimal import Decimal

from sqlalchemy import select, text, update
from structlog.testing import capture_logs

from radiusd.config import Settings
from radiusd.core.authorize import plan_call
from radiusd.core.decision import Accept, Reject
from radiusd.db import make_sessionmaker
from radiusd.models import Account, AccountUsage, ActiveCall, Client
from radiusd.store.accounting import apply_group, expire_reservations, remove_call
from radiusd.store import sql
from radiusd.store.capacity import reserve_batch, store_for
from test_accounting_support import reserve_call
from radiusd.store.sweeper import sweep
from test_accounting_support import CUSTOMER_IP, T0, acct, auth, open_calls, seed, snapshot_of

SETTINGS = Settings(reservation_ttl=30)
S = dt.timedelta(seconds=1)


def counters(sessions) -> tuple[dict, dict]:
    with sessions() as s:
        clients = {r.id: (r.open_calls, r.money_held) for r in s.execute(
            select(Client.id, Client.open_calls, Client.money_held))}
        accounts = {i: 0 for i in s.scalars(select(Account.id))}   # no counter row: 0
        accounts.update(s.execute(select(AccountUsage.account_id, AccountUsage.open_calls)).all())
    return clients, accounts


def recount(sessions) -> tuple[dict, dict]:
    """The counters as the definition says, from the legs themselves."""
    with sessions() as s:
        clients = {i: (0, Decimal(0)) for i in s.scalars(select(Client.id))}
        accounts = {i: 0 for i in s.scalars(select(Account.id))}
        for leg in s.scalars(select(ActiveCall).where(ActiveCall.leg == "orig")):
            calls, held = clients[leg.client_id]
            clients[leg.client_id] = (calls + 1, held + leg.max_cost)
            accounts[leg.account_id] += 1
    return clients, accounts


def test_counters_equal_a_recount_after_a_random_mix_of_every_path(sessions):
    ids = seed(sessions, capacity=6, balance="5")   # money runs short too: rejects happen
    snap = snapshot_of(sessions)
    a, b = ids["gw-a"], ids["gw-b"]
    rng = random.Random(12)
    now = T0
    started: dict[str, str] = {}      # call id -> Acct-Session-Id of its orig leg
    seen_states = set()
    for step in range(160):
        now += rng.randint(0, 12) * S
        call = f"c{rng.randint(1, 14)}"
        what = rng.choice(["auth", "auth", "batch", "start", "start", "interim", "stop", "term", "expire",
                           "remove", "nas_reset", "sweep"])
        if what == "auth":
            reserve_call(sessions, plan_call(auth(a, call), snap, now), now, SETTINGS)
        elif what == "batch":   # several calls, re-auths among them, in one transaction
            calls = [f"c{rng.randint(1, 14)}" for _ in range(rng.randint(2, 6))]
            reserve_batch(sessions, [(plan_call(auth(a, c), snap, now), now) for c in calls], SETTINGS)
        elif what in ("start", "interim", "stop", "term"):
            records = []
            for _ in range(rng.randint(1, 4)):   # a group, as the accounting writer commits it
                call = f"c{rng.randint(1, 14)}"
                session_id = started.setdefault(call, f"S-{call}-{step}")
                status = "start" if what == "term" else what
                if what == "term":   # a terminating leg on the vendor side: never counted
                    records.append(acct(b, "start", f"T-{call}-{step}", leg="term", call_id=call,
                                        caller_address="203.0.113.5", called_number="441612345678",
                                        event_time=now))
                    continue
                records.append(acct(a, status, session_id, call_id=call, caller_address=CUSTOMER_IP,
                                    called_number="441612345678", event_time=now,
                                    session_time=rng.randint(0, 90) if status != "start" else None))
                if status == "stop":
                    started.pop(call, None)
            with sessions() as s, s.begin():
                apply_group(s, records, snap, now)
        elif what == "expire":
            with sessions() as s, s.begin():
                expire_reservations(s, now)
        elif what == "remove":
            rows = open_calls(sessions)
            if rows:
                with sessions() as s, s.begin():
                    remove_call(s, rng.choice(rows).id, now)
        elif what == "nas_reset":
            with sessions() as s, s.begin():
                apply_group(s, [acct(a, rng.choice(["on", "off"]), "", event_time=now)], snap, now)
            started.clear()
        else:
            assert sweep(sessions, now, SETTINGS)["usage_drift"] == {"client": 0, "account": 0}
        seen_states |= {(r.leg, r.state) for r in open_calls(sessions)}
        assert counters(sessions) == recount(sessions), f"step {step}: {what}"
    # the mix did exercise reservations, started calls and term legs
    assert {("orig", "reserved"), ("orig", "active"), ("term", "active")} <= seen_states


def test_admission_trusts_the_counters_and_the_sweeper_repairs_a_drift(sessions):
    ids = seed(sessions, capacity=2)
    snap = snapshot_of(sessions)
    a, acme = ids["gw-a"], ids["acme"]

    def admit(call: str, at: dt.datetime):
        return reserve_call(sessions, plan_call(auth(a, call), snap, at), at, SETTINGS)

    assert isinstance(admit("c1", T0), Accept)
    # drift up, by hand: the client looks full although one call is open
    with sessions() as s, s.begin():
        s.execute(update(Client).where(Client.id == acme).values(open_calls=Client.open_calls + 5))
    refused = admit("c2", T0 + S)
    assert isinstance(refused, Reject) and refused.reason.name == "CAPACITY_CLIENT"
    with capture_logs() as logs:
        assert sweep(sessions, T0 + 2 * S, SETTINGS)["usage_drift"] == {"client": 1, "account": 0}
    [line] = [e for e in logs if e["event"] == "usage_drift"]
    assert (line["client_id"], line["was"], line["open_calls"]) == (acme, 6, 1)
    assert isinstance(admit("c2", T0 + 3 * S), Accept)
    assert isinstance(admit("c3", T0 + 3 * S), Reject)      # 2 open: full, exactly
    # drift down, on the account: its counter forgets both calls, the client's still holds
    with sessions() as s, s.begin():
        s.execute(update(AccountUsage).where(AccountUsage.account_id == ids["acme-gw"]).values(open_calls=0))
        s.execute(update(Client).where(Client.id == acme).values(open_calls=0, money_held=0))
    assert isinstance(admit("c3", T0 + 4 * S), Accept)      # over capacity: what drift costs
    with capture_logs() as logs:
        assert sweep(sessions, T0 + 5 * S, SETTINGS)["usage_drift"] == {"client": 1, "account": 1}
    assert {e.get("account_id") for e in logs if e["event"] == "usage_drift"} >= {ids["acme-gw"]}
    assert counters(sessions) == recount(sessions)
    assert isinstance(admit("c4", T0 + 6 * S), Reject)
    assert sweep(sessions, T0 + 7 * S, SETTINGS)["usage_drift"] == {"client": 0, "account": 0}


def test_the_sweeper_locks_the_clients_before_their_expired_reservations(pg_engine):
    """Lock order (radiusd.store.sql): admission holds a client's row while it deletes that
    client's expired reservations; a sweep must wait for the client, not hold the reservation
    rows it wants — else each would hold what the other waits for (a deadlock, found only after
    PostgreSQL's deadlock_timeout, while every Access-Request behind it waits a second)."""
    engine = pg_engine
    sessions = make_sessionmaker(engine)
    ids = seed(sessions, capacity=6)
    snap = snapshot_of(sessions)
    reserve_call(sessions, plan_call(auth(ids["gw-a"], "old"), snap, T0), T0, SETTINGS)
    later = T0 + 60 * S                                  # the reservation has expired
    [client_id] = {leg.client_id for leg in open_calls(sessions)}
    holder = engine.connect()
    holder.begin()
    holder.execute(text("SELECT id FROM clients WHERE id = :id FOR NO KEY UPDATE"), {"id": client_id})
    swept: list[int] = []
    sweeper = threading.Thread(target=lambda: swept.append(_expire(sessions, later)))
    sweeper.start()
    try:
        # while the sweep waits for the client, the reservation row is free for the admission
        # transaction that holds the client
        deadline = dt.datetime.now() + dt.timedelta(seconds=10)
        while not _waiting_for_a_lock(engine) and dt.datetime.now() < deadline:
            sweeper.join(0.05)
        assert _waiting_for_a_lock(engine), "the sweep did not wait for the client's row"
        holder.execute(text("SET LOCAL lock_timeout = '2s'"))
        freed = holder.execute(text("DELETE FROM active_calls WHERE client_id = :id AND state = 'reserved'"),
                               {"id": client_id}).rowcount
        assert freed == 1
    finally:
        holder.commit()
        holder.close()
        sweeper.join(10)
    assert swept == [0] and open_calls(sessions) == []
    assert counters(sessions) == recount(sessions)


def _expire(sessions, now) -> int:
    with sessions.begin() as s:
        return expire_reservations(s, now)


def _waiting_for_a_lock(engine) -> bool:
    with engine.connect() as conn:
        return bool(conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                                      " AND datname = current_database()")).scalar())


def test_admission_plans_stay_on_their_indexes_on_a_new_store(pg_engine):
    """On a new store (`active_calls` empty, never analyzed) PostgreSQL would fix the prepared
    admission statement's plan as a scan of every open call: each batch then reads the whole
    table as it fills (measured: 2,100 instead of 7,300 auth/s with limits). The plan the batcher
    keeps must look the batch's legs up by their key."""

    engine = pg_engine
    sessions = make_sessionmaker(engine)
    ids = seed(sessions, capacity=1000, balance="100000")
    snap = snapshot_of(sessions)
    store = store_for(engine, 1500)          # a kept connection, set up as the batcher's
    try:
        for n in range(8):   # past PostgreSQL's first five custom plans: the generic plan stays
            batch = [(plan_call(auth(ids["gw-a"], f"c{n}-{i}"), snap, T0), T0) for i in range(3)]
            assert all(isinstance(d, Accept) for d in reserve_batch(sessions, batch, SETTINGS, store=store))
        with sql.driver_connection(store._conn).cursor() as cur:
            cur.execute("EXPLAIN EXECUTE radiusd_admit_usage (ARRAY[1], ARRAY[1], now(), ARRAY['x']::varchar[])")
            plan = "\n".join(row[0] for row in cur.fetchall())
    finally:
        store.close()
    assert "Seq Scan on active_calls" not in plan, plan
    assert "uq_active_calls_leg_key" in plan and "ix_active_calls_nas_open" not in plan, plan
