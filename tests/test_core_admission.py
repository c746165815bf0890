"""Admission of a batch, as pure data: usage in, decisions and reservation rows out."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

from radiusd.core.admission import (RESERVATION_FIELDS, RESERVED, ClientUsage, Loaded, Replaced, admit_batch,
                                    limited_clients, request)
from radiusd.core.decision import Accept, CallPlan, Reject
from radiusd.core.keys import KEY_SIZE, fit_key, reservation_key
from radiusd.core.reasons import RejectReason as R
from radiusd.core.snapshot import AccountInfo, ClientInfo, Rate, build_rate_table
from radiusd.models import ActiveCall

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.timezone.utc)
RATE = Rate(10, "49", D("0.60"), minimum_seconds=30, interval_seconds=6)
TABLE = build_rate_table(10, "t", "USD", [RATE])


def plan(client=None, account=None, call_id="c1", nas_id=1) -> CallPlan:
    client = client or ClientInfo(1, "acme", credit_limit=D("0"), capacity=2, orig_rate_table_id=10)
    account = account or AccountInfo(1, client.id, "a", "ip", networks=("10.1.2.0/24",))
    return CallPlan(nas_id, account, client, "4930", "4930555", call_id, TABLE, RATE, None)


def reqs(*plans):
    return [request(p, NOW, p.call_id) for p in plans]


def outcome(decisions):
    return ["ACCEPT" if isinstance(d, Accept) else d.reason.name for d in decisions]


def test_calls_accepted_earlier_in_the_batch_count_against_later_ones():
    decisions, rows = admit_batch(reqs(plan(call_id="a"), plan(call_id="b"), plan(call_id="c")),
                                  Loaded(clients={1: ClientUsage(D("100"))}), 7200, 30)
    assert outcome(decisions) == ["ACCEPT", "ACCEPT", "CAPACITY_CLIENT"]
    assert [row.call_id for row in rows] == ["a", "b"]


def test_open_legs_in_the_store_count_and_a_re_auth_does_not_count_itself():
    # the counters hold both legs in the store: "a" (which the batch re-authorizes) and another
    loaded = Loaded(clients={1: ClientUsage(D("100"), 2)}, accounts={1: 2},
                    replaced={reservation_key(1, "a"): Replaced(1, 1, D("0"))})
    decisions, rows = admit_batch(reqs(plan(call_id="a"), plan(call_id="a"), plan(call_id="b")), loaded, 7200, 30)
    # "a" twice is one call (its own reservation is replaced, not counted); with the open leg: 2 = full
    assert outcome(decisions) == ["ACCEPT", "ACCEPT", "CAPACITY_CLIENT"]
    assert [row.leg_key for row in rows] == [reservation_key(1, "a")]


def test_exposure_of_the_calls_in_progress_limits_money():
    poor = ClientInfo(1, "acme", credit_limit=D("0"), orig_rate_table_id=10)
    loaded = Loaded(clients={1: ClientUsage(D("1.00"), 3, D("0.95"))}, accounts={1: 3})
    [decision], rows = admit_batch(reqs(plan(client=poor)), loaded, 7200, 30)
    assert isinstance(decision, Reject) and decision.reason is R.INSUFFICIENT_BALANCE and rows == []


def test_a_client_or_account_gone_from_the_store_is_an_unknown_account():
    unlimited = ClientInfo(2, "free", credit_limit=None, orig_rate_table_id=10)
    requests = reqs(plan(call_id="limited"), plan(client=unlimited, call_id="free"))
    # the limited client's row was not found under the lock
    assert outcome(admit_batch(requests, Loaded(), 7200, 30)[0]) == ["UNKNOWN_ACCOUNT", "ACCEPT"]
    # after a foreign-key failure the store reads which still exist
    gone = Loaded(clients={1: ClientUsage(D("100"))}, existing_clients={1}, existing_accounts={1})
    assert outcome(admit_batch(requests, gone, 7200, 30)[0]) == ["ACCEPT", "UNKNOWN_ACCOUNT"]


def test_only_clients_with_a_limit_are_locked_and_counted_in_id_order():
    free = ClientInfo(5, "free", credit_limit=None, orig_rate_table_id=10)
    capped = ClientInfo(3, "capped", credit_limit=None, capacity=1, orig_rate_table_id=10)
    assert limited_clients(reqs(plan(client=free), plan(), plan(client=capped))) == [1, 3]
    [decision], _ = admit_batch(reqs(plan(client=free)), Loaded(), 7200, 30)
    assert isinstance(decision, Accept) and decision.available is None


def test_the_reservation_row_is_the_accepted_call_held_until_its_start():
    [decision], [row] = admit_batch(reqs(plan(call_id="x")), Loaded(clients={1: ClientUsage(D("100"))}), 3600, 30)
    assert row.leg_key == "auth:1:x" and row.call_id == "x" and (row.client_id, row.account_id) == (1, 1)
    assert row.max_duration == decision.max_duration and row.max_cost == decision.max_cost
    assert row.created_at == row.last_seen_at == NOW and row.expires_at == NOW + dt.timedelta(seconds=30)
    # every column of the row is an active_calls column: the statements are built from these names
    assert set(RESERVATION_FIELDS) | set(RESERVED) <= set(ActiveCall.__table__.c.keys())


def test_keys_fit_their_columns_and_stay_distinct():
    long_a, long_b = "a" * 300, "a" * 299 + "b"
    assert len(fit_key(long_a)) == KEY_SIZE and fit_key(long_a) != fit_key(long_b)
    assert fit_key("short") == "short"
    assert reservation_key(7, "c1") == "auth:7:c1"


def test_a_re_auth_that_moves_a_call_to_another_client_frees_the_first_clients_count():
    # call "a" is held by client 1 (capacity 1, full); its re-auth now identifies client 2
    first = ClientInfo(1, "acme", credit_limit=D("0"), capacity=1, orig_rate_table_id=10)
    second = ClientInfo(2, "other", credit_limit=D("0"), capacity=1, orig_rate_table_id=10)
    moved = plan(client=second, account=AccountInfo(2, 2, "b", "ip", networks=("10.9.0.0/24",)), call_id="a")
    loaded = Loaded(clients={1: ClientUsage(D("100"), 1), 2: ClientUsage(D("100"))}, accounts={1: 1, 2: 0},
                    replaced={reservation_key(1, "a"): Replaced(1, 1, D("0"))})
    decisions, rows = admit_batch(reqs(moved, plan(client=first, call_id="b"), plan(client=second, call_id="c")),
                                  loaded, 7200, 30)
    assert outcome(decisions) == ["ACCEPT", "ACCEPT", "CAPACITY_CLIENT"]
    assert [(row.call_id, row.client_id) for row in rows] == [("a", 2), ("b", 1)]
