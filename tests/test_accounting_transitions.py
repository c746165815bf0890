"""The accounting state machine (radiusd.core.accounting) as pure data: events in, effects out.

No store: a hand-built snapshot of a small carrier, legs as plain values. The last tests feed
random event orders, retransmissions, reboots, stale expiry and removals (hypothesis) and check
what a carrier relies on: one CDR per leg, every orig-leg cost debited once, nothing open after
its Stop, and a call closed without a Stop charged only for the time proven.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radiusd.core.accounting import (
    MANUAL, NAS_REBOOT, STALE, TRANSITIONS, Close, Event, Leg, LegState, SnapshotView, fold, transition,
)
from radiusd.core.facts import AcctFacts
from radiusd.core.keys import reservation_key
from radiusd.core.snapshot import AccountInfo, ClientInfo, NasInfo, Rate, build_rate_table, build_snapshot

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 11, 25, 20, 0, tzinfo=UTC)
S = dt.timedelta(seconds=1)
NOW = T0 + 3600 * S
GW_A, GW_B = 1, 2
CUSTOMER_IP, VENDOR_IP = "198.51.100.10", "203.0.113.5"
ACME, VENDORCO = 1, 2          # clients
ACME_GW, VENDOR_OUT = 11, 12   # accounts
RETAIL, VENDOR = 21, 22        # rate tables

SNAPSHOT = build_snapshot(
    version=1,
    nas=[NasInfo(GW_A, "gw-a", "10.0.0.1/32", b"a"), NasInfo(GW_B, "gw-b", "10.0.0.2/32", b"b")],
    clients=[ClientInfo(ACME, "acme", orig_rate_table_id=RETAIL),
             ClientInfo(VENDORCO, "vendorco", term_rate_table_id=VENDOR)],
    accounts=[AccountInfo(ACME_GW, ACME, "acme-gw", "ip", networks=(f"{CUSTOMER_IP}/32",)),
              AccountInfo(VENDOR_OUT, VENDORCO, "vendor-out", "ip", networks=(f"{VENDOR_IP}/32",),
                          orig_enabled=False, term_enabled=True)],
    rate_tables=[
        # 44: 0.10/min, minimum 30 s, then 6 s steps; 33: not effective yet (unrated)
        build_rate_table(RETAIL, "retail", "USD", [
            Rate(RETAIL, "44", D("0.10"), minimum_seconds=30, interval_seconds=6),
            Rate(RETAIL, "33", D("0.20"), effective_from=T0 + 365 * 86400 * S)]),
        build_rate_table(VENDOR, "vendor", "USD", [Rate(VENDOR, "44", D("0.04"))]),
    ],
)
VIEW = SnapshotView(SNAPSHOT)


def packet(status: str, sid: str = "A1", at: dt.datetime = T0, nas: int = GW_A, leg: str = "orig", **kw) -> AcctFacts:
    base = dict(call_id=f"call-{sid}", caller_address=CUSTOMER_IP, called_number="441612345678")
    if leg == "term":
        base.update(caller_address=None, remote_address=VENDOR_IP)
    base.update(kw)
    return AcctFacts(nas_id=nas, status=status, acct_session_id=sid, leg_key=f"{nas}:{sid}", leg=leg,
                     event_time=at, **base)


def open_leg(sid: str = "A1", started: dt.datetime = T0, seen: dt.datetime | None = None, seconds: int = 0,
             row_id: int = 7, **kw) -> Leg:
    values = dict(leg_key=f"{GW_A}:{sid}", call_id=f"call-{sid}", acct_session_id=sid, nas_id=GW_A, leg="orig",
                  state="active", account_id=ACME_GW, client_id=ACME, caller="15551230000", called="441612345678",
                  rate_table_id=RETAIL, prefix="44", max_cost=D(0), max_duration=None, created_at=started,
                  expires_at=None, started_at=started, last_seen_at=seen or started, session_seconds=seconds,
                  id=row_id)
    values.update(kw)
    return Leg(**values)


def reservation(call_id: str = "call-A1", row_id: int = 5, created: dt.datetime = T0 - 2 * S) -> Leg:
    return open_leg(leg_key=reservation_key(GW_A, call_id), call_id=call_id, acct_session_id=None,
                    state="reserved", started_at=None, last_seen_at=created, created_at=created,
                    expires_at=created + 30 * S, max_cost=D("0.50"), max_duration=300, row_id=row_id)


# -- the table ---------------------------------------------------------------------------------

def test_the_transition_table():
    R, O, C = LegState.RESERVED, LegState.OPEN, LegState.CLOSED
    table = {(before.name if before else "-", event.name): (after.name if after else "-", action)
             for (before, event), (after, action) in TRANSITIONS.items()}
    assert table == {
        ("-", "START"): ("OPEN", "opened"), ("-", "INTERIM"): ("OPEN", "opened"),
        ("RESERVED", "START"): ("OPEN", "took_over"), ("RESERVED", "INTERIM"): ("OPEN", "took_over"),
        ("OPEN", "START"): ("OPEN", "duplicate"), ("OPEN", "INTERIM"): ("OPEN", "updated"),
        ("CLOSED", "START"): ("CLOSED", "ignored"), ("CLOSED", "INTERIM"): ("CLOSED", "ignored"),
        **{(s, e): ("CLOSED", "closed") for s in ("-", "RESERVED", "OPEN") for e in ("STOP", "FAILED")},
        **{("CLOSED", e): ("CLOSED", "duplicate")
           for e in ("STOP", "FAILED", "NAS_RESET", "EXPIRE", "REMOVE")},
        **{("RESERVED", e): ("-", "released") for e in ("NAS_RESET", "EXPIRE", "REMOVE")},
        **{("OPEN", e): ("CLOSED", "closed") for e in ("NAS_RESET", "EXPIRE", "REMOVE")},
        **{("-", e): ("-", "ignored") for e in ("NAS_RESET", "EXPIRE", "REMOVE")},
    }
    assert {after for after, _ in TRANSITIONS.values()} - {None} <= {R, O, C}
    assert not any(before is C and after is not C for (before, _), (after, _) in TRANSITIONS.items())


def test_an_unknown_status_is_refused():
    with pytest.raises(ValueError, match="Acct-Status-Type"):
        transition(None, False, packet("bogus"), NOW, VIEW)


# -- one event, one leg ------------------------------------------------------------------------

def test_start_opens_the_leg_of_the_identified_account():
    e = transition(None, False, packet("start", connect_time=T0 + 2 * S), NOW, VIEW)
    assert (e.before, e.after, e.action, e.cdr, e.removed) == (None, LegState.OPEN, "opened", None, None)
    row = e.row
    assert (row.id, row.leg_key, row.state, row.account_id, row.client_id, row.rate_table_id, row.prefix) == (
        None, "1:A1", "active", ACME_GW, ACME, RETAIL, "44")
    assert (row.started_at, row.last_seen_at, row.created_at) == (T0 + 2 * S, T0, NOW)


def test_start_takes_over_the_reservation_of_its_call():
    e = transition(reservation(), False, packet("start", at=T0 + 2 * S), NOW, VIEW)
    assert (e.before, e.after, e.action) == (LegState.RESERVED, LegState.OPEN, "took_over")
    assert (e.row.id, e.row.leg_key, e.row.state, e.row.expires_at, e.row.started_at) == (
        5, "1:A1", "active", None, T0 + 2 * S)
    assert e.row.max_cost == D("0.50")  # the reservation's worst case keeps counting


def test_interim_moves_an_open_leg_forward_never_back():
    row = open_leg(seen=T0 + 60 * S, seconds=60)
    later = transition(row, False, packet("interim", at=T0 + 120 * S, session_time=120), NOW, VIEW)
    assert (later.action, later.row.last_seen_at, later.row.session_seconds) == ("updated", T0 + 120 * S, 120)
    late = transition(row, False, packet("interim", at=T0 + 30 * S, session_time=30), NOW, VIEW)
    assert (late.row.last_seen_at, late.row.session_seconds) == (T0 + 60 * S, 60)


def test_interim_without_start_opens_the_leg_when_it_began():
    e = transition(None, False, packet("interim", at=T0 + 90 * S, session_time=60), NOW, VIEW)
    assert (e.action, e.row.started_at, e.row.last_seen_at, e.row.session_seconds) == (
        "opened", T0 + 30 * S, T0 + 90 * S, 60)


def test_stop_closes_the_leg_with_a_rated_cdr_and_a_debit():
    row = open_leg(started=T0 + 2 * S)
    e = transition(row, False, packet("stop", at=T0 + 45 * S, session_time=43, disconnect_cause="10"), NOW, VIEW)
    assert (e.after, e.action, e.removed, e.row) == (LegState.CLOSED, "closed", row, None)
    cdr = e.cdr
    assert (cdr.leg_key, cdr.account_id, cdr.client_id, cdr.connect_time, cdr.disconnect_time) == (
        "1:A1", ACME_GW, ACME, T0 + 2 * S, T0 + 45 * S)
    assert (cdr.duration, cdr.billed_seconds, cdr.cost, cdr.debit) == (43, 48, D("0.080000"), D("0.080000"))
    assert (cdr.disconnect_cause, cdr.result, cdr.prefix) == ("q850:16", "success", "44")


def test_stop_without_start_is_one_cdr_of_the_identified_account():
    e = transition(None, False, packet("stop", at=T0 + 45 * S, session_time=43), NOW, VIEW)
    assert (e.before, e.action, e.removed) == (None, "closed", None)
    assert (e.cdr.account_id, e.cdr.connect_time, e.cdr.cost) == (ACME_GW, T0 + 2 * S, D("0.080000"))


def test_failed_leg_is_recorded_without_charge():
    e = transition(None, False, packet("failed", session_time=0, disconnect_cause="11"), NOW, VIEW)
    assert (e.cdr.duration, e.cdr.cost, e.cdr.debit, e.cdr.result) == (0, D(0), D(0), "busy")


def test_vendor_leg_is_rated_but_moves_no_balance():
    e = transition(None, False, packet("stop", "B1", T0 + 43 * S, nas=GW_B, leg="term", session_time=43),
                   NOW, VIEW)
    assert (e.cdr.account_id, e.cdr.client_id, e.cdr.cost, e.cdr.debit) == (
        VENDOR_OUT, VENDORCO, D("0.028667"), D(0))


def test_unknown_and_unrated_legs_are_still_recorded():
    nobody = transition(None, False, packet("stop", caller_address="192.0.2.99", session_time=10), NOW, VIEW)
    assert (nobody.cdr.account_id, nobody.cdr.cost, nobody.cdr.unrated) == (None, D(0), False)
    unrated = transition(None, False, packet("stop", called_number="33123", session_time=10), NOW, VIEW)
    assert (unrated.cdr.account_id, unrated.cdr.price_per_minute, unrated.cdr.unrated) == (ACME_GW, None, True)


@pytest.mark.parametrize("status, action", [("start", "ignored"), ("interim", "ignored"), ("stop", "duplicate"),
                                            ("failed", "duplicate")])
def test_a_closed_leg_changes_no_more(status, action):
    e = transition(None, True, packet(status, session_time=5), NOW, VIEW)
    assert (e.before, e.after, e.action, e.row, e.cdr, e.removed) == (
        LegState.CLOSED, LegState.CLOSED, action, None, None, None)


def test_accounting_on_closes_at_its_time_with_the_proven_duration_and_drops_reservations():
    reset = packet("on", sid="", at=T0 + 300 * S)
    row = open_leg(seen=T0 + 60 * S, seconds=60)
    e = transition(row, False, reset, NOW, VIEW)
    assert (e.action, e.cdr.duration, e.cdr.disconnect_time, e.cdr.disconnect_cause) == (
        "closed", 60, T0 + 300 * S, NAS_REBOOT)
    released = transition(reservation(), False, reset, NOW, VIEW)
    assert (released.action, released.after, released.removed, released.cdr) == (
        "released", None, reservation(), None)
    # a replayed old On/Off never ends what began after it
    newer = transition(open_leg(started=T0 + 400 * S), False, reset, NOW, VIEW)
    assert (newer.action, newer.removed, newer.cdr) == ("ignored", None, None)


def test_stale_leg_ends_when_last_seen_and_is_charged_what_is_proven():
    row = open_leg(seen=T0 + 120 * S, seconds=100)
    e = transition(row, False, Close(Event.EXPIRE, NOW), NOW, VIEW)
    assert (e.cdr.disconnect_time, e.cdr.duration, e.cdr.disconnect_cause, e.cdr.cost) == (
        T0 + 120 * S, 120, STALE, D("0.200000"))


def test_removed_by_hand_is_charged_like_a_stop_now():
    e = transition(open_leg(), False, Close(Event.REMOVE, T0 + 61 * S), NOW, VIEW)
    assert (e.cdr.duration, e.cdr.disconnect_cause, e.cdr.cost) == (61, MANUAL, D("0.110000"))
    assert transition(reservation(), False, Close(Event.REMOVE, NOW), NOW, VIEW).action == "released"


# -- a group -----------------------------------------------------------------------------------

def test_a_whole_call_in_one_group_takes_over_the_reservation_and_debits_once():
    start = packet("start", at=T0 + 2 * S)
    stop = packet("stop", at=T0 + 45 * S, session_time=43)
    plan = fold([reservation()], set(), [start, start, stop, start, stop], NOW, VIEW)
    assert [e.action for e in plan.effects] == ["took_over", "duplicate", "closed", "ignored", "duplicate"]
    assert (plan.deletes, plan.updates, plan.inserts) == ([5], [], [])
    [cdr] = plan.cdrs
    assert (cdr.connect_time, cdr.duration, cdr.debit) == (T0 + 2 * S, 43, D("0.080000"))


def test_stop_then_start_leaves_no_open_call():
    plan = fold([], set(), [packet("stop", session_time=30), packet("start"), packet("interim", session_time=40)],
                NOW, VIEW)
    assert [e.action for e in plan.effects] == ["closed", "ignored", "ignored"]
    assert (plan.inserts, plan.updates, len(plan.cdrs)) == ([], [], 1)


# -- random orders and retransmissions ---------------------------------------------------------

TEMPLATES = [
    dict(nas=GW_A, leg="orig"),                                           # acme, may hold a reservation
    dict(nas=GW_A, leg="orig", called_number="33123456"),                 # unrated today
    dict(nas=GW_B, leg="term"),                                           # the vendor's leg
    dict(nas=GW_B, leg="orig", caller_address="10.0.0.1"),               # nobody's leg
]


@st.composite
def scenarios(draw):
    """A few legs' events in any order, with retransmissions, reboots, expiry and removals."""
    events, reserved, packets = [], [], []
    for n in range(draw(st.integers(1, 4))):
        t = dict(draw(st.sampled_from(TEMPLATES)))
        nas, leg = t.pop("nas"), t.pop("leg")
        sid = f"S{n}"
        call_id = draw(st.sampled_from([f"call-{n}", "shared"]))
        if nas == GW_A and leg == "orig" and draw(st.booleans()):
            reserved.append(call_id)
        start = T0 + draw(st.integers(0, 200)) * S
        length = draw(st.sampled_from([0, 5, 43, 61, 130]))
        # connected at the Start (Cisco), Start on the answer (Kamailio), or Start at setup (Yate: ringing)
        kind = draw(st.sampled_from(["connect", "answer", "setup"]))
        own = [packet("start", sid, start, nas, leg, call_id=call_id,
                      connect_time=start if kind == "connect" else None,
                      setup_time=start if kind == "setup" else None, **t)]
        for k in range(draw(st.integers(0, 2))):
            at = start + draw(st.integers(1, length + 10)) * S
            own.append(packet("interim", sid, at, nas, leg, call_id=call_id,
                              connect_time=draw(st.sampled_from([None, start + S])) if kind == "setup" else None,
                              session_time=draw(st.sampled_from([None, int((at - start).total_seconds())])), **t))
        end = draw(st.sampled_from(["stop", "failed", None]))
        if end:
            own.append(packet(end, sid, start + length * S, nas, leg, call_id=call_id,
                              session_time=draw(st.sampled_from([length, None, 2**31, 2**32 - 1]))
                              if end == "stop" else 0,
                              # a switch's nonsense: a time from another era, a disconnect before the connect
                              connect_time=draw(st.sampled_from([None, None, start + length * S + 50 * S,
                                                                 T0.replace(year=1973), T0.replace(year=6026)])),
                              disconnect_cause=draw(st.sampled_from(["10", "11", None])), **t))
        packets += own
    events = draw(st.permutations(packets))
    for _ in range(draw(st.integers(0, 3))):  # retransmissions of what was sent before
        i = draw(st.integers(0, len(events) - 1))
        events.insert(draw(st.integers(i + 1, len(events))), events[i])
    for _ in range(draw(st.integers(0, 2))):  # reboots, stale expiry, removals by hand
        kind = draw(st.sampled_from(["on", "off", Event.EXPIRE, Event.REMOVE]))
        where = draw(st.integers(0, len(events)))
        at = T0 + draw(st.integers(0, 300)) * S
        if kind in ("on", "off"):
            events.insert(where, packet(kind, "", at, draw(st.sampled_from([GW_A, GW_B]))))
        else:
            events.insert(where, (draw(st.sampled_from(packets)).leg_key, Close(kind, at)))
    cuts = sorted(draw(st.lists(st.integers(0, len(events)), max_size=4)))
    return events, list(dict.fromkeys(reserved)), cuts


def run(events, reserved, cuts):
    """Fold the events in groups (cut at `cuts`), writing each plan to an in-memory store."""
    rows = {100 + n: reservation(call_id, row_id=100 + n) for n, call_id in enumerate(reserved)}
    closed: set[str] = set()
    cdrs, effects = [], []
    next_id = 1000
    bounds = [0, *cuts, len(events)]
    for lo, hi in zip(bounds, bounds[1:]):
        plan = fold(rows.values(), closed, events[lo:hi], NOW, VIEW)
        effects += plan.effects
        for row_id in plan.deletes:
            del rows[row_id]
        for row in plan.updates:
            assert row.id in rows
            rows[row.id] = row
        for row in plan.inserts:
            assert row.leg_key not in {r.leg_key for r in rows.values()}
            next_id += 1
            rows[next_id] = dataclasses.replace(row, id=next_id)
        for cdr in plan.cdrs:
            assert cdr.leg_key not in closed, "a leg's CDR written twice"
            closed.add(cdr.leg_key)
            cdrs.append(cdr)
    return rows, cdrs, effects


def _snapshot_of(rows, cdrs):
    return (sorted((r.leg_key, r.state, r.started_at, r.last_seen_at, r.session_seconds) for r in rows.values()),
            sorted(dataclasses.astuple(c) for c in cdrs))


@settings(max_examples=400, deadline=None)
@given(scenarios())
def test_random_orders_and_retransmissions_keep_the_books_right(scenario):
    events, reserved, cuts = scenario
    rows, cdrs, effects = run(events, reserved, cuts)
    granted = {e.row.leg_key for e in effects if e.action == "took_over"}
    keys = [c.leg_key for c in cdrs]
    assert len(keys) == len(set(keys)), "one CDR per leg"
    # every orig-leg cost of a known client is debited once; vendor and unknown legs move no balance
    assert sum(c.debit for c in cdrs) == sum(c.cost for c in cdrs if c.leg == "orig" and c.client_id is not None)
    assert all(c.debit == 0 for c in cdrs if c.leg == "term" or c.client_id is None)
    # nothing stays open after its Stop; every stopped leg has its CDR
    stopped = {e.leg_key for e in events if isinstance(e, AcctFacts) and e.status in ("stop", "failed")}
    assert stopped <= set(keys)
    assert not {r.leg_key for r in rows.values()} & set(keys)
    # closed without a Stop: only what was proven by the leg's own packets
    for cdr in cdrs:
        if cdr.connect_time is None:     # never connected: costs nothing, no success
            assert cdr.duration == 0 and cdr.cost == 0 and cdr.billed_seconds == 0 and cdr.result != "success"
            continue
        assert cdr.connect_time <= cdr.disconnect_time, "disconnect before connect"
        # never billed past what was granted (the reservation's 300 s, else the server's 7,200 s) + slack
        assert cdr.billed_seconds <= 7200 + 60 + 30 and cdr.cost <= D("12.10")
        if cdr.leg_key in granted:
            assert cdr.billed_seconds <= 300 + 60 + 30
        for value in (cdr.setup_time, cdr.connect_time, cdr.disconnect_time):
            assert value is None or dt.datetime(2000, 1, 1, tzinfo=UTC) <= value <= NOW + 86400 * S
        if cdr.disconnect_cause in (STALE, NAS_REBOOT):
            seen = [e for e in events if isinstance(e, AcctFacts) and e.leg_key == cdr.leg_key]
            proven = max([e.session_time or 0 for e in seen] +
                         [int((e.event_time - cdr.connect_time).total_seconds()) for e in seen])
            assert cdr.duration <= max(proven, 0)
        if cdr.disconnect_cause == NAS_REBOOT:  # and never past the reboot
            assert cdr.duration <= max(0, int((cdr.disconnect_time - cdr.connect_time).total_seconds()))
        if cdr.duration == 0:
            assert cdr.cost == 0
    # how the events were grouped changes nothing
    assert _snapshot_of(*run(events, reserved, [])[:2]) == _snapshot_of(rows, cdrs)


@settings(max_examples=300, deadline=None)
@given(scenarios(), st.data())
def test_a_retransmitted_packet_changes_nothing(scenario, data):
    events, reserved, _ = scenario
    packets = [i for i, e in enumerate(events) if isinstance(e, AcctFacts) and e.status not in ("on", "off")]
    if not packets:
        return
    i = data.draw(st.sampled_from(packets))
    again = events[:]
    again.insert(data.draw(st.integers(i + 1, len(events))), events[i])
    assert _snapshot_of(*run(again, reserved, [])[:2]) == _snapshot_of(*run(events, reserved, [])[:2])
