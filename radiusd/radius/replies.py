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

from decimal import ROUND_DOWN, Decimal

from pyrad.packet import AccessAccept, AccessReject, AccountingResponse, AcctPacket, Packet

from radiusd.core.decision import Accept
from radiusd.core.reasons import RejectReason
from radiusd.core.snapshot import NasInfo
from radiusd.radius.codec import attribute, cisco_pair, cisco_vsa, encode_reply

SIP_DIALECTS = frozenset({"kamailio", "opensips"})
MAX_ROUTES = 20   # keeps an Access-Accept well under the 4096-octet RADIUS limit

SESSION_TIMEOUT, REPLY_MESSAGE, SIP_AVP = 27, 18, 225
# Cisco VSA numbers (dictionaries/dictionary.cisco)
AVPAIR, CREDIT_AMOUNT, CREDIT_TIME, RETURN_CODE, BILLING_MODEL, CURRENCY = 1, 101, 102, 103, 109, 110
_TWO_PLACES = Decimal("0.01")
_RETURN_CODE_0 = cisco_pair(RETURN_CODE, "h323-return-code", 0)
_REJECT_ATTRIBUTES: dict[RejectReason, bytes] = {}


def route_value(number: str, host: str, port: int | None) -> str:
    host_part = f"[{host}]" if ":" in host else host
    return f"h323-ivr-in=Routing:{number}@{host_part}" + (f":{port}" if port else "")


def accept_reply(request: Packet, accept: Accept, nas: NasInfo, billing_model: str | None = None) -> bytes:
    plan = accept.plan
    seconds = accept.max_duration
    parts = [
        _RETURN_CODE_0,
        cisco_pair(CREDIT_TIME, "h323-credit-time", seconds),
        attribute(SESSION_TIMEOUT, seconds.to_bytes(4, "big")),
        cisco_pair(CURRENCY, "h323-currency", plan.client.currency or "USD"),
    ]
    if billing_model is not None:
        parts.append(cisco_pair(BILLING_MODEL, "h323-billing-model", billing_model))
    if accept.available is not None:
        amount = max(accept.available, Decimal(0)).quantize(_TWO_PLACES, rounding=ROUND_DOWN)
        parts.append(cisco_pair(CREDIT_AMOUNT, "h323-credit-amount", amount))
    parts.append(cisco_vsa(AVPAIR, f"xpgk-dst-number-out={plan.called_number}"))
    if plan.routing_plan is not None:
        parts.append(cisco_vsa(AVPAIR, f"routing-plan={plan.routing_plan.name}"))
    if plan.routes:
        for route in [r for r in plan.routes if r.host][:MAX_ROUTES]:
            parts.append(cisco_vsa(AVPAIR, route_value(plan.called_number, route.host, route.port)))
    if nas.dialect in SIP_DIALECTS:
        parts.append(attribute(SIP_AVP, f"session_max_time#{seconds}".encode()))
    return encode_reply(AccessAccept, request, b"".join(parts))


def reject_reply(request: Packet, reason: RejectReason) -> bytes:
    attributes = _REJECT_ATTRIBUTES.get(reason)
    if attributes is None:
        attributes = (cisco_pair(RETURN_CODE, "h323-return-code", reason.return_code)
                      + attribute(REPLY_MESSAGE, reason.message.encode()))
        _REJECT_ATTRIBUTES[reason] = attributes
    return encode_reply(AccessReject, request, attributes)


def status_reply(request: Packet) -> bytes:
    """Status-Server: Access-Accept on the auth port, Accounting-Response on the acct port."""
    return encode_reply(AccountingResponse if isinstance(request, AcctPacket) else AccessAccept, request, b"")


def accounting_reply(request: Packet) -> bytes:
    return encode_reply(AccountingResponse, request, b"", message_authenticator=False)
