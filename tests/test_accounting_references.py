"""The hot tables (active_calls, cdrs) have no foreign keys to NAS and rate tables (each would
cost a check and a row lock per accounting write): deleting a NAS or a rate table must still
leave no open call or CDR pointing at it, as ON DELETE SET NULL did. Both stores."""
from __future__ import annotations

from sqlalchemy import delete, update

from radiusd.admin import nas, rates
from radiusd.models import ActiveCall, Client
from test_accounting_support import CUSTOMER_IP, T0, acct, cdrs, feed, open_calls, seed, snapshot_of

S = T0.resolution * 1_000_000   # one second


def _calls(sessions, ids):
    snap = snapshot_of(sessions)
    common = dict(caller_address=CUSTOMER_IP, called_number="441612345678")
    feed(sessions, snap, acct(ids["gw-a"], "start", "R1", call_id="r1", event_time=T0, **common))
    feed(sessions, snap, acct(ids["gw-a"], "stop", "R1", call_id="r1", event_time=T0 + 60 * S, session_time=60,
                              **common))
    feed(sessions, snap, acct(ids["gw-a"], "start", "R2", call_id="r2", event_time=T0, **common))
    [cdr] = cdrs(sessions)
    [call] = open_calls(sessions)
    assert (cdr.nas_id, cdr.rate_table_id, call.nas_id) == (ids["gw-a"], ids["retail"], ids["gw-a"])


def test_deleting_a_nas_clears_it_from_open_calls_and_cdrs(sessions):
    ids = seed(sessions, capacity=None, credit_limit=None)
    _calls(sessions, ids)
    with sessions.begin() as s:
        nas.delete_nas(s, "gw-a", actor="test")
    [cdr] = cdrs(sessions)
    [call] = open_calls(sessions)
    assert cdr.nas_id is None and call.nas_id is None
    assert cdr.cost > 0 and cdr.rate_table_id == ids["retail"]   # nothing else changed


def test_deleting_a_rate_table_clears_it_from_cdrs(sessions):
    ids = seed(sessions, capacity=None, credit_limit=None)
    _calls(sessions, ids)
    with sessions.begin() as s:   # end the open call, move the clients to another table
        s.execute(update(Client).values(orig_rate_table_id=ids["vendor"]))
        s.execute(delete(ActiveCall))
    with sessions.begin() as s:
        rates.delete_rate_table(s, "retail", actor="test")
    [cdr] = cdrs(sessions)
    assert cdr.rate_table_id is None and cdr.nas_id == ids["gw-a"] and cdr.prefix == "44"
