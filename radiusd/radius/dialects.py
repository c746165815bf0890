"""Switch dialects -> plain facts for the core (pure functions, no I/O, no clock).

Every attribute is read by its number from the decoded pyrad packet, so the per-NAS dialect,
not the dictionary, decides what a number means:

- `cisco`, `yate`, `generic`: registered numbers. Cisco VSAs (vendor 9) are read with or
  without the `name=` prefix Cisco IOS puts in the value. Digest comes from draft-sterman
  Digest-Response (206) + Digest-Attributes (207) or from RFC 5090 (103-122).
- `kamailio`, `opensips`: 101-105 are Kamailio's Sip-Method, Sip-Response-Code, Sip-CSeq,
  Sip-To-Tag and Sip-From-Tag, 108/109 Sip-Source-IP-Address/Port, so RFC 5090 Digest is
  not read for these NAS; Digest comes from draft-sterman 206/207 in Access-Requests (what
  Kamailio's auth_radius sends; OpenSIPS' 206/207 From/To tags only appear in accounting).
  Kamailio 5.6 with radcli sends no Message-Authenticator: keep such a NAS at the default
  policy `auto` (radiusd.core.message_authenticator), not `yes`, or every request is dropped.

Call id (the key of the capacity reservation, the same for the Access-Request and the
accounting of the call): h323-conf-id, else the call-id (Cisco-AVPair `call-id=` or Cisco
VSA 141), else h323-incoming-conf-id (VSA 35 or Cisco-AVPair), else Acct-Session-Id (Kamailio
and Sippy put the SIP Call-ID there).

Caller address (what IP identification matches) comes from the NAS's `caller_address_source`
only: h323-remote-address, Framed-IP-Address, NAS-IP-Address (or NAS-IPv6-Address) or the
packet source. If the configured attribute is missing or not an address, the caller address
is None: the call can then only match a login or ANI account. We deliberately do NOT fall back
to the packet source, which is the switch itself and would bill every caller behind it to
whichever account owns the switch's address.

Identifiers (Acct-Session-Id, the call id) keep what the switch sent, except control characters
and NUL, written as `\\xNN` (radiusd.core.sanity.escape_identifier) and flagged
`identifier_escaped`: the same in the Access-Request and the accounting, and storable everywhere.

Called number: Called-Station-Id without `sip:`/`sips:`/`tel:`, `@host` and `;params`, keeping
digits, `#` and `*` (so `+44 20 7123` -> `44207123`). Calling number: the same.
"""
from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import re
import struct
from collections import OrderedDict

from pyrad.packet import Packet, PacketError

from radiusd.core.facts import (
    AcctFacts, AuthFacts, ChapCredentials, Credentials, DigestCredentials, PapCredentials,
)
from radiusd.core.sanity import IDENTIFIER_ESCAPED, escape_identifier
from radiusd.core.snapshot import NasInfo
from radiusd.radius.codec import reveal_password
from radiusd.radius.times import parse_epoch, parse_switch_time

CISCO = 9

# standard attribute numbers
USER_NAME, USER_PASSWORD, CHAP_PASSWORD, NAS_IP_ADDRESS = 1, 2, 3, 4
FRAMED_IP_ADDRESS = 8
CALLED_STATION_ID, CALLING_STATION_ID = 30, 31
ACCT_STATUS_TYPE, ACCT_DELAY_TIME, ACCT_SESSION_ID, ACCT_SESSION_TIME = 40, 41, 44, 46
ACCT_TERMINATE_CAUSE, EVENT_TIMESTAMP, CHAP_CHALLENGE = 49, 55, 60
NAS_IPV6_ADDRESS = 95
DIGEST_RESPONSE_STERMAN, DIGEST_ATTRIBUTES_STERMAN = 206, 207
# Cisco vendor 9
AVPAIR, REMOTE_ADDRESS, CONF_ID, SETUP_TIME, CALL_ORIGIN = 1, 23, 24, 25, 26
CONNECT_TIME, DISCONNECT_TIME, DISCONNECT_CAUSE, INCOMING_CONF_ID = 28, 29, 30, 35
CISCO_CALL_ID, SESSION_PROTOCOL = 141, 142

SIP_DIALECTS = frozenset({"kamailio", "opensips"})

ACCT_STATUS = {1: "start", 2: "stop", 3: "interim", 7: "on", 8: "off", 15: "failed"}

# draft-sterman Digest-Attributes sub-attribute types -> DigestCredentials field
_STERMAN_SUB = {1: "realm", 2: "nonce", 3: "method", 4: "uri", 5: "qop", 6: "algorithm",
                7: "body_digest", 8: "cnonce", 9: "nonce_count", 10: "username"}
# RFC 5090 attribute numbers -> DigestCredentials field
_RFC5090 = {104: "realm", 105: "nonce", 108: "method", 109: "uri", 110: "qop", 111: "algorithm",
            112: "body_digest", 113: "cnonce", 114: "nonce_count", 115: "username"}
DIGEST_RESPONSE_RFC5090 = 103

KAMAILIO_SIP_SOURCE_PORT = 109


class MalformedRequest(ValueError):
    """The packet cannot be turned into facts; `reason` is the drop counter label."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# --- raw attribute access -------------------------------------------------------------------

_get = OrderedDict.get


def _raw(pkt: Packet, key) -> list[bytes] | tuple:
    """raw_values without the copy, for reading only: the decoder stores bytes already, and
    most attributes appear once (copying every list was ~10% of acct_facts)."""
    values = _get(pkt, key)
    if not values or isinstance(values, dict):
        return ()
    if len(values) == 1 and type(values[0]) is bytes:
        return values
    return [bytes(v) for v in values]


def raw_values(pkt: Packet, key: int | tuple[int, int]) -> list[bytes]:
    """Raw octets of every instance of an attribute (by number, or (vendor, number))."""
    return list(_raw(pkt, key))


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace").strip().strip("\x00")


def first_text(pkt: Packet, key) -> str | None:
    for raw in _raw(pkt, key):
        text = _text(raw)
        if text:
            return text
    return None


_UINT32 = struct.Struct("!I")


def first_int(pkt: Packet, key) -> int | None:
    for raw in _raw(pkt, key):
        if len(raw) == 4:
            return _UINT32.unpack(raw)[0]
    return None


def cisco_value(name: str, raw: bytes) -> str:
    """A Cisco VSA value without the `name=` prefix IOS puts in front of it."""
    text = _text(raw)
    if "=" not in text:   # no prefix possible (the prefix ends with "=")
        return text
    prefix = name + "="
    if text[: len(prefix)].lower() == prefix:
        return text[len(prefix):].strip()
    return text


def cisco_vsa(pkt: Packet, number: int, name: str) -> str | None:
    for raw in _raw(pkt, (CISCO, number)):
        value = cisco_value(name, raw)
        if value:
            return value
    return None


def cisco_avpairs(pkt: Packet) -> dict[str, str]:
    """Cisco-AVPair `name=value` strings -> {name: value} (first occurrence wins)."""
    pairs: dict[str, str] = {}
    for raw in _raw(pkt, (CISCO, AVPAIR)):
        text = _text(raw)
        name, sep, value = text.partition("=")
        if sep and name.strip():
            pairs.setdefault(name.strip().lower(), value.strip())
    return pairs


# --- normalisation --------------------------------------------------------------------------

_URI_SCHEME = re.compile(r"^(?:sips?|tel):", re.IGNORECASE)
_NOT_NUMBER = re.compile(r"[^0-9#*]")


def normalise_number(text: str | None) -> str | None:
    """Called/Calling-Station-Id -> digits, `#`, `*` (URI scheme, @host, ;params removed)."""
    if not text:
        return None
    text = _URI_SCHEME.sub("", text.strip())
    text = text.split("@", 1)[0].split(";", 1)[0]
    digits = _NOT_NUMBER.sub("", text)
    return digits or None


_DOTTED_QUAD = re.compile(r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}"
                          r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])")


def normalise_address(text: str | None) -> str | None:
    """An IP address as the NAS wrote it (maybe with a port or brackets) -> canonical text."""
    if not text:
        return None
    return _normalise_address(text)


@functools.lru_cache(maxsize=8192)
def _normalise_address(text: str) -> str | None:
    # Pure and keyed by the text: the same callers/gateways repeat in every record.
    text = text.strip()
    if _DOTTED_QUAD.fullmatch(text):   # already canonical IPv4 (the usual case): no ipaddress parse
        return text
    candidates = [text]
    if text.startswith("[") and "]" in text:
        candidates.append(text[1:text.index("]")])
    elif text.count(":") == 1:
        candidates.append(text.split(":", 1)[0])       # IPv4 with :port
    for candidate in candidates:
        try:
            address = ipaddress.ip_address(candidate)
        except ValueError:
            continue
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return str(address)
    return None


def normalise_conf_id(text: str) -> str:
    """h323-conf-id: 4 hex words; one case and single spaces so every leg gives the same key."""
    return " ".join(text.split()).upper()


def _ipv4(raw: bytes) -> str | None:
    return str(ipaddress.IPv4Address(raw)) if len(raw) == 4 else None


def _ipv6(raw: bytes) -> str | None:
    return normalise_address(str(ipaddress.IPv6Address(raw))) if len(raw) == 16 else None


def caller_address(pkt: Packet, nas: NasInfo, source_ip: str) -> str | None:
    source = nas.caller_address_source
    if source == "packet-source":
        return normalise_address(source_ip)
    if source == "h323-remote-address":
        return normalise_address(cisco_vsa(pkt, REMOTE_ADDRESS, "h323-remote-address"))
    if source == "framed-ip-address":
        return next(filter(None, map(_ipv4, raw_values(pkt, FRAMED_IP_ADDRESS))), None)
    if source == "nas-ip-address":
        found = next(filter(None, map(_ipv4, raw_values(pkt, NAS_IP_ADDRESS))), None)
        return found or next(filter(None, map(_ipv6, raw_values(pkt, NAS_IPV6_ADDRESS))), None)
    return None


def call_id(pkt: Packet, pairs: dict[str, str] | None = None) -> str | None:
    """The call id, control characters escaped (the same for the Access-Request and accounting)."""
    return escape_identifier(_call_id(pkt, pairs))[0]


def _call_id(pkt: Packet, pairs: dict[str, str] | None = None) -> str | None:
    pairs = cisco_avpairs(pkt) if pairs is None else pairs
    conf = cisco_vsa(pkt, CONF_ID, "h323-conf-id")
    if conf:
        return normalise_conf_id(conf)
    sip_call_id = pairs.get("call-id") or cisco_vsa(pkt, CISCO_CALL_ID, "call-id")
    if sip_call_id:
        return sip_call_id
    incoming = cisco_vsa(pkt, INCOMING_CONF_ID, "h323-incoming-conf-id") or pairs.get("h323-incoming-conf-id")
    if incoming:
        return normalise_conf_id(incoming)
    return first_text(pkt, ACCT_SESSION_ID)


def protocol(pkt: Packet, nas: NasInfo, pairs: dict[str, str]) -> str | None:
    if nas.dialect in SIP_DIALECTS:
        return "sip"
    proto = (cisco_vsa(pkt, SESSION_PROTOCOL, "session-protocol") or pairs.get("session-protocol") or "").lower()
    if proto.startswith("sip"):
        return "sip"
    if proto.startswith("h323") or proto == "cisco":
        return "h323"
    return None


def signalling_port(pkt: Packet, nas: NasInfo) -> int | None:
    if nas.dialect == "kamailio":
        port = first_int(pkt, KAMAILIO_SIP_SOURCE_PORT)
        return port if port and 0 < port < 65536 else None
    return None


# --- credentials ----------------------------------------------------------------------------

def parse_sterman_attributes(values: list[bytes]) -> dict[str, str]:
    """draft-sterman Digest-Attributes (207): each value holds <type><len><text> sub-attributes."""
    fields: dict[str, str] = {}
    for value in values:
        loc = 0
        while loc + 2 <= len(value):
            sub_type, length = value[loc], value[loc + 1]
            if length < 2 or loc + length > len(value):
                raise MalformedRequest("malformed", "Digest-Attributes sub-attribute length")
            name = _STERMAN_SUB.get(sub_type)
            if name:
                fields.setdefault(name, _text(value[loc + 2: loc + length]))
            loc += length
        if loc != len(value):
            raise MalformedRequest("malformed", "Digest-Attributes trailing octets")
    return fields


def _digest(response: str, fields: dict[str, str], user_name: str | None) -> DigestCredentials:
    missing = [f for f in ("realm", "nonce", "method", "uri") if not fields.get(f)]
    if missing:
        raise MalformedRequest("malformed", "Digest without " + ", ".join(missing))
    return DigestCredentials(
        response=response.lower(),
        username=fields.get("username") or user_name or "",
        realm=fields["realm"], nonce=fields["nonce"], method=fields["method"], uri=fields["uri"],
        algorithm=fields.get("algorithm") or "MD5", qop=fields.get("qop") or None,
        cnonce=fields.get("cnonce") or None, nonce_count=fields.get("nonce_count") or None,
        body_digest=fields.get("body_digest") or None,
    )


def credentials(pkt: Packet, nas: NasInfo, user_name: str | None) -> Credentials | None:
    """PAP (User-Password), CHAP (CHAP-Password) or SIP Digest, whichever the request carries."""
    passwords = raw_values(pkt, USER_PASSWORD)
    if passwords:
        try:
            return PapCredentials(reveal_password(passwords[0], pkt.secret, pkt.authenticator))
        except PacketError as exc:
            raise MalformedRequest("malformed", f"User-Password: {exc}") from None
    chap = raw_values(pkt, CHAP_PASSWORD)
    if chap:
        if len(chap[0]) != 17:
            raise MalformedRequest("malformed", "CHAP-Password is not 17 octets")
        challenge = raw_values(pkt, CHAP_CHALLENGE)
        return ChapCredentials(chap[0][:1], chap[0][1:], challenge[0] if challenge else pkt.authenticator)
    response = first_text(pkt, DIGEST_RESPONSE_STERMAN)
    if response and raw_values(pkt, DIGEST_ATTRIBUTES_STERMAN):
        return _digest(response, parse_sterman_attributes(raw_values(pkt, DIGEST_ATTRIBUTES_STERMAN)), user_name)
    if nas.dialect not in SIP_DIALECTS:
        response = first_text(pkt, DIGEST_RESPONSE_RFC5090)
        if response:
            fields = {name: first_text(pkt, number) for number, name in _RFC5090.items()}
            return _digest(response, {k: v for k, v in fields.items() if v}, user_name)
    return None


# --- facts ----------------------------------------------------------------------------------

def auth_facts(pkt: Packet, nas: NasInfo, source_ip: str) -> AuthFacts:
    """An Access-Request -> AuthFacts. Raises MalformedRequest for undecodable credentials."""
    pairs = cisco_avpairs(pkt)
    user_name = first_text(pkt, USER_NAME)
    return AuthFacts(
        nas_id=nas.id,
        caller_address=caller_address(pkt, nas, source_ip),
        user_name=user_name,
        credentials=credentials(pkt, nas, user_name),
        calling_number=normalise_number(first_text(pkt, CALLING_STATION_ID)),
        called_number=normalise_number(first_text(pkt, CALLED_STATION_ID)),
        call_id=call_id(pkt, pairs),
        protocol=protocol(pkt, nas, pairs),
        port=signalling_port(pkt, nas),
    )


def _leg(origin: str | None) -> str:
    # Cisco: the "answer" leg is the call coming in from the originator; "originate" goes out
    # to the terminator. GnuGK's "proxy" and unknown values count as the originator leg.
    return "term" if origin and origin.strip().lower() == "originate" else "orig"


def event_time(pkt: Packet, received_at: dt.datetime, warnings: list[str] | None = None) -> dt.datetime:
    """Event-Timestamp (integer, or Kamailio's float string), else receive time - Acct-Delay-Time."""
    for raw in _raw(pkt, EVENT_TIMESTAMP):
        value = parse_epoch(_UINT32.unpack(raw)[0]) if len(raw) == 4 else parse_epoch(raw)
        if value is not None:
            return value
        if warnings is not None:
            warnings.append("unreadable Event-Timestamp")
    delay = first_int(pkt, ACCT_DELAY_TIME) or 0
    return received_at - dt.timedelta(seconds=delay)


_keys = OrderedDict.keys   # the packet's attribute keys without pyrad's name-translating __contains__
_DISCONNECT_CAUSE, _REMOTE_ADDRESS, _CALL_ORIGIN = (CISCO, DISCONNECT_CAUSE), (CISCO, REMOTE_ADDRESS), (CISCO, CALL_ORIGIN)
_SETUP_TIME, _CONNECT_TIME, _DISCONNECT_TIME = (CISCO, SETUP_TIME), (CISCO, CONNECT_TIME), (CISCO, DISCONNECT_TIME)


def _switch_time(pkt: Packet, has, key: tuple[int, int], name: str, warnings: list[str] | None) -> dt.datetime | None:
    return parse_switch_time(cisco_vsa(pkt, key[1], name), warnings) if key in has else None


def acct_facts(pkt: Packet, nas: NasInfo, source_ip: str, received_at: dt.datetime,
               warnings: list[str] | None = None) -> AcctFacts:
    """An Accounting-Request -> AcctFacts. Raises MalformedRequest for what we cannot record."""
    status_code = first_int(pkt, ACCT_STATUS_TYPE)
    if status_code is None:
        raise MalformedRequest("missing_status_type", "no Acct-Status-Type")
    status = ACCT_STATUS.get(status_code)
    if status is None:
        raise MalformedRequest("unsupported_status_type", f"Acct-Status-Type {status_code}")
    session_id = first_text(pkt, ACCT_SESSION_ID)
    if session_id is None and status not in ("on", "off"):
        raise MalformedRequest("missing_session_id", f"{status} without Acct-Session-Id")
    # control characters (NUL: PostgreSQL cannot store it) escaped as \xNN and flagged, never dropped
    session_id, escaped = escape_identifier(session_id)
    pairs = cisco_avpairs(pkt)
    raw_call_id = _call_id(pkt, pairs)
    the_call_id, call_escaped = escape_identifier(raw_call_id)
    # Most of the optional attributes are absent from a given record (a Start has no disconnect
    # time, cause or session time): test presence in the packet's keys before calling a reader.
    has = _keys(pkt)
    user_name = first_text(pkt, USER_NAME) if USER_NAME in has else None
    cause = cisco_vsa(pkt, DISCONNECT_CAUSE, "h323-disconnect-cause") if _DISCONNECT_CAUSE in has else None
    remote = (normalise_address(cisco_vsa(pkt, REMOTE_ADDRESS, "h323-remote-address"))
              if _REMOTE_ADDRESS in has else None)
    # the usual Cisco set-up identifies the caller by h323-remote-address: read it once
    caller = remote if nas.caller_address_source == "h323-remote-address" else caller_address(pkt, nas, source_ip)
    return AcctFacts(
        nas_id=nas.id,
        status=status,
        acct_session_id=session_id,
        leg_key=f"{nas.id}:{session_id or ''}",
        call_id=the_call_id,
        leg=_leg(cisco_vsa(pkt, CALL_ORIGIN, "h323-call-origin")) if _CALL_ORIGIN in has else "orig",
        caller_address=caller,
        remote_address=remote,
        user_name=user_name,
        calling_number=normalise_number(first_text(pkt, CALLING_STATION_ID)) if CALLING_STATION_ID in has else None,
        called_number=normalise_number(first_text(pkt, CALLED_STATION_ID)) if CALLED_STATION_ID in has else None,
        protocol=protocol(pkt, nas, pairs),
        port=signalling_port(pkt, nas),
        setup_time=_switch_time(pkt, has, _SETUP_TIME, "h323-setup-time", warnings),
        connect_time=_switch_time(pkt, has, _CONNECT_TIME, "h323-connect-time", warnings),
        disconnect_time=_switch_time(pkt, has, _DISCONNECT_TIME, "h323-disconnect-time", warnings),
        event_time=event_time(pkt, received_at, warnings),
        session_time=first_int(pkt, ACCT_SESSION_TIME) if ACCT_SESSION_TIME in has else None,
        disconnect_cause=cause.upper() if cause else None,
        terminate_cause=first_int(pkt, ACCT_TERMINATE_CAUSE) if ACCT_TERMINATE_CAUSE in has else None,
        flags=(IDENTIFIER_ESCAPED,) if escaped or call_escaped else (),
    )
