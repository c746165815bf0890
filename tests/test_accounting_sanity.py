"""Accounting data sanity (issue 11): what a buggy or compromised switch says cannot bill anything.

Pure core tests with plain data (radiusd.core.accounting + radiusd.core.sanity), the dialect's
escaping of identifiers, the settings, and the whole path over UDP on SQLite and PostgreSQL.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import time
from decimal import Decimal as D

import pytest
from sqlalchemy import create_engine, inspect, select, text

from radius_packets import acct_request, auth_request, nas
from radius_server import ServerProcess, exchange, seeded_store
from radiusd.config import ConfigError, load_settings
from radiusd.core.accounting import MANUAL, NAS_REBOOT, STALE, Close, Event, fold, transition
from radiusd.core.sanity import EARLIEST, Limits, bounded, escape_identifier
from radiusd.models import ActiveCall, Cdr
from radiusd.radius.dialects import acct_facts, auth_facts
from radiusd.radius.times import parse_switch_time
from test_accounting_transitions import NOW, S, T0, VIEW, open_leg, packet, reservation
from test_schema_upgrade import ROOT, _psql

LIMITS = Limits(max_clock_skew=86400, duration_slack=60, max_call_duration=7200)


def flags(cdr) -> set[str]:
    return set(cdr.flags.split(",")) - {""}


def stop(leg, facts, now=NOW):
    return transition(leg, False, bounded(facts, now, LIMITS), now, VIEW, LIMITS).cdr


# -- times -------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["1.7e309", "1e10", "inf", "nan", "-1", "0x7fffffff", "17e3"])
def test_garbage_never_parses_into_a_date(text):
    assert parse_switch_time(text, []) is None


@pytest.mark.parametrize("when", [dt.datetime(1, 1, 1, tzinfo=dt.timezone.utc),
                                  dt.datetime(1973, 3, 3, tzinfo=dt.timezone.utc),
                                  dt.datetime(6026, 1, 1, tzinfo=dt.timezone.utc),
                                  NOW + 86401 * S])
def test_a_time_out_of_bounds_is_absent_and_flagged(when):
    facts = packet("stop", at=when, connect_time=when, setup_time=when, disconnect_time=when, session_time=40)
    cdr = stop(open_leg(started=T0), facts)
    assert cdr.connect_time == T0 and cdr.setup_time is None      # the leg's own start, not the claim
    assert cdr.disconnect_time == NOW                              # the receive time
    assert cdr.duration == 40 and cdr.result == "success"
    assert flags(cdr) == {"time_out_of_bounds"}
    for value in (cdr.setup_time, cdr.connect_time, cdr.disconnect_time):
        assert value is None or EARLIEST <= value <= NOW + 86400 * S


def test_an_anomaly_of_the_start_stays_on_the_cdr_closed_later():
    row = opened([packet("start", at=T0, connect_time=dt.datetime(6026, 1, 1, tzinfo=dt.timezone.utc))])
    assert row.started_at == T0 and row.flags == "time_out_of_bounds"
    for end in (Close(Event.REMOVE, T0 + 30 * S), packet("stop", at=T0 + 30 * S, session_time=30)):
        cdr = transition(row, False, end, NOW, VIEW, LIMITS).cdr
        assert flags(cdr) == {"time_out_of_bounds"} and cdr.duration == 30


def test_the_clock_skew_is_configurable():
    late = NOW + 600 * S
    facts = packet("stop", at=late, session_time=10)
    assert bounded(facts, NOW, Limits(max_clock_skew=3600)).event_time == late
    assert bounded(facts, NOW, Limits(max_clock_skew=60)).event_time == NOW


def test_disconnect_before_connect_is_clamped_and_flagged():
    facts = packet("stop", at=T0 + 60 * S, connect_time=T0 + 50 * S, disconnect_time=T0 + 20 * S, session_time=5)
    cdr = stop(None, facts)
    assert cdr.connect_time == cdr.disconnect_time == T0 + 20 * S
    assert "disconnect_before_connect" in flags(cdr)


# -- durations ---------------------------------------------------------------------------------

def test_a_huge_duration_is_recorded_but_billed_at_most_the_grant_plus_slack():
    leg = open_leg(max_duration=300)          # Access-Accept granted 300 s
    cdr = stop(leg, packet("stop", at=T0 + 400 * S, session_time=1_796_129_594))
    assert cdr.duration == 1_796_129_594      # what the switch said
    assert cdr.billed_seconds == 360          # 300 + 60 s slack (6 s steps)
    assert cdr.cost == D("0.60")              # 0.10/min, not 2,993,549.32
    assert flags(cdr) == {"duration_capped"}
    assert cdr.connect_time <= cdr.disconnect_time


@pytest.mark.parametrize("seconds", [2**31, 2**32 - 1])
def test_a_stop_without_start_is_capped_at_the_server_maximum(seconds):
    cdr = stop(None, packet("stop", at=T0, session_time=seconds))
    assert cdr.duration == seconds and cdr.billed_seconds == 7260
    assert cdr.connect_time == T0 - 7260 * S   # not 1890
    assert "duration_capped" in flags(cdr)


def test_a_call_within_its_grant_is_not_flagged():
    cdr = stop(open_leg(max_duration=300), packet("stop", at=T0 + 90 * S, session_time=90))
    assert cdr.flags == "" and cdr.billed_seconds == 90


# -- billable time starts at the connect ---------------------------------------------------------

def ringing_start(sid="A1"):
    """A Start sent at call setup (Yate): a setup time, no connect time."""
    return packet("start", sid, T0, setup_time=T0)


def opened(events, now=NOW):
    plan = fold([], set(), events, now, VIEW, LIMITS)
    [row] = plan.inserts
    return dataclasses.replace(row, id=9)


@pytest.mark.parametrize("end, cause", [(Close(Event.REMOVE, T0 + 30 * S), MANUAL),
                                        (Close(Event.EXPIRE, NOW), STALE),
                                        (Close(Event.NAS_RESET, T0 + 30 * S), NAS_REBOOT)])
def test_a_leg_that_never_connected_costs_nothing(end, cause):
    row = opened([ringing_start(), packet("interim", at=T0 + 20 * S)])
    assert row.started_at is None and row.setup_at == T0
    cdr = transition(row, False, end, NOW, VIEW, LIMITS).cdr
    assert cdr.disconnect_cause == cause
    assert cdr.connect_time is None and cdr.duration == 0 and cdr.billed_seconds == 0
    assert cdr.cost == 0 and cdr.result != "success"
    assert cdr.setup_time == T0                 # kept without a Stop


def test_a_never_answered_stop_costs_nothing():
    row = opened([ringing_start()])
    cdr = transition(row, False, packet("stop", at=T0 + 3 * S, session_time=0, disconnect_cause="10"),
                     NOW, VIEW, LIMITS).cdr
    assert cdr.cost == 0 and cdr.connect_time is None and cdr.result != "success"


@pytest.mark.parametrize("interim", [
    dict(connect_time=T0 + 12 * S),                     # h323-connect-time
    dict(session_time=8, setup_time=T0),                # Acct-Session-Time counts from the connect
])
def test_the_connect_time_of_a_later_interim_starts_the_billing(interim):
    row = opened([ringing_start(), packet("interim", at=T0 + 20 * S, **interim)])
    assert row.started_at == T0 + 12 * S
    cdr = transition(row, False, Close(Event.REMOVE, T0 + 42 * S), NOW, VIEW, LIMITS).cdr
    assert cdr.connect_time == T0 + 12 * S and cdr.duration == 30     # not the 42 s of ringing + talk
    assert cdr.setup_time == T0 and cdr.result == "success"


def test_a_reservation_taken_over_by_a_ringing_start_waits_for_the_connect():
    plan = fold([reservation()], set(), [ringing_start(), packet("interim", at=T0 + 9 * S, connect_time=T0 + 4 * S)],
                NOW, VIEW, LIMITS)
    [row] = plan.updates
    assert row.started_at == T0 + 4 * S and row.setup_at == T0 and row.max_duration == 300


def test_a_start_without_setup_time_is_the_connect():   # Kamailio: Start on the 200 OK
    row = opened([packet("start", at=T0)])
    assert row.started_at == T0


# -- identifiers -------------------------------------------------------------------------------

def test_control_characters_are_escaped_the_same_way_everywhere():
    assert escape_identifier("ab\x00c\x1f\x7f") == ("ab\\x00c\\x1f\\x7f", True)
    assert escape_identifier("plain-id@host") == ("plain-id@host", False)
    # C1 controls (U+0080..U+009F) too: the chaos suite's fuzz found them in session ids
    assert escape_identifier("id\x85\x9b") == ("id\\x85\\x9b", True)
    assert escape_identifier("Zürich-é") == ("Zürich-é", False)


def test_nul_in_acct_session_id_is_escaped_and_flagged():
    _, pkt = acct_request([("Acct-Status-Type", 2), ("Acct-Session-Id", "A\x00B\nC"), ("Acct-Session-Time", 5)])
    facts = acct_facts(pkt, nas(), "127.0.0.1", NOW)
    assert facts.acct_session_id == "A\\x00B\\x0aC" and facts.leg_key == "1:A\\x00B\\x0aC"
    assert facts.call_id == "A\\x00B\\x0aC"
    assert facts.flags == ("identifier_escaped",)
    cdr = stop(None, facts)
    assert "identifier_escaped" in flags(cdr)


def test_the_access_request_and_the_accounting_escape_a_call_id_alike():
    _, auth = auth_request([("Acct-Session-Id", "call\x01id"), ("User-Name", "x")], password="p")
    _, acct = acct_request([("Acct-Status-Type", 1), ("Acct-Session-Id", "call\x01id")])
    assert auth_facts(auth, nas(), "127.0.0.1").call_id == acct_facts(acct, nas(), "127.0.0.1", NOW).call_id \
        == "call\\x01id"


# -- settings ----------------------------------------------------------------------------------

def test_accounting_settings(tmp_path):
    config = tmp_path / "r.toml"
    config.write_text("[accounting]\nmax_clock_skew_seconds = 300\nduration_slack_seconds = 5\n"
                      "[limits]\nmax_call_duration = 600\n")
    assert load_settings(config).accounting_limits == Limits(300, 5, 600)
    config.write_text("[accounting]\nduration_slack_seconds = -1\n")
    with pytest.raises(ConfigError, match="duration_slack_seconds"):
        load_settings(config)


# -- over UDP, on both stores --------------------------------------------------------------------

CONF = "h323-conf-id=5A5A5A5A 00000000 00000000 0000{:04X}"


@pytest.fixture
def udp_server(store_url, tmp_path):
    seeded_store(store_url)
    srv = ServerProcess(store_url, tmp_path).wait_ready()
    yield srv
    assert srv.stop() == 0


def _send(server, attrs):
    data, _ = acct_request(attrs, id=len(attrs) * 7 % 256)
    reply = exchange(data, server.acct_port, timeout=5)
    assert reply is not None and reply[0] == 5, "Accounting-Response"


def _cdrs(url):
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            cdrs = {row.acct_session_id: row for row in conn.execute(select(Cdr.__table__))}
            open_calls = conn.execute(select(ActiveCall.__table__)).all()
        return cdrs, open_calls
    finally:
        engine.dispose()


def test_insane_accounting_over_udp_is_stored_flagged_and_capped(udp_server, store_url):
    common = [("User-Name", "acme-sip"), ("Called-Station-Id", "442071234567"),
              ("Calling-Station-Id", "15551230001"), ("h323-call-origin", "h323-call-origin=answer")]
    calls = {  # Acct-Session-Id -> the Stop's extra attributes
        "big-31": [("Acct-Session-Time", 2**31)],
        "big-32": [("Acct-Session-Time", 2**32 - 1)],
        "nul\x00id": [("Acct-Session-Time", 20)],
        "future": [("Acct-Session-Time", 20), ("h323-connect-time", "h323-connect-time=1.7e309"),
                   ("h323-disconnect-time", "h323-disconnect-time=10:00:00.000 GMT Mon Jan 1 6026")],
    }
    for n, (sid, extra) in enumerate(calls.items()):
        base = [("Acct-Session-Id", sid), ("h323-conf-id", CONF.format(n))] + common
        _send(udp_server, [("Acct-Status-Type", 1)] + base)
        _send(udp_server, [("Acct-Status-Type", 2)] + base + extra)
    # every Stop stored: wait for the writer (bounded)
    deadline = time.monotonic() + 20
    while True:
        cdrs, open_calls = _cdrs(store_url)
        if len(cdrs) == len(calls) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert set(cdrs) == {"big-31", "big-32", "nul\\x00id", "future"}
    assert open_calls == []                                   # nothing left holding capacity
    for sid, seconds in (("big-31", 2**31), ("big-32", 2**32 - 1)):
        cdr = cdrs[sid]
        assert cdr.duration == seconds and cdr.billed_seconds <= 7200 + 60 + 60
        assert "duration_capped" in cdr.flags and cdr.cost < 100
    assert "identifier_escaped" in cdrs["nul\\x00id"].flags
    future = cdrs["future"]
    assert "time_out_of_bounds" in future.flags
    assert future.disconnect_time.year < 2100 and future.connect_time <= future.disconnect_time
    assert udp_server.counter('radiusd_cdr_anomalies_total{kind="duration_capped"}') == 2
    assert udp_server.counter('radiusd_cdr_anomalies_total{kind="identifier_escaped"}') == 1
    assert len(udp_server.events("cdr_anomaly")) >= 4


# -- the PostgreSQL upgrade --------------------------------------------------------------------

def test_the_upgrade_makes_an_older_store_hold_32_bit_durations_and_flags(pg_url):
    _psql(pg_url, "-f", str(ROOT / "schema" / "postgresql.sql"))
    engine = create_engine(pg_url)
    try:
        def shape():
            db = inspect(engine)
            return {t: {c["name"]: (str(c["type"]), c["nullable"]) for c in db.get_columns(t)}
                    for t in ("active_calls", "cdrs", "cdrs_default")}
        current = shape()
        with engine.begin() as conn:   # the store as it was before
            conn.execute(text("ALTER TABLE active_calls DROP COLUMN setup_at; ALTER TABLE active_calls DROP COLUMN flags; "
                              "ALTER TABLE active_calls ALTER COLUMN session_seconds TYPE INTEGER; "
                              "ALTER TABLE cdrs DROP COLUMN flags; ALTER TABLE cdrs ALTER COLUMN duration TYPE INTEGER; "
                              "ALTER TABLE cdrs ALTER COLUMN billed_seconds TYPE INTEGER"))
        assert shape() != current
        _psql(pg_url, "-f", str(ROOT / "schema" / "upgrades" / "2026-12-accounting-sanity.sql"))
        assert shape() == current
    finally:
        engine.dispose()


def _cisco_time(when: dt.datetime) -> str:
    return when.strftime("%H:%M:%S.000 GMT %a %b %d %Y")


def test_accounting_off_bills_from_the_connect_and_never_the_ringing_over_udp(udp_server, store_url):
    """Yate sends Start at call setup: a leg that never connected costs nothing when the NAS
    reboots, one that connected is billed from the connect an Interim reported."""
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    setup, connect = now - 20 * S, now - 10 * S
    common = [("User-Name", "acme-sip"), ("Called-Station-Id", "442071234567"),
              ("Calling-Station-Id", "15551230001"), ("h323-call-origin", "h323-call-origin=answer"),
              ("h323-setup-time", "h323-setup-time=" + _cisco_time(setup))]
    for n, sid in enumerate(("ringing", "talking")):
        base = [("Acct-Session-Id", sid), ("h323-conf-id", CONF.format(100 + n))] + common
        _send(udp_server, [("Acct-Status-Type", 1)] + base)
        if sid == "talking":
            _send(udp_server, [("Acct-Status-Type", 3), ("Acct-Session-Time", 10),
                               ("h323-connect-time", "h323-connect-time=" + _cisco_time(connect))] + base)
    deadline = time.monotonic() + 20
    while len(_cdrs(store_url)[1]) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    _send(udp_server, [("Acct-Status-Type", 8), ("Acct-Session-Id", "reboot-1")])
    while len(_cdrs(store_url)[0]) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    cdrs, open_calls = _cdrs(store_url)
    assert open_calls == [] and set(cdrs) == {"ringing", "talking"}
    ringing, talking = cdrs["ringing"], cdrs["talking"]
    assert ringing.disconnect_cause == talking.disconnect_cause == "NAS-Reboot"
    assert ringing.connect_time is None and ringing.duration == 0 and ringing.cost == 0
    assert ringing.result != "success" and ringing.setup_time == setup
    assert talking.connect_time == connect and talking.setup_time == setup
    assert 10 <= talking.duration <= 15 and talking.cost > 0 and talking.result == "success"
