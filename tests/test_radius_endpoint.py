"""The sans-I/O endpoint as pure data: datagram bytes, source and time in; actions out."""
import datetime as dt
from decimal import Decimal

from pyrad.packet import AccessAccept, AccessReject, AccountingResponse, AcctPacket, AuthPacket, StatusServer

from radiusd.core.decision import Accept, Reject
from radiusd.core.reasons import RejectReason
from radiusd.core.snapshot import AccountInfo, ClientInfo, NasInfo, Rate, build_rate_table, build_snapshot
from radiusd.radius.codec import load_dictionary
from radiusd.radius.endpoint import (
    ACCT, AUTH, Authorize, Count, Drop, EdgeState, Endpoint, Log, Now, Record, Send,
)
from radiusd.radius.nas_table import NasTable
from radius_packets import DICTIONARY, SECRET, acct_request, auth_request

T0 = Now(dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.timezone.utc), 1000.0)
SWITCH = ("127.0.0.1", 40000)
CALL = [("User-Name", "alice"), ("Called-Station-Id", "4921234567"), ("h323-conf-id", "h323-conf-id=1 2 3 4")]


def later(seconds):
    return Now(T0.utc + dt.timedelta(seconds=seconds), T0.mono + seconds)


def state():
    rates = build_rate_table(10, "retail", "USD", [Rate(10, "49", Decimal("0.06"))])
    snapshot = build_snapshot(
        version=1,
        nas=[NasInfo(1, "gw", "127.0.0.1/32", SECRET), NasInfo(2, "off", "127.0.0.9/32", SECRET, active=False)],
        clients=[ClientInfo(1, "acme", credit_limit=None, orig_rate_table_id=10)],
        accounts=[AccountInfo(2, 1, "alice", "name", password="s3cret")],
        rate_tables=[rates],
    )
    return EdgeState(snapshot, NasTable.from_snapshot(snapshot))


def endpoint(**kw):
    return Endpoint(load_dictionary(), duplicate_ttl=30, **kw)


def of(actions, kind):
    return [a for a in actions if type(a) is kind]


def drops(actions):
    return [(a.port, a.reason) for a in of(actions, Drop)]


def counted(actions, metric, **labels):
    return sum(a.amount for a in of(actions, Count) if a.metric == metric and a.labels == labels)


def test_unknown_and_inactive_nas_are_dropped_and_counted():
    ep, edge = endpoint(), state()
    data, _ = auth_request(CALL, password="s3cret")
    for source, reason in (("127.0.0.3", "unknown_nas"), ("127.0.0.9", "inactive_nas")):
        actions = ep.datagram(AUTH, data, (source, 5000), T0, edge)
        assert drops(actions) == [(AUTH, reason)] and not of(actions, Send)
        assert counted(actions, "radiusd_packets_received_total", port=AUTH) == 1


def test_bad_message_authenticator_is_dropped_and_does_not_touch_the_duplicate_cache():
    ep, edge = endpoint(), state()
    forged, _ = auth_request(CALL, password="s3cret", secret=b"not-the-secret")
    assert drops(ep.datagram(AUTH, forged, SWITCH, T0, edge)) == [(AUTH, "bad_message_authenticator")]
    assert len(ep.caches[AUTH]) == 0


def test_access_request_is_authorized_then_answered_and_a_retransmission_gets_the_same_bytes():
    ep, edge = endpoint(), state()
    data, request = auth_request(CALL, password="s3cret")
    actions = ep.datagram(AUTH, data, SWITCH, T0, edge, via="socket-1")
    (authorize,) = of(actions, Authorize)
    assert not of(actions, Send) and ep.in_flight == 1
    pending = authorize.request
    assert pending.plan.account.name == "alice" and pending.plan.called_number == "4921234567"
    assert pending.received == T0 and pending.facts.user_name == "alice"

    # while the reservation is being decided, a retransmission is dropped, not decided twice
    assert drops(ep.datagram(AUTH, data, SWITCH, later(0.5), edge)) == [(AUTH, "duplicate_in_progress")]

    accept = Accept(plan=pending.plan, max_duration=3600, max_cost=Decimal(216), available=None)
    answer = ep.authorized(pending, accept, later(0.002))
    (send,) = of(answer, Send)
    assert (send.addr, send.via) == (SWITCH, "socket-1") and ep.in_flight == 0
    reply = AuthPacket(packet=send.data, dict=DICTIONARY, secret=SECRET)
    assert reply.code == AccessAccept and request.VerifyReply(reply, send.data, enforce_ma=True)
    assert reply["h323-credit-time"] == ["h323-credit-time=3600"]
    assert counted(answer, "radiusd_auth_decisions_total", outcome="accept", reason="none") == 1
    (decision,) = [a for a in of(answer, Log) if a.event == "auth.decision"]
    assert decision.fields["latency_ms"] == 2.0 and decision.fields["account"] == "alice"

    again = ep.datagram(AUTH, data, SWITCH, later(1), edge, via="socket-1")
    assert [a.data for a in of(again, Send)] == [send.data] and not of(again, Authorize)
    assert counted(again, "radiusd_duplicates_total", port=AUTH, kind="replayed") == 1


def test_a_wrong_password_is_rejected_at_once_without_the_store():
    ep, edge = endpoint(), state()
    data, request = auth_request(CALL, password="guess")
    actions = ep.datagram(AUTH, data, SWITCH, T0, edge)
    assert not of(actions, Authorize)
    (send,) = of(actions, Send)
    reply = AuthPacket(packet=send.data, dict=DICTIONARY, secret=SECRET)
    assert reply.code == AccessReject and request.VerifyReply(reply, send.data, enforce_ma=True)
    assert counted(actions, "radiusd_auth_decisions_total", outcome="reject", reason="bad_password") == 1


def test_a_store_failure_reported_back_is_a_reject_with_code_8():
    ep, edge = endpoint(), state()
    data, _ = auth_request(CALL, password="s3cret")
    (authorize,) = of(ep.datagram(AUTH, data, SWITCH, T0, edge), Authorize)
    plan = authorize.request.plan
    answer = ep.authorized(authorize.request, Reject(RejectReason.SERVICE_UNAVAILABLE, plan.account.id,
                                                     plan.client.id, "store unreachable"), later(1))
    reply = AuthPacket(packet=of(answer, Send)[0].data, dict=DICTIONARY, secret=SECRET)
    assert reply.code == AccessReject
    assert reply["h323-return-code"] == [f"h323-return-code={RejectReason.SERVICE_UNAVAILABLE.return_code}"]


def test_past_the_in_flight_limit_requests_are_dropped_as_overloaded_and_forgotten():
    ep, edge = endpoint(max_in_flight=1), state()
    first, _ = auth_request(CALL, password="s3cret", id=1)
    second, _ = auth_request(CALL, password="s3cret", id=2)
    assert of(ep.datagram(AUTH, first, SWITCH, T0, edge), Authorize)
    assert drops(ep.datagram(AUTH, second, SWITCH, T0, edge)) == [(AUTH, "overloaded")]
    # the switch's retransmission is a new request once there is room again
    assert of(ep.datagram(AUTH, second, SWITCH, T0, edge), Drop)
    ep.in_flight = 0
    assert of(ep.datagram(AUTH, second, SWITCH, later(1), edge), Authorize)


def test_status_server_is_answered_on_both_ports():
    ep, edge = endpoint(), state()
    for port, cls, code in ((AUTH, AuthPacket, AccessAccept), (ACCT, AcctPacket, AccountingResponse)):
        pkt = cls(code=StatusServer, secret=SECRET, dict=DICTIONARY, id=4)
        pkt.add_message_authenticator()
        actions = ep.datagram(port, pkt.RequestPacket(), SWITCH, T0, edge)
        (send,) = of(actions, Send)
        assert send.data[0] == code and counted(actions, "radiusd_status_server_total", port=port) == 1


def test_accounting_is_recorded_before_it_is_answered():
    ep, edge = endpoint(), state()
    data, request = acct_request([("Acct-Status-Type", "Start"), ("Acct-Session-Id", "leg-1"),
                                  ("h323-conf-id", "h323-conf-id=1 2 3 4")])
    actions = ep.datagram(ACCT, data, SWITCH, T0, edge)
    (record,) = of(actions, Record)
    assert not of(actions, Send)
    facts = record.request.facts
    assert (facts.status, facts.leg_key, facts.call_id, facts.event_time) == ("start", "1:leg-1", "1 2 3 4", T0.utc)

    answer = ep.recorded([(record.request, True)], later(0.01))
    (send,) = of(answer, Send)
    assert send.data[0] == AccountingResponse and request.VerifyReply(AcctPacket(packet=send.data, secret=SECRET),
                                                                      send.data)
    assert counted(answer, "radiusd_accounting_total", status="start") == 1
    assert of(ep.datagram(ACCT, data, SWITCH, later(1), edge), Send)[0].data == send.data


def test_a_record_stored_nowhere_gets_no_answer_and_its_retransmission_is_recorded_afresh():
    ep, edge = endpoint(), state()
    data, _ = acct_request([("Acct-Status-Type", "Stop"), ("Acct-Session-Id", "leg-2"), ("Acct-Session-Time", 30)])
    (record,) = of(ep.datagram(ACCT, data, SWITCH, T0, edge), Record)
    failed = ep.recorded([(record.request, False)], later(1))
    assert drops(failed) == [(ACCT, "not_recorded")] and not of(failed, Send)
    assert counted(failed, "radiusd_store_errors_total", operation="accounting") == 1
    assert of(ep.datagram(ACCT, data, SWITCH, later(2), edge), Record)


def test_malformed_accounting_is_dropped_with_its_reason():
    ep, edge = endpoint(), state()
    data, _ = acct_request([("Acct-Session-Id", "leg-3")])
    assert drops(ep.datagram(ACCT, data, SWITCH, T0, edge)) == [(ACCT, "missing_status_type")]
    wrong_port, _ = auth_request(CALL, password="s3cret")
    assert drops(ep.datagram(ACCT, wrong_port, SWITCH, T0, edge)) == [(ACCT, "unsupported_code")]


def test_nothing_is_accepted_once_stopping():
    ep, edge = endpoint(), state()
    ep.accepting = False
    data, _ = auth_request(CALL, password="s3cret")
    assert drops(ep.datagram(AUTH, data, SWITCH, T0, edge)) == [(AUTH, "shutting_down")]


# --- protocol strictness: malformed requests are dropped and counted -------------------------

def _extend(data: bytes, extra: bytes, length: int | None = None) -> bytes:
    """`data` with `extra` octets appended and the Length field set (to the new size by default)."""
    data += extra
    return data[:2] + (len(data) if length is None else length).to_bytes(2, "big") + data[4:]


def _malformed(port, data):
    actions = endpoint().datagram(port, data, SWITCH, T0, state())
    assert drops(actions) == [(port, "malformed")] and not of(actions, Send), drops(actions)
    return of(actions, Drop)[0].fields["detail"]


def test_a_second_message_authenticator_or_user_password_is_malformed():
    data, _ = auth_request(CALL, password="s3cret")
    assert "attribute 80 appears more than once" in _malformed(AUTH, _extend(data, b"\x50\x12" + bytes(16)))
    assert "attribute 2 appears more than once" in _malformed(AUTH, _extend(data, b"\x02\x12" + bytes(16)))
    assert "CHAP-Password" in _malformed(AUTH, _extend(data, b"\x03\x13" + bytes(17)))
    acct, _ = acct_request([("Acct-Status-Type", "Start"), ("Acct-Session-Id", "leg-1")])
    assert "attribute 44 appears more than once" in _malformed(ACCT, _extend(acct, b"\x2c\x07leg-2"))


def test_attributes_running_past_the_end_of_the_packet_are_malformed_on_both_ports():
    data, _ = auth_request(CALL, password="s3cret")
    assert "runs past the end" in _malformed(AUTH, _extend(data, b"\x1e\x20" + b"4420"))
    acct, _ = acct_request([("Acct-Status-Type", "Start"), ("Acct-Session-Id", "leg-1")])
    assert "runs past the end" in _malformed(ACCT, _extend(acct, b"\x1f\x09" + b"123"))
    # a Length field that cuts the last attribute short is the same overrun
    assert "runs past the end" in _malformed(ACCT, _extend(acct, b"\x1f\x05" + b"123", length=len(acct) + 4))


def test_requests_longer_than_4096_octets_are_malformed_and_4096_is_fine():
    base, _ = auth_request(CALL, password="s3cret")
    room = 4096 - len(base)                               # filled with unknown attributes (2 + value)
    sizes = [253] * (room // 255 - 1) + [200, room % 255 + 255 - 200 - 4]
    data, _ = auth_request(CALL, password="s3cret", raw={200: [b"x" * n for n in sizes]})
    assert len(data) == 4096
    assert of(endpoint().datagram(AUTH, data, SWITCH, T0, state()), Authorize)
    longer, _ = auth_request(CALL, password="s3cret", raw={200: [b"x" * n for n in sizes + [250]]})
    assert len(longer) > 4096 and "longer than the RADIUS limit" in _malformed(AUTH, longer)
    # padding after the Length field counts too: the datagram itself is over the limit
    assert "longer than the RADIUS limit" in _malformed(AUTH, data + b"\x00")
