"""The edge's hand-written fast paths give exactly what pyrad gives: decoding, reply bytes, addresses."""
import ipaddress
import random
from collections import OrderedDict
from decimal import ROUND_DOWN, Decimal

from pyrad.packet import AccessAccept, AccessReject, AccountingResponse, AcctPacket, AuthPacket, StatusServer

from radiusd.core.decision import Accept, CallPlan, Route
from radiusd.core.reasons import RejectReason
from radiusd.core.snapshot import AccountInfo, ClientInfo, Rate, RoutingPlanInfo, build_rate_table
from radiusd.radius import replies
from radiusd.radius.codec import FastAcctPacket, FastAuthPacket
from radiusd.radius.dialects import normalise_address
from radius_packets import DICTIONARY, SECRET, acct_request, auth_request, nas


# pyrad's own way of building the replies (what radiusd did before): the reference
def _pyrad_accept(request, accept, nas_info, billing_model=None):
    reply = request.CreateReply()
    reply.code = AccessAccept
    reply.message_authenticator = True
    plan = accept.plan

    def cisco(name, value):
        reply.AddAttribute(name, f"{name}={value}")

    cisco("h323-return-code", 0)
    cisco("h323-credit-time", accept.max_duration)
    reply.AddAttribute("Session-Timeout", accept.max_duration)
    cisco("h323-currency", plan.client.currency or "USD")
    if billing_model is not None:
        cisco("h323-billing-model", billing_model)
    if accept.available is not None:
        cisco("h323-credit-amount", max(accept.available, Decimal(0)).quantize(Decimal("0.01"), rounding=ROUND_DOWN))
    reply.AddAttribute("Cisco-AVPair", f"xpgk-dst-number-out={plan.called_number}")
    if plan.routing_plan is not None:
        reply.AddAttribute("Cisco-AVPair", f"routing-plan={plan.routing_plan.name}")
    for route in [r for r in plan.routes if r.host][:replies.MAX_ROUTES]:
        reply.AddAttribute("Cisco-AVPair", replies.route_value(plan.called_number, route.host, route.port))
    if nas_info.dialect in replies.SIP_DIALECTS:
        reply.AddAttribute("SIP-AVP", f"session_max_time#{accept.max_duration}")
    return reply.ReplyPacket()


def _pyrad_reject(request, reason):
    reply = request.CreateReply()
    reply.code = AccessReject
    reply.message_authenticator = True
    reply.AddAttribute("h323-return-code", f"h323-return-code={reason.return_code}")
    reply.AddAttribute("Reply-Message", reason.message)
    return reply.ReplyPacket()


def _accept(available, routes, plan_name, currency="EUR", seconds=3600):
    client = ClientInfo(1, "Acme Telecom", credit_limit=Decimal(50), currency=currency)
    account = AccountInfo(3, 1, "acme-sip", "name")
    rate = Rate(1, "44", Decimal("0.02"))
    plan = CallPlan(nas_id=1, account=account, client=client, called_number="442071234567", calling_number=None,
                    call_id="c1", rate_table=build_rate_table(1, "retail", "USD", [rate]), rate=rate,
                    routing_plan=RoutingPlanInfo(1, plan_name) if plan_name else None, routes=tuple(routes))
    return Accept(plan=plan, max_duration=seconds, max_cost=Decimal(72), available=available)


def test_replies_are_byte_for_byte_what_pyrad_would_encode():
    routes = [Route(6, "b", "sip", "198.51.100.20", 5060), Route(7, "none", None, None, None),
              Route(8, "v6", "sip", "2001:db8::9", None)] * 8   # more than MAX_ROUTES with a host
    for proxy in ([], [("Proxy-State", b"ps-1")], [("Proxy-State", b"ps-1"), ("Proxy-State", b"\x00ps-2")]):
        _, request = auth_request([("User-Name", "acme-sip")] + proxy)
        for available in (None, Decimal("-3"), Decimal("149.987")):
            for kwargs in ({}, {"billing_model": "1"}):
                for dialect in ("cisco", "kamailio"):
                    accept = _accept(available, routes if available else (), "default" if available else None)
                    assert replies.accept_reply(request, accept, nas(dialect=dialect), **kwargs) == \
                        _pyrad_accept(request, accept, nas(dialect=dialect), **kwargs)
        for reason in RejectReason:
            assert replies.reject_reply(request, reason) == _pyrad_reject(request, reason)
        status = AuthPacket(code=StatusServer, secret=SECRET, dict=DICTIONARY, authenticator=b"A" * 16, id=9)
        assert replies.status_reply(status) == _ref_status(status)
        acct_status = AcctPacket(code=StatusServer, secret=SECRET, dict=DICTIONARY, authenticator=b"B" * 16, id=10)
        assert replies.status_reply(acct_status)[0] == AccountingResponse
        assert replies.status_reply(acct_status) == _ref_status(acct_status)
    _, acct = acct_request([("Acct-Status-Type", "Start"), ("Acct-Session-Id", "s1"), ("Proxy-State", b"p")])
    assert replies.accounting_reply(acct) == _ref_accounting(acct)


def _ref_status(request):
    reply = request.CreateReply()
    reply.message_authenticator = True
    return reply.ReplyPacket()


def _ref_accounting(request):
    reply = request.CreateReply()
    reply.code = AccountingResponse
    return reply.ReplyPacket()


def _same_decode(data: bytes, slow, fast) -> bool:
    outcomes = []
    for cls in (slow, fast):
        try:
            pkt = cls(packet=data, dict=DICTIONARY, secret=SECRET)
            outcomes.append((list(OrderedDict.items(pkt)), pkt.code, pkt.id, pkt.authenticator,
                             pkt.message_authenticator, pkt.raw_packet))
        except Exception as exc:
            outcomes.append((type(exc), str(exc)))
    assert outcomes[0] == outcomes[1], data
    return isinstance(outcomes[0][0], list)


def test_fast_decoding_gives_pyrad_attributes_and_errors_for_mutated_packets():
    rng = random.Random(2026)
    auth, _ = auth_request([("User-Name", "x"), ("Called-Station-Id", "44"), ("h323-conf-id", "h323-conf-id=1 2 3 4"),
                            ("Cisco-AVPair", "a=b"), ("Cisco-AVPair", "call-id=c"), ("Proxy-State", b"p")],
                           password="pw")
    acct, _ = acct_request([("Acct-Status-Type", "Stop"), ("Acct-Session-Id", "s1"), ("Acct-Session-Time", 30)])
    decoded = 0
    for base, slow, fast in ((auth, AuthPacket, FastAuthPacket), (acct, AcctPacket, FastAcctPacket)):
        assert _same_decode(base, slow, fast)
        for _ in range(1500):
            data = bytearray(base)
            for _ in range(rng.randrange(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            if rng.random() < 0.2:
                data = data[:rng.randrange(len(data) + 1)]
            decoded += _same_decode(bytes(data), slow, fast)
    assert decoded > 1000   # most mutations still decode: both paths were compared on real attributes


def test_dotted_quad_shortcut_matches_ipaddress():
    rng = random.Random(7)
    samples = ["1.2.3.4", "255.255.255.255", "0.0.0.0", "01.2.3.4", "1.2.3", "1.2.3.4.5", "256.1.1.1", " 10.0.0.1 ",
               "10.0.0.1:5060", "[::ffff:10.0.0.1]", "::ffff:10.0.0.1", "2001:DB8::1"]
    samples += [".".join(str(rng.choice([rng.randrange(256), rng.randrange(1000)])) for _ in range(4))
                for _ in range(3000)]
    for text in samples:
        assert normalise_address(text) == _reference_address(text), text


def _reference_address(text):
    """normalise_address as it was before the shortcut: every candidate through ipaddress."""
    text = text.strip()
    candidates = [text]
    if text.startswith("[") and "]" in text:
        candidates.append(text[1:text.index("]")])
    elif text.count(":") == 1:
        candidates.append(text.split(":", 1)[0])
    for candidate in candidates:
        try:
            address = ipaddress.ip_address(candidate)
        except ValueError:
            continue
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return str(address)
    return None


def test_listening_sockets_get_a_receive_buffer_for_bursts():
    import socket

    from radiusd.radius.server import UDP_RCVBUF, bind_udp

    with open("/proc/sys/net/core/rmem_max") as fh:
        cap = int(fh.read())
    sock = bind_udp("127.0.0.1", 0, reuse_port=False)
    try:
        # Linux reports twice the size asked for; without SO_RCVBUFFORCE (not root) rmem_max caps it
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 2 * min(UDP_RCVBUF, cap)
    finally:
        sock.close()


def test_message_authenticator_check_agrees_with_pyrad_on_mutated_packets():
    from radiusd.radius.codec import message_authenticator_ok

    rng = random.Random(5080)
    auth, _ = auth_request([("User-Name", "x"), ("Called-Station-Id", "44"), ("Proxy-State", b"p")])
    acct, _ = acct_request([("Acct-Status-Type", "Start"), ("Acct-Session-Id", "s1")])
    acct_ma = AcctPacket(packet=acct, dict=DICTIONARY, secret=SECRET)
    acct_ma.add_message_authenticator()
    acct_with_ma = acct_ma.RequestPacket()
    status = AuthPacket(code=StatusServer, secret=SECRET, dict=DICTIONARY, authenticator=b"S" * 16, id=3)
    status.add_message_authenticator()
    status_data = status.RequestPacket()
    verdicts = []
    for base, cls in ((auth, FastAuthPacket), (acct_with_ma, FastAcctPacket), (status_data, FastAuthPacket)):
        for n in range(800):
            data = bytearray(base)
            if n:   # the first one unchanged: it must verify
                for _ in range(rng.randrange(1, 3)):
                    data[rng.randrange(len(data))] = rng.randrange(256)
                if n % 7 == 0:
                    data[0] = rng.choice([1, 2, 4, 5, 12, 40, 43])
            try:
                pkt = cls(packet=bytes(data), dict=DICTIONARY, secret=SECRET)
            except Exception:
                continue
            if not pkt.message_authenticator:
                continue
            for secret in (SECRET, b"wrong"):
                try:
                    expected = pkt.verify_message_authenticator(secret=secret)
                except Exception:
                    expected = False
                got = message_authenticator_ok(pkt, secret)
                assert got == expected, bytes(data)
                verdicts.append(got)
    assert set(verdicts) == {True, False}  # both outcomes were exercised


def test_codec_decode_gives_the_fast_packet_or_a_stricter_malformed_verdict():
    from radiusd.radius import codec

    rng = random.Random(4096)
    auth, _ = auth_request([("User-Name", "x"), ("Called-Station-Id", "44"), ("Proxy-State", b"p")], password="pw")
    acct, _ = acct_request([("Acct-Status-Type", "Stop"), ("Acct-Session-Id", "s1"), ("Acct-Session-Time", 30)])
    same = stricter = 0
    for base, cls, accounting in ((auth, FastAuthPacket, False), (acct, FastAcctPacket, True)):
        for n in range(1500):
            data = bytearray(base)
            for _ in range(rng.randrange(0 if n == 0 else 1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            data = bytes(data)
            try:
                reference = cls(packet=data, dict=DICTIONARY, secret=SECRET)
            except Exception as exc:
                reference = (type(exc), str(exc))
            try:
                got = codec.decode(data, DICTIONARY, SECRET, accounting)
            except codec.PacketError as exc:
                if not isinstance(reference, tuple):   # pyrad took it: only our RFC checks may refuse
                    assert codec._malformed(data, accounting) == str(exc)
                    stricter += 1
                    continue
                got = (type(exc), str(exc))
            if isinstance(reference, tuple) or isinstance(got, tuple):
                assert reference == got, data
            else:
                assert type(got) is cls and vars(got) == vars(reference) and list(got.items()) == list(reference.items())
            same += 1
    assert same > 1000 and stricter > 10


def test_user_password_is_revealed_as_pyrad_reveals_it():
    from pyrad.packet import PacketError

    from radiusd.radius.codec import hide_password, reveal_password

    rng = random.Random(2865)
    for n in range(600):
        secret, authenticator = rng.randbytes(rng.randrange(1, 40)), rng.randbytes(16)
        pkt = AuthPacket(secret=secret, authenticator=authenticator, dict=DICTIONARY)
        if n % 3:
            hidden = hide_password(rng.randbytes(rng.randrange(0, 129)), secret, authenticator)
        else:   # what a wrong secret or a mangled packet gives: any octets, any length
            hidden = rng.randbytes(rng.randrange(0, 70))
        try:
            expected = pkt.PwDecrypt(hidden)
        except PacketError as exc:
            expected = str(exc)
        try:
            got = reveal_password(hidden, secret, authenticator)
        except PacketError as exc:
            got = str(exc)
        assert got == expected, (hidden, secret, authenticator)
    password = "pw-\u00e9\u00e8-" + "x" * 40
    hidden = AuthPacket(secret=b"s", authenticator=bytes(16), dict=DICTIONARY).PwCrypt(password)
    assert reveal_password(hidden, b"s", bytes(16)) == password
