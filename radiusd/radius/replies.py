"""Decisions -> RADIUS replies (pure: a pyrad request in, reply bytes out).

Access-Accept (every attribute below is on the wire in this order; Cisco VSAs in the
`name=value` form Cisco IOS expects, which gateways that want bare values also accept):

| attribute | value | when |
|---|---|---|
| Message-Authenticator (80) | HMAC-MD5 | always, FIRST attribute (BlastRADIUS) |
| Proxy-State (33) | copied | every Proxy-State of the request, in order |
| Cisco h323-return-code (9/103) | `h323-return-code=0` | always |
| Cisco h323-credit-time (9/102) | `h323-credit-time=<seconds>` | always: the max call duration |
| Session-Timeout (27) | `<seconds>` (same value) | always |
| Cisco h323-currency (9/110) | `h323-currency=<ISO 4217>` | always (the client's currency, USD by default) |
| Cisco h323-billing-model (9/109) | `h323-billing-model=<setting>` | only when `[reply] billing_model` is set (vendors disagree on its meaning) |
| Cisco h323-credit-amount (9/101) | `h323-credit-amount=<available, 2 dp>` | only when the client's credit is limited |
| Cisco-AVPair (9/1) | `xpgk-dst-number-out=<number>` | the called number with the tech prefix stripped |
| Cisco-AVPair (9/1) | `routing-plan=<name>` | when the account/client has a routing plan |
| Cisco-AVPair (9/1) | `h323-ivr-in=Routing:<number>@<host>[:<port>]` | one per terminator route, in order of preference (Sippy B2BUA syntax); routes without a host are left out; at most 20 |
| SIP-AVP (225) | `session_max_time#<seconds>` | NAS dialect kamailio/opensips (they read only SIP-AVP) |

Access-Reject:

| attribute | value |
|---|---|
| Message-Authenticator (80) | first attribute |
| Proxy-State (33) | copied, in order |
| Cisco h323-return-code (9/103) | `h323-return-code=<code>` from the reject reason catalogue |
| Reply-Message (18) | the reason's message, e.g. `invalid password` |

Status-Server (RFC 5997) is answered with an Access-Accept (auth port) or an
Accounting-Response (accounting port) carrying only Message-Authenticator (and Proxy-State);
an Accounting-Request with an Accounting-Response without attributes (RFC 2866).
"""
from __future__ import annotations

import hashlib
import hmac
import struct
from collections import OrderedDict
from decimal import ROUND_DOWN, Decimal

from pyrad.packet import AccessAccept, AccessReject, AccountingResponse, AcctPacket, Packet

from radiusd.core.decision import Accept
from radiusd.core.reasons import RejectReason
from radiusd.core.snapshot import NasInfo

SIP_DIALECTS = frozenset({"kamailio", "opensips"})
MAX_ROUTES = 20   # keeps an Access-Accept well under the 4096-octet RADIUS limit

# Replies are encoded here directly (pyrad's CreateReply + AddAttribute + ReplyPacket cost about
# as much as the rest of the request together: a dictionary lookup per attribute and every
# attribute encoded twice, once for the Message-Authenticator, once for the packet). The bytes
# are the same as pyrad's (a test compares them).
_MA_ZERO = b"\x50\x12" + bytes(16)
_HEADER = struct.Struct("!BBH")
_CISCO_VENDOR = b"\x00\x00\x00\x09"
SESSION_TIMEOUT, REPLY_MESSAGE, PROXY_STATE, SIP_AVP = 27, 18, 33, 225
# Cisco VSA numbers (dictionaries/dictionary.cisco)
AVPAIR, CREDIT_AMOUNT, CREDIT_TIME, RETURN_CODE, BILLING_MODEL, CURRENCY = 1, 101, 102, 103, 109, 110
_TWO_PLACES = Decimal("0.01")


def _attribute(number: int, value: bytes) -> bytes:
    if len(value) > 253:
        raise ValueError(f"Value of attribute {number} is too long ({len(value)} octets, at most 253 fit)")
    return bytes((number, len(value) + 2)) + value


def _vsa(number: int, text: str) -> bytes:
    """A Cisco Vendor-Specific attribute holding one string sub-attribute."""
    value = text.encode()
    if len(value) > 247:
        raise ValueError(f"Value of Cisco attribute {number} is too long ({len(value)} octets, at most 247 fit)")
    return bytes((26, len(value) + 8)) + _CISCO_VENDOR + bytes((number, len(value) + 2)) + value


def _cisco_pair(number: int, name: str, value) -> bytes:
    return _vsa(number, f"{name}={value}")


_RETURN_CODE_0 = _cisco_pair(RETURN_CODE, "h323-return-code", 0)
_REJECT_ATTRIBUTES: dict[RejectReason, bytes] = {}


def _proxy_states(request: Packet) -> bytes:
    values = OrderedDict.get(request, PROXY_STATE)
    if not values or isinstance(values, dict):
        return b""
    return b"".join(_attribute(PROXY_STATE, bytes(value)) for value in values)


def _encode(code: int, request: Packet, attributes: bytes, message_authenticator: bool = True) -> bytes:
    """Header + Response Authenticator + [Message-Authenticator first] + Proxy-State + attributes."""
    secret, request_authenticator = request.secret, request.authenticator
    body = _proxy_states(request) + attributes
    if message_authenticator:
        body = _MA_ZERO + body
    header = _HEADER.pack(code, request.id, 20 + len(body))
    if message_authenticator:
        # RFC 2869 5.14 / RFC 5997 3: replies use the Request Authenticator in the HMAC
        ma = hmac.new(secret, header + request_authenticator + body, hashlib.md5).digest()
        body = b"\x50\x12" + ma + body[18:]
    response = hashlib.md5(header + request_authenticator + body + secret).digest()
    return header + response + body


def route_value(number: str, host: str, port: int | None) -> str:
    host_part = f"[{host}]" if ":" in host else host
    return f"h323-ivr-in=Routing:{number}@{host_part}" + (f":{port}" if port else "")


def accept_reply(request: Packet, accept: Accept, nas: NasInfo, billing_model: str | None = None) -> bytes:
    plan = accept.plan
    seconds = accept.max_duration
    parts = [
        _RETURN_CODE_0,
        _cisco_pair(CREDIT_TIME, "h323-credit-time", seconds),
        _attribute(SESSION_TIMEOUT, seconds.to_bytes(4, "big")),
        _cisco_pair(CURRENCY, "h323-currency", plan.client.currency or "USD"),
    ]
    if billing_model is not None:
        parts.append(_cisco_pair(BILLING_MODEL, "h323-billing-model", billing_model))
    if accept.available is not None:
        amount = max(accept.available, Decimal(0)).quantize(_TWO_PLACES, rounding=ROUND_DOWN)
        parts.append(_cisco_pair(CREDIT_AMOUNT, "h323-credit-amount", amount))
    parts.append(_vsa(AVPAIR, f"xpgk-dst-number-out={plan.called_number}"))
    if plan.routing_plan is not None:
        parts.append(_vsa(AVPAIR, f"routing-plan={plan.routing_plan.name}"))
    if plan.routes:
        for route in [r for r in plan.routes if r.host][:MAX_ROUTES]:
            parts.append(_vsa(AVPAIR, route_value(plan.called_number, route.host, route.port)))
    if nas.dialect in SIP_DIALECTS:
        parts.append(_attribute(SIP_AVP, f"session_max_time#{seconds}".encode()))
    return _encode(AccessAccept, request, b"".join(parts))


def reject_reply(request: Packet, reason: RejectReason) -> bytes:
    attributes = _REJECT_ATTRIBUTES.get(reason)
    if attributes is None:
        attributes = (_cisco_pair(RETURN_CODE, "h323-return-code", reason.return_code)
                      + _attribute(REPLY_MESSAGE, reason.message.encode()))
        _REJECT_ATTRIBUTES[reason] = attributes
    return _encode(AccessReject, request, attributes)


def status_reply(request: Packet) -> bytes:
    """Status-Server: Access-Accept on the auth port, Accounting-Response on the acct port."""
    return _encode(AccountingResponse if isinstance(request, AcctPacket) else AccessAccept, request, b"")


def accounting_reply(request: Packet) -> bytes:
    return _encode(AccountingResponse, request, b"", message_authenticator=False)
