"""NAS lookup, duplicate cache, reply encoding and the dictionary: the edge's pure pieces."""
import datetime as dt
from decimal import Decimal

from pyrad.packet import AccessAccept, AccessReject, AuthPacket

from radiusd.core.decision import Accept, CallPlan, Route
from radiusd.core.reasons import RejectReason
from radiusd.core.snapshot import AccountInfo, ClientInfo, NasInfo, Rate, RoutingPlanInfo, build_rate_table
from radiusd.radius import replies
from radiusd.radius.dedup import IN_PROGRESS, NEW, REPLAY, DuplicateCache
from radiusd.radius.nas_table import NasTable, canonical_source
from radius_packets import DICTIONARY, SECRET, auth_request, nas

UTC = dt.timezone.utc


def _nas(id, address, **kw):
    return NasInfo(id=id, name=f"n{id}", address=address, secret=b"s", **kw)


def test_most_specific_nas_wins_and_ipv4_mapped_sources_are_ipv4():
    table = NasTable([_nas(1, "10.0.0.0/8"), _nas(2, "10.1.0.0/16"), _nas(3, "10.1.2.3/32"),
                      _nas(4, "2001:db8::/32"), _nas(5, "2001:db8:1::/48")])
    assert table.lookup("10.9.9.9").id == 1
    assert table.lookup("10.1.9.9").id == 2
    assert table.lookup("10.1.2.3").id == 3
    assert table.lookup("::ffff:10.1.2.3").id == 3
    assert table.lookup("2001:db8:1::7").id == 5
    assert table.lookup("2001:db8:2::7").id == 4
    assert table.lookup("192.0.2.1") is None
    assert table.lookup("::1") is None
    assert table.lookup("not-an-address") is None
    assert canonical_source("::ffff:127.0.0.1") == "127.0.0.1"


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_duplicate_cache_replays_drops_in_flight_and_purges_on_new_authenticator():
    clock = Clock()
    cache = DuplicateCache(ttl=10, clock=clock)
    key = ("127.0.0.1", 40000, 7)
    assert cache.check(key, b"A" * 16) == (NEW, None)
    assert cache.check(key, b"A" * 16) == (IN_PROGRESS, None)      # still being decided
    cache.complete(key, b"A" * 16, b"reply-1")
    assert cache.check(key, b"A" * 16) == (REPLAY, b"reply-1")
    assert cache.check(key, b"B" * 16) == (NEW, None)              # same id, new request
    assert cache.conflicts == 1
    cache.complete(key, b"B" * 16, b"reply-2")
    assert cache.check(key, b"A" * 16)[0] == NEW                    # old entry was purged
    cache.complete(key, b"A" * 16, b"reply-3")
    clock.now += 11
    assert cache.check(key, b"A" * 16) == (NEW, None)              # expired: decided again


def test_duplicate_cache_forget_and_other_ports_are_other_requests():
    cache = DuplicateCache(ttl=10, clock=Clock())
    cache.check(("h", 1, 1), b"A" * 16)
    assert cache.check(("h", 2, 1), b"A" * 16)[0] == NEW
    cache.forget(("h", 1, 1), b"A" * 16)
    assert cache.check(("h", 1, 1), b"A" * 16)[0] == NEW


def test_duplicate_cache_is_bounded():
    cache = DuplicateCache(ttl=10, max_entries=100, clock=Clock())
    for i in range(1000):
        cache.check(("h", i, 1), b"A" * 16)
        cache.complete(("h", i, 1), b"A" * 16, b"r")
    assert len(cache) <= 101
    assert cache.check(("h", 999, 1), b"A" * 16)[0] == REPLAY


def _accept(available=Decimal("149.987"), routes=(), plan_name="default"):
    client = ClientInfo(1, "Acme Telecom", credit_limit=Decimal(50))
    account = AccountInfo(3, 1, "acme-sip", "name")
    rate = Rate(1, "44", Decimal("0.02"))
    plan = CallPlan(nas_id=1, account=account, client=client, called_number="442071234567", calling_number=None,
                    call_id="c1", rate_table=build_rate_table(1, "retail", "USD", [rate]), rate=rate,
                    routing_plan=RoutingPlanInfo(1, plan_name) if plan_name else None, routes=tuple(routes))
    return Accept(plan=plan, max_duration=3600, max_cost=Decimal(72), available=available)


def _decode(data, request):
    reply = AuthPacket(packet=data, dict=DICTIONARY, secret=SECRET)
    assert request.VerifyReply(reply, data, enforce_ma=True)
    assert data[20] == 80, "Message-Authenticator must be the first attribute"
    return reply


def test_accept_carries_credit_time_and_documented_attributes_with_ma_first():
    _, request = auth_request([("User-Name", "acme-sip"), ("Proxy-State", b"ps-1"), ("Proxy-State", b"ps-2")])
    routes = [Route(6, "carrier-b", "sip", "198.51.100.20", 5060), Route(7, "no-host", None, None, None),
              Route(8, "v6", "sip", "2001:db8::9", None)]
    data = replies.accept_reply(request, _accept(routes=routes), nas(), billing_model="1")
    reply = _decode(data, request)
    assert reply.code == AccessAccept
    assert reply["h323-return-code"] == ["h323-return-code=0"]
    assert reply["h323-credit-time"] == ["h323-credit-time=3600"]
    assert reply["Session-Timeout"] == [3600]
    assert reply["h323-currency"] == ["h323-currency=USD"]
    assert reply["h323-billing-model"] == ["h323-billing-model=1"]
    assert reply["h323-credit-amount"] == ["h323-credit-amount=149.98"]
    assert reply["Cisco-AVPair"] == [
        "xpgk-dst-number-out=442071234567", "routing-plan=default",
        "h323-ivr-in=Routing:442071234567@198.51.100.20:5060",
        "h323-ivr-in=Routing:442071234567@[2001:db8::9]",
    ]
    assert reply["Proxy-State"] == [b"ps-1", b"ps-2"]
    assert "SIP-AVP" not in reply


def test_accept_for_unlimited_credit_and_kamailio_nas():
    _, request = auth_request([("User-Name", "x")])
    data = replies.accept_reply(request, _accept(available=None, plan_name=None), nas(dialect="kamailio"))
    reply = _decode(data, request)
    assert "h323-credit-amount" not in reply and "h323-billing-model" not in reply
    assert reply["SIP-AVP"] == ["session_max_time#3600"]
    assert reply["Cisco-AVPair"] == ["xpgk-dst-number-out=442071234567"]


def test_reject_carries_return_code_and_message():
    _, request = auth_request([("User-Name", "x"), ("Proxy-State", b"ps")])
    data = replies.reject_reply(request, RejectReason.BAD_PASSWORD)
    reply = _decode(data, request)
    assert reply.code == AccessReject
    assert reply["h323-return-code"] == ["h323-return-code=2"]
    assert reply["Reply-Message"] == ["invalid password"]
    assert reply["Proxy-State"] == [b"ps"]


def test_dictionary_defines_what_the_edge_needs():
    attrs = DICTIONARY.attributes
    assert attrs["Message-Authenticator"].code == 80
    assert (attrs["Event-Timestamp"].code, attrs["Event-Timestamp"].type) == (55, "date")
    assert DICTIONARY.attributes["Acct-Status-Type"].values.GetForward("Accounting-On") == (7).to_bytes(4, "big")
    assert DICTIONARY.attributes["Acct-Status-Type"].values.GetForward("Accounting-Off") == (8).to_bytes(4, "big")
    assert DICTIONARY.attributes["Acct-Status-Type"].values.GetForward("Failed") == (15).to_bytes(4, "big")
    assert (attrs["Digest-Response"].code, attrs["SIP-AOR"].code) == (103, 122)
    assert (attrs["Digest-Response-Sterman"].code, attrs["Digest-Attributes"].code) == (206, 207)
    assert (attrs["SIP-AVP"].code, attrs["Sip-Uri-User"].code) == (225, 208)
    assert attrs["NAS-IPv6-Address"].code == 95
    for name, code in [("Cisco-AVPair", 1), ("Cisco-NAS-Port", 2), ("h323-remote-address", 23), ("h323-conf-id", 24),
                       ("h323-incoming-conf-id", 35), ("h323-credit-time", 102), ("h323-return-code", 103),
                       ("release-source", 115), ("call-id", 141), ("dsp-id", 151), ("Cisco-Command-Code", 252)]:
        assert (attrs[name].vendor, attrs[name].code) == ("Cisco", code)


def test_unknown_attributes_are_kept_by_number():
    _, pkt = auth_request([("User-Name", "x")], raw={200: [b"vendorless"], 101: [b"\x00\x00\x00\x01"]})
    assert pkt[200] == [b"vendorless"] and pkt[101] == [b"\x00\x00\x00\x01"]


def test_hmac_md5_is_rfc_2104_for_every_secret_length():
    import hashlib
    import hmac

    from radiusd.radius.codec import hmac_md5

    for secret in (b"", b"s", SECRET, b"k" * 64, b"long" * 17, bytearray(b"testing123")):
        for data in (b"", b"\x01" * 20, bytes(range(256)) * 3):
            assert hmac_md5(secret, data) == hmac.new(bytes(secret), data, hashlib.md5).digest()
    assert hmac_md5(SECRET, b"x") != hmac_md5(b"other", b"x")   # states are per secret
