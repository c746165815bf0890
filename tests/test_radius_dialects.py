"""Switch dialects -> facts, with packets built by pyrad the way each switch family sends them."""
import datetime as dt
import hashlib
import struct

import pytest

from radiusd.core.facts import ChapCredentials, DigestCredentials, PapCredentials
from radiusd.radius.dialects import MalformedRequest, acct_facts, auth_facts, normalise_number
from radius_packets import acct_request, auth_request, nas

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 11, 25, 20, 30, tzinfo=UTC)


def sub(t, text):
    data = text.encode()
    return bytes([t, len(data) + 2]) + data


def test_cisco_request_with_name_prefixed_values():
    _, pkt = auth_request([
        ("User-Name", "acme-sip"),
        ("Called-Station-Id", "442071234567"),
        ("Calling-Station-Id", "15551230001"),
        ("h323-conf-id", "h323-conf-id=1a2b3c4d 00000000  00000000 00000001"),
        ("h323-remote-address", "h323-remote-address=10.1.2.3"),
        ("Cisco-AVPair", "session-protocol=sipv2"),
    ], password="s3cret-pass")
    facts = auth_facts(pkt, nas(), "127.0.0.1")
    assert facts.nas_id == 1
    assert facts.user_name == "acme-sip"
    assert facts.credentials == PapCredentials("s3cret-pass")
    assert facts.called_number == "442071234567"
    assert facts.calling_number == "15551230001"
    assert facts.call_id == "1A2B3C4D 00000000 00000000 00000001"   # one case, single spaces
    assert facts.caller_address == "10.1.2.3"
    assert facts.protocol == "sip"


def test_cisco_values_without_prefix_read_the_same():
    _, pkt = auth_request([
        ("Called-Station-Id", "442071234567"),
        ("h323-conf-id", "1A2B3C4D 00000000 00000000 00000001"),
        ("h323-remote-address", "10.1.2.3"),
    ])
    facts = auth_facts(pkt, nas(), "127.0.0.1")
    assert facts.call_id == "1A2B3C4D 00000000 00000000 00000001"
    assert facts.caller_address == "10.1.2.3"
    assert facts.credentials is None


def test_yate_style_request():
    _, pkt = auth_request([
        ("User-Name", "15551230001"), ("Calling-Station-Id", "15551230001"),
        ("Called-Station-Id", "sip:442071234567@10.0.0.5"), ("Service-Type", 1),
        ("NAS-Identifier", "yate"), ("NAS-IP-Address", "127.0.0.1"),
        ("h323-remote-address", "h323-remote-address=10.9.1.1"),
        ("h323-conf-id", "h323-conf-id=0A0B0C0D 11111111 22222222 33333333"),
        ("Cisco-AVPair", "call-id=abc@10.9.1.1"),
    ])
    facts = auth_facts(pkt, nas(dialect="yate"), "127.0.0.1")
    assert facts.caller_address == "10.9.1.1"
    assert facts.called_number == "442071234567"
    assert facts.call_id == "0A0B0C0D 11111111 22222222 33333333"   # conf-id wins over call-id


@pytest.mark.parametrize("raw, expected", [
    ("sip:+44 20 7123 4567@gw.example.net;user=phone", "442071234567"),
    ("tel:+1-555-123*9#", "1555123*9#"),
    ("sips:0099442071234567@[2001:db8::1]:5061", "0099442071234567"),
    ("anonymous", None),
    ("", None),
])
def test_called_number_keeps_digits_hash_star(raw, expected):
    assert normalise_number(raw) == expected


def test_call_id_preference():
    base = [("Acct-Session-Id", "sess-1")]
    _, pkt = auth_request(base)
    assert auth_facts(pkt, nas(), "127.0.0.1").call_id == "sess-1"
    _, pkt = auth_request(base + [("h323-incoming-conf-id", "h323-incoming-conf-id=aa bb cc dd")])
    assert auth_facts(pkt, nas(), "127.0.0.1").call_id == "AA BB CC DD"
    _, pkt = auth_request(base + [("Cisco-AVPair", "h323-incoming-conf-id=aa bb cc dd"), ("Cisco-AVPair", "call-id=sip-call@host")])
    assert auth_facts(pkt, nas(), "127.0.0.1").call_id == "sip-call@host"
    _, pkt = auth_request(base + [("Cisco-AVPair", "call-id=sip-call@host"), ("h323-conf-id", "11 22 33 44")])
    assert auth_facts(pkt, nas(), "127.0.0.1").call_id == "11 22 33 44"


def test_caller_address_follows_the_nas_setting_without_falling_back():
    attrs = [("Framed-IP-Address", "192.0.2.7"), ("NAS-IP-Address", "192.0.2.1"),
             ("h323-remote-address", "h323-remote-address=198.51.100.9")]
    _, pkt = auth_request(attrs)
    assert auth_facts(pkt, nas(source="framed-ip-address"), "127.0.0.1").caller_address == "192.0.2.7"
    assert auth_facts(pkt, nas(source="nas-ip-address"), "127.0.0.1").caller_address == "192.0.2.1"
    assert auth_facts(pkt, nas(source="h323-remote-address"), "127.0.0.1").caller_address == "198.51.100.9"
    assert auth_facts(pkt, nas(source="packet-source"), "::ffff:127.0.0.2").caller_address == "127.0.0.2"
    _, bare = auth_request([("User-Name", "x")])
    # the configured attribute is missing: no caller address (never the switch's own address)
    assert auth_facts(bare, nas(source="h323-remote-address"), "127.0.0.1").caller_address is None
    assert auth_facts(bare, nas(source="framed-ip-address"), "127.0.0.1").caller_address is None


def test_h323_remote_address_with_port_or_garbage():
    _, pkt = auth_request([("h323-remote-address", "h323-remote-address=10.1.2.3:1720")])
    assert auth_facts(pkt, nas(), "127.0.0.1").caller_address == "10.1.2.3"
    _, pkt = auth_request([("h323-remote-address", "h323-remote-address=[2001:db8::5]:5060")])
    assert auth_facts(pkt, nas(), "127.0.0.1").caller_address == "2001:db8::5"
    _, pkt = auth_request([("h323-remote-address", "not-an-ip")])
    assert auth_facts(pkt, nas(), "127.0.0.1").caller_address is None


def test_chap_with_challenge_attribute_and_with_request_authenticator():
    challenge = b"0123456789abcdef"
    response = hashlib.md5(b"\x05" + b"s3cret-pass" + challenge).digest()
    _, pkt = auth_request([("User-Name", "acme-sip"), ("CHAP-Password", b"\x05" + response),
                           ("CHAP-Challenge", challenge)])
    creds = auth_facts(pkt, nas(), "127.0.0.1").credentials
    assert creds == ChapCredentials(b"\x05", response, challenge)
    _, pkt = auth_request([("User-Name", "acme-sip"), ("CHAP-Password", b"\x05" + response)])
    creds = auth_facts(pkt, nas(), "127.0.0.1").credentials
    assert creds.challenge == pkt.authenticator


def test_draft_sterman_digest_as_kamailio_sends_it():
    attrs = [sub(10, "acme-sip"), sub(1, "sip.example.com"), sub(2, "nonce123"), sub(4, "sip:442071234567@sip.example.com"),
             sub(3, "INVITE"), sub(5, "auth"), sub(9, "00000001"), sub(8, "cn0nce")]
    _, pkt = auth_request([("User-Name", "acme-sip"), ("Service-Type", 15), ("Sip-Uri-User", "442071234567"),
                           ("Cisco-AVPair", "call-id=kam-call-1")],
                          raw={206: [b"0123456789ABCDEF0123456789ABCDEF"], 207: attrs})
    for dialect in ("kamailio", "cisco"):
        facts = auth_facts(pkt, nas(dialect=dialect, source="packet-source"), "127.0.0.2")
        assert facts.credentials == DigestCredentials(
            response="0123456789abcdef0123456789abcdef", username="acme-sip", realm="sip.example.com",
            nonce="nonce123", method="INVITE", uri="sip:442071234567@sip.example.com", algorithm="MD5",
            qop="auth", cnonce="cn0nce", nonce_count="00000001")
        assert facts.call_id == "kam-call-1"
        assert facts.caller_address == "127.0.0.2"


def test_rfc5090_digest_for_cisco_but_not_for_kamailio_numbers():
    raw = {103: [b"0123456789abcdef0123456789abcdef"], 104: [b"realm"], 105: [b"nonce"],
           108: [b"INVITE"], 109: [b"sip:44@realm"], 115: [b"acme-sip"]}
    _, pkt = auth_request([("User-Name", "acme-sip")], raw=raw)
    creds = auth_facts(pkt, nas(dialect="generic"), "127.0.0.1").credentials
    assert isinstance(creds, DigestCredentials) and creds.realm == "realm" and creds.uri == "sip:44@realm"
    # Kamailio's 101-105 are Sip-Method, Sip-Response-Code, Sip-CSeq, To-Tag, From-Tag: no Digest
    assert auth_facts(pkt, nas(dialect="kamailio", source="packet-source"), "127.0.0.2").credentials is None


def test_kamailio_caller_check_request():
    _, pkt = auth_request([("User-Name", "15551230001"), ("Service-Type", 10),
                           ("Calling-Station-Id", "15551230001"), ("Called-Station-Id", "sip:442071234567@127.0.0.1"),
                           ("Acct-Session-Id", "a84b4c76e66710@pc33.example.com"), ("NAS-Port", 5060),
                           ("NAS-IP-Address", "127.0.0.2"), ("NAS-Identifier", "kamailio")],
                          raw={109: [struct.pack("!I", 5062)]})
    facts = auth_facts(pkt, nas(dialect="kamailio", source="packet-source"), "127.0.0.2")
    assert facts.call_id == "a84b4c76e66710@pc33.example.com"
    assert facts.called_number == "442071234567"
    assert facts.protocol == "sip"
    assert facts.port == 5062
    assert facts.credentials is None


def test_undecodable_credentials_are_malformed():
    _, pkt = auth_request([("User-Name", "x")], raw={2: [b"short"]})
    with pytest.raises(MalformedRequest):
        auth_facts(pkt, nas(), "127.0.0.1")
    _, pkt = auth_request([("User-Name", "x")], raw={3: [b"\x01" * 5]})
    with pytest.raises(MalformedRequest):
        auth_facts(pkt, nas(), "127.0.0.1")
    _, pkt = auth_request([("User-Name", "x")], raw={206: [b"00" * 16], 207: [b"\x01\x09abc"]})
    with pytest.raises(MalformedRequest):
        auth_facts(pkt, nas(), "127.0.0.1")


# --- accounting -----------------------------------------------------------------------------

def test_cisco_stop_leg():
    _, pkt = acct_request([
        ("Acct-Status-Type", 2), ("Acct-Session-Id", "0000002A"), ("Acct-Session-Time", 125),
        ("Acct-Terminate-Cause", 1), ("Acct-Delay-Time", 4),
        ("Calling-Station-Id", "15551230001"), ("Called-Station-Id", "442071234567"),
        ("h323-conf-id", "h323-conf-id=1A2B3C4D 00000000 00000000 00000001"),
        ("h323-call-origin", "h323-call-origin=originate"),
        ("h323-remote-address", "h323-remote-address=198.51.100.20"),
        ("h323-setup-time", "h323-setup-time=*20:24:19.703 GMT Wed Nov 25 2026"),
        ("h323-connect-time", "h323-connect-time=20:24:21.000 GMT Wed Nov 25 2026"),
        ("h323-disconnect-time", "h323-disconnect-time=.20:26:26.000 GMT Wed Nov 25 2026"),
        ("h323-disconnect-cause", "h323-disconnect-cause=1c"),
    ])
    facts = acct_facts(pkt, nas(), "127.0.0.1", NOW)
    assert facts.status == "stop"
    assert facts.leg == "term"
    assert facts.leg_key == "1:0000002A"
    assert facts.acct_session_id == "0000002A"
    assert facts.call_id == "1A2B3C4D 00000000 00000000 00000001"
    assert facts.remote_address == "198.51.100.20"
    assert facts.setup_time == dt.datetime(2026, 11, 25, 20, 24, 19, 703000, UTC)
    assert facts.connect_time == dt.datetime(2026, 11, 25, 20, 24, 21, tzinfo=UTC)
    assert facts.disconnect_time == dt.datetime(2026, 11, 25, 20, 26, 26, tzinfo=UTC)
    assert facts.session_time == 125
    assert facts.terminate_cause == 1
    assert facts.disconnect_cause == "1C"
    assert facts.event_time == NOW - dt.timedelta(seconds=4)   # no Event-Timestamp: receive time - delay


def test_answer_leg_is_the_originator_and_event_timestamp_wins():
    _, pkt = acct_request([("Acct-Status-Type", 1), ("Acct-Session-Id", "leg-1"), ("Event-Timestamp", 1606330000),
                           ("Acct-Delay-Time", 30), ("h323-call-origin", "answer")])
    facts = acct_facts(pkt, nas(), "127.0.0.1", NOW)
    assert (facts.status, facts.leg) == ("start", "orig")
    assert facts.event_time == dt.datetime(2020, 11, 25, 18, 46, 40, tzinfo=UTC)


def test_kamailio_accounting_with_private_attributes_and_float_timestamp():
    _, pkt = acct_request([("Acct-Status-Type", 1), ("Service-Type", 15), ("Acct-Session-Id", "callid-77@host"),
                           ("Calling-Station-Id", "sip:15551230001@10.0.0.1"), ("Called-Station-Id", "sip:4420@x")],
                          raw={101: [struct.pack("!I", 1)], 102: [struct.pack("!I", 200)], 104: [b"totag"],
                               105: [b"fromtag"], 55: [b"1606330000.500000"]})
    facts = acct_facts(pkt, nas(dialect="kamailio", source="packet-source"), "127.0.0.2", NOW)
    assert facts.status == "start"
    assert facts.call_id == "callid-77@host"
    assert facts.leg_key == "1:callid-77@host"
    assert facts.calling_number == "15551230001"
    assert facts.event_time == dt.datetime(2020, 11, 25, 18, 46, 40, 500000, UTC)
    assert facts.caller_address == "127.0.0.2"
    assert facts.protocol == "sip"


@pytest.mark.parametrize("code, status", [(3, "interim"), (7, "on"), (8, "off"), (15, "failed")])
def test_status_types(code, status):
    _, pkt = acct_request([("Acct-Status-Type", code)] + ([("Acct-Session-Id", "x")] if code in (3, 15) else []))
    assert acct_facts(pkt, nas(), "127.0.0.1", NOW).status == status


def test_accounting_without_what_we_need_is_malformed():
    for attrs, reason in [([("Acct-Session-Id", "x")], "missing_status_type"),
                          ([("Acct-Status-Type", 9), ("Acct-Session-Id", "x")], "unsupported_status_type"),
                          ([("Acct-Status-Type", 2)], "missing_session_id")]:
        _, pkt = acct_request(attrs)
        with pytest.raises(MalformedRequest) as err:
            acct_facts(pkt, nas(), "127.0.0.1", NOW)
        assert err.value.reason == reason


def test_unreadable_times_are_reported_not_raised():
    warnings = []
    _, pkt = acct_request([("Acct-Status-Type", 2), ("Acct-Session-Id", "x"),
                           ("h323-setup-time", "h323-setup-time=yesterday-ish"), ("h323-connect-time", "10:00:00.000 QQQ Mon Jan 5 2026")])
    facts = acct_facts(pkt, nas(), "127.0.0.1", NOW, warnings)
    assert facts.setup_time is None
    assert facts.connect_time == dt.datetime(2026, 1, 5, 10, tzinfo=UTC)
    assert len(warnings) == 2


def test_random_attribute_contents_give_facts_or_malformed_never_a_crash():
    import random

    rng = random.Random(2865)
    numbers = [1, 2, 3, 4, 8, 30, 31, 40, 41, 44, 46, 49, 55, 60, 95, 101, 103, 104, 105, 108, 109, 206, 207]
    vendor = [1, 23, 24, 25, 26, 28, 29, 30, 35, 141, 142]
    for i in range(300):
        raw = {}
        for _ in range(rng.randint(1, 8)):
            value = bytes(rng.randrange(256) for _ in range(rng.randint(0, 40)))
            if rng.random() < 0.5:
                raw.setdefault(rng.choice(numbers), []).append(value)
            else:
                raw.setdefault((9, rng.choice(vendor)), []).append(value)
        dialect = rng.choice(["cisco", "kamailio", "opensips", "yate", "generic"])
        source = rng.choice(["h323-remote-address", "framed-ip-address", "nas-ip-address", "packet-source"])
        _, auth = auth_request(raw=raw)
        _, acct = acct_request(raw=raw)
        for build in (lambda: auth_facts(auth, nas(dialect=dialect, source=source), "127.0.0.1"),
                      lambda: acct_facts(acct, nas(dialect=dialect, source=source), "127.0.0.1", NOW, [])):
            try:
                build()
            except MalformedRequest:
                pass


def test_repeated_accounting_records_give_equal_facts_and_own_copies_of_values():
    from radiusd.radius.dialects import normalise_address, raw_values

    attrs = [("Acct-Status-Type", 2), ("Acct-Session-Id", "0000ABCD"), ("Acct-Session-Time", 30),
             ("h323-remote-address", "h323-remote-address=10.1.2.3"),
             ("h323-setup-time", "h323-setup-time=20:24:19.703 GMT Wed Nov 25 2026"),
             ("h323-disconnect-time", "h323-disconnect-time=20:24:49.703 XYZ Wed Nov 25 2026")]
    first_warnings, second_warnings = [], []
    first = acct_facts(acct_request(attrs)[1], nas(), "127.0.0.1", NOW, first_warnings)
    _, pkt = acct_request(attrs)
    second = acct_facts(pkt, nas(), "127.0.0.1", NOW, second_warnings)
    assert first == second
    assert first.caller_address == first.remote_address == "10.1.2.3"
    assert first.setup_time == dt.datetime(2026, 11, 25, 20, 24, 19, 703000, UTC)
    assert first_warnings == second_warnings == ["unknown time zone 'XYZ', read as UTC"]
    values = raw_values(pkt, 44)
    values.append(b"changed")                          # a caller's list is its own
    assert raw_values(pkt, 44) == [b"0000ABCD"]
    for _ in range(2):
        assert normalise_address("[::ffff:10.1.2.3]") == "10.1.2.3"
        assert normalise_address("10.1.2.3:5060") == "10.1.2.3"
        assert normalise_address(" 10.1.2.3 ") == "10.1.2.3"
        assert normalise_address("gw.example") is None
