"""RADIUS on the wire (RFC 2865, 2866, 2869, 5997), for the server and `radiusd bench` alike.

Everything that turns bytes into a packet or a packet into bytes lives here: the dictionary,
decoding (a fast path filling pyrad's packet), the 4,096-octet limit, attribute and Cisco VSA
encoding, User-Password hiding, Request/Response Authenticators and Message-Authenticator,
computed and checked on the raw bytes. No sockets, no clock: bytes in, bytes or packets out.

pyrad (pinned in pyproject.toml to the versions tested) provides the packet classes and their
dictionary-aware attribute access, PAP/CHAP decryption and the TLV decoder; the fast decode
writes pyrad's packet fields (code, id, authenticator, raw_packet, message_authenticator and the
attribute lists keyed by number) directly.
"""
from __future__ import annotations

import hashlib
import hmac
import struct
from collections import OrderedDict
from pathlib import Path

from pyrad.dictionary import Dictionary
from pyrad.packet import (
    AccessAccept, AccessReject, AccessRequest, AccountingRequest, AccountingResponse, AcctPacket,
    AuthPacket, Packet, PacketError, StatusServer,
)

from radiusd.config import PROJECT_ROOT

__all__ = [
    "AccessAccept", "AccessReject", "AccessRequest", "AccountingRequest", "AccountingResponse",
    "StatusServer", "PacketError", "MAX_PACKET", "load_dictionary", "decode", "encode_reply",
    "encode_request", "attribute", "integer", "cisco_vsa", "cisco_pair", "hide_password", "reveal_password",
    "message_authenticator_ok", "request_authenticator_ok", "response_authenticator_ok",
]

HEADER_LENGTH = 20
MAX_PACKET = 4096            # RFC 2865 §3: the largest packet; anything longer is malformed
MESSAGE_AUTHENTICATOR, PROXY_STATE, VENDOR_SPECIFIC = 80, 33, 26
CISCO = 9
DEFAULT_DICTIONARY_DIR = str(PROJECT_ROOT / "dictionaries")

_HEADER = struct.Struct("!BBH16s")
_SHORT_HEADER = struct.Struct("!BBH")
_VENDOR = struct.Struct("!L")
_ZERO16 = bytes(16)
_MA_ZERO = bytes((MESSAGE_AUTHENTICATOR, 18)) + _ZERO16
_CISCO_VENDOR = _VENDOR.pack(CISCO)
# Codes whose Request Authenticator is 16 zero octets in the Message-Authenticator HMAC
_ZERO_VECTOR_CODES = frozenset({4, 5, 40, 43})   # Accounting-Request/-Response, Disconnect-, CoA-Request


# --- the dictionary -------------------------------------------------------------------------

class DictionaryError(ValueError):
    """The dictionary files cannot be read; the message names the file."""


_DICTIONARIES: dict[str, Dictionary] = {}


def load_dictionary(directory: str = DEFAULT_DICTIONARY_DIR) -> Dictionary:
    """The dictionary in `directory` (its file `dictionary`), parsed once per process."""
    path = str(Path(directory) / "dictionary")
    if path not in _DICTIONARIES:
        try:
            _DICTIONARIES[path] = Dictionary(path)
        except Exception as exc:  # pyrad raises ParseError / OSError
            raise DictionaryError(f"dictionary {path}: {exc}") from None
    return _DICTIONARIES[path]


# --- decoding -------------------------------------------------------------------------------

_TLV_CODES: dict[int, frozenset] = {}


def _tlv_codes(dictionary) -> frozenset:
    """Attribute numbers ((vendor, number) for VSAs) the dictionary declares as TLV."""
    codes = _TLV_CODES.get(id(dictionary))
    if codes is None:
        found = set()
        for attr in dictionary.attributes.values():
            if attr.type == "tlv":
                found.add((dictionary.vendors.GetForward(attr.vendor), attr.code) if attr.vendor else attr.code)
        codes = _TLV_CODES[id(dictionary)] = frozenset(found)
    return codes


class _FastDecode:
    """pyrad's DecodePacket, same result (attributes kept raw, by number or (vendor, number), in
    order of first appearance; same errors) at a fraction of the cost: pyrad goes through its
    name-translating __contains__/__setitem__ for every attribute. A dictionary with TLV
    attributes takes pyrad's own path."""

    def DecodePacket(self, packet: bytes) -> None:  # noqa: N802 (pyrad API)
        if getattr(self, "dict", None) is None or _tlv_codes(self.dict):
            return super().DecodePacket(packet)
        try:
            (self.code, self.id, length, self.authenticator) = _HEADER.unpack_from(packet, 0)
        except struct.error:
            raise PacketError("Packet header is corrupt") from None
        if length < 20 or len(packet) < length:
            raise PacketError("Packet has invalid length")
        if length > 8192:
            raise PacketError("Packet length is too long (%d)" % length)
        packet = packet[:length]
        self.raw_packet = packet
        self.clear()
        attributes: dict = {}
        loc = 20
        while loc < length:
            if loc + 2 > length:
                raise PacketError("Attribute header is corrupt")
            key, attrlen = packet[loc], packet[loc + 1]
            if attrlen < 2:
                raise PacketError("Attribute length is too small (%d)" % attrlen)
            value = packet[loc + 2:loc + attrlen]
            loc += attrlen
            if key == VENDOR_SPECIFIC:
                for sub_key, sub_value in _vendor_attributes(value):
                    attributes.setdefault(sub_key, []).append(sub_value)
                continue
            if key == MESSAGE_AUTHENTICATOR:
                self.message_authenticator = True
            attributes.setdefault(key, []).append(value)
        for key, values in attributes.items():
            OrderedDict.__setitem__(self, key, values)


def _vendor_attributes(data: bytes) -> list:
    """A Vendor-Specific attribute -> [((vendor, type), value)], or [(26, data)] if it is not in
    the RFC 2865 recommended form (as pyrad keeps it)."""
    if len(data) < 6:
        return [(VENDOR_SPECIFIC, data)]
    vendor = _VENDOR.unpack_from(data, 0)[0]
    found = []
    loc, end = 4, len(data)
    while loc < end:
        if end - loc < 2:
            return [(VENDOR_SPECIFIC, data)]
        atype, length = data[loc], data[loc + 1]
        if length < 2 or loc + length > end:
            return [(VENDOR_SPECIFIC, data)]
        found.append(((vendor, atype), data[loc + 2:loc + length]))
        loc += length
    return found


class FastAuthPacket(_FastDecode, AuthPacket):
    """An AuthPacket decoded by `_FastDecode`; everything else is pyrad's."""


class FastAcctPacket(_FastDecode, AcctPacket):
    """An AcctPacket decoded by `_FastDecode`; everything else is pyrad's."""


# Attributes a request may carry at most once: RFC 2865 §5.44 (Access-Request "0-1"), RFC 2866
# §5.13 (Accounting-Request "0-1" and "1"), RFC 2869 §5.19 (Event-Timestamp, Message-Authenticator),
# RFC 3162 (NAS-IPv6-Address). Attributes a request must not carry at all ("0") are tolerated.
# As bit masks over the attribute number: checked for every attribute of every request.
def _mask(numbers) -> int:
    return sum(1 << n for n in set(numbers))


_AT_MOST_ONCE = {
    False: _mask([1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 19, 24, 30, 31, 32, 34, 35, 36, 60, 61, 62, 63, 80, 95]),
    True: _mask([1, 4, 5, 6, 7, 8, 9, 12, 19, 20, 23, 24, 27, 28, 29, 30, 31, 32, 34, 35, 36, 37, 39,
                 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 55, 61, 62, 63, 80, 95]),
}
_BOTH_PASSWORDS = _mask([2, 3])   # User-Password, CHAP-Password


def _malformed(data: bytes, accounting: bool) -> str | None:
    """What makes a received request malformed beyond what decoding itself rejects (RFC 2865
    §3: at most 4,096 octets; no attribute running past the end of the packet; §5.44 counts;
    never both User-Password and CHAP-Password), or None."""
    size = len(data)
    if size > MAX_PACKET:
        return f"{size} octets, longer than the RADIUS limit of {MAX_PACKET}"
    end = data[2] << 8 | data[3]
    if end < HEADER_LENGTH or end > size:
        return None   # the decoder names this one
    once = _AT_MOST_ONCE[accounting]
    seen = 0
    loc = HEADER_LENGTH
    while loc + 2 <= end:
        key, length = data[loc], data[loc + 1]
        if length < 2:
            return None   # the decoder names this one
        if loc + length > end:
            return f"attribute {key} runs past the end of the packet ({loc + length} > {end} octets)"
        bit = 1 << key
        if once & bit:
            if seen & bit:
                return f"attribute {key} appears more than once (RFC 2865 §5.44 allows at most one)"
            seen |= bit
        loc += length
    if seen & _BOTH_PASSWORDS == _BOTH_PASSWORDS:
        return "both User-Password and CHAP-Password"
    return None


def decode(data: bytes, dictionary: Dictionary, secret: bytes, accounting: bool) -> Packet:
    """A received request -> pyrad packet (an AcctPacket on the accounting port, so replies and
    Status-Server answers take the accounting form). Raises PacketError (or ValueError and
    friends from pyrad) for what cannot be decoded or breaks the rules in `_malformed`."""
    problem = _malformed(data, accounting)
    if problem:
        raise PacketError(problem)
    # The fields pyrad's Packet.__init__ sets, without its keyword-argument walk and CreateID()
    # (≈ 2 µs a packet); the same packet as FastAuthPacket(packet=data, ...) (a test compares).
    pkt = _new(FastAcctPacket if accounting else FastAuthPacket)
    OrderedDict.__init__(pkt)
    pkt.secret = secret
    pkt.dict = dictionary
    pkt.request_authenticator = pkt._request_code = pkt.message_authenticator = None
    pkt.raw_packet = data
    if not accounting:
        pkt.auth_type = "pap"
    pkt.DecodePacket(data)
    return pkt


_new = OrderedDict.__new__


# --- authenticators -------------------------------------------------------------------------

_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))
_HMAC_KEYS: dict[bytes, tuple] = {}   # secret -> (inner, outer) MD5 states after its padded key block


def hmac_md5(key: bytes, data: bytes) -> bytes:
    """HMAC-MD5 (RFC 2104), the same digest as hmac.new(key, data, hashlib.md5).digest(), with
    the key's inner and outer MD5 states computed once per secret and copied per call: setting
    up OpenSSL 3's HMAC costs ~4 µs a call, this ~1.5 µs (two per Access-Request)."""
    states = _HMAC_KEYS.get(key) if type(key) is bytes else None
    if states is None:
        key = bytes(key)
        block = (hashlib.md5(key).digest() if len(key) > 64 else key).ljust(64, b"\0")
        states = (hashlib.md5(block.translate(_IPAD)), hashlib.md5(block.translate(_OPAD)))
        if len(_HMAC_KEYS) >= 4096:   # bounded: secrets change rarely, a flood of new ones is odd
            _HMAC_KEYS.clear()
        _HMAC_KEYS[key] = states
    inner = states[0].copy()
    inner.update(data)
    outer = states[1].copy()
    outer.update(inner.digest())
    return outer.digest()


def message_authenticator_ok(pkt: Packet, secret: bytes) -> bool:
    """RFC 2869 5.14 check of a received request from its raw bytes: HMAC-MD5 over the packet
    with the (first) Message-Authenticator zeroed, and for Accounting-Request the Request
    Authenticator too. Same answer as pyrad's verify_message_authenticator, which re-walks the
    attributes with struct.unpack; False when there is none or it is not 16 octets."""
    raw = pkt.raw_packet
    if not raw:
        return bool(pkt.message_authenticator) and pkt.verify_message_authenticator()
    loc, end = 20, len(raw)
    while loc + 2 <= end:
        kind, length = raw[loc], raw[loc + 1]
        if length < 2:
            break
        if kind == MESSAGE_AUTHENTICATOR:
            value = raw[loc + 2:loc + length]
            if len(value) != 16:
                return False
            data = raw[:loc + 2] + _ZERO16 + raw[loc + length:]
            if raw[0] in _ZERO_VECTOR_CODES:   # e.g. Accounting-Request: the vector is 16 zero octets
                data = data[:4] + _ZERO16 + data[20:]
            return hmac.compare_digest(value, hmac_md5(secret, data))
        loc += length
    return False


def request_authenticator_ok(raw: bytes, secret: bytes) -> bool:
    """RFC 2866 §3: an Accounting-Request's authenticator is MD5(header, 16 zero octets,
    attributes, secret) over the packet as long as its Length field says."""
    digest = hashlib.md5(raw[:4] + _ZERO16 + raw[20:] + secret).digest()
    return hmac.compare_digest(digest, raw[4:20])


def response_authenticator_ok(reply: bytes, request_authenticator: bytes, secret: bytes) -> bool:
    """RFC 2865 §3 Response Authenticator check of a reply to our request."""
    length = int.from_bytes(reply[2:4], "big")
    if length < 20 or length > len(reply):
        return False
    digest = hashlib.md5(reply[:4] + request_authenticator + reply[20:length] + secret).digest()
    return hmac.compare_digest(digest, reply[4:20])


def _pap_chain(data: bytes, secret: bytes, authenticator: bytes, hiding: bool) -> bytes:
    """RFC 2865 §5.2: each 16-octet block XOR MD5(secret + the previous hidden block), the
    first with the Request Authenticator. Whole blocks as integers (pyrad XORs octet by octet)."""
    out = bytearray()
    last = authenticator
    for i in range(0, len(data), 16):
        block = data[i:i + 16]
        key = hashlib.md5(secret + last).digest()
        mixed = (int.from_bytes(block, "big") ^ int.from_bytes(key, "big")).to_bytes(16, "big")
        out += mixed
        last = mixed if hiding else block
    return bytes(out)


def hide_password(password: bytes, secret: bytes, authenticator: bytes) -> bytes:
    """User-Password hiding, a client's side (the load generator)."""
    if len(password) > 128:
        raise ValueError("password longer than 128 bytes")
    padded = password + bytes(-len(password) % 16 or (16 if not password else 0))
    return _pap_chain(padded, secret, authenticator, hiding=True)


def reveal_password(hidden: bytes, secret: bytes, authenticator: bytes) -> str:
    """A received User-Password in clear text: the same text as pyrad's PwDecrypt (trailing NULs
    removed, undecodable UTF-8 ignored: a wrong secret gives a wrong password, not an error)."""
    if len(hidden) % 16:
        raise PacketError("Invalid length of encrypted password (%d)" % len(hidden))
    return _pap_chain(bytes(hidden), secret, authenticator, hiding=False).rstrip(b"\x00").decode("utf-8", "ignore")


# --- encoding -------------------------------------------------------------------------------

def attribute(number: int, value: bytes) -> bytes:
    if len(value) > 253:
        raise ValueError(f"Value of attribute {number} is too long ({len(value)} octets, at most 253 fit)")
    return bytes((number, len(value) + 2)) + value


def integer(number: int, value: int) -> bytes:
    return bytes((number, 6)) + value.to_bytes(4, "big")


def cisco_vsa(number: int, text: str) -> bytes:
    """A Cisco Vendor-Specific attribute holding one string sub-attribute."""
    value = text.encode()
    if len(value) > 247:
        raise ValueError(f"Value of Cisco attribute {number} is too long ({len(value)} octets, at most 247 fit)")
    return bytes((VENDOR_SPECIFIC, len(value) + 8)) + _CISCO_VENDOR + bytes((number, len(value) + 2)) + value


def cisco_pair(number: int, name: str, value) -> bytes:
    """A Cisco VSA in the `name=value` form Cisco IOS sends and expects."""
    return cisco_vsa(number, f"{name}={value}")


def _proxy_states(request: Packet) -> bytes:
    values = OrderedDict.get(request, PROXY_STATE)
    if not values or isinstance(values, dict):
        return b""
    return b"".join(attribute(PROXY_STATE, bytes(value)) for value in values)


def encode_reply(code: int, request: Packet, attributes: bytes, message_authenticator: bool = True) -> bytes:
    """Header + Response Authenticator + [Message-Authenticator first] + the request's
    Proxy-States (RFC 2865 §5.33: copied, in order) + attributes.

    Replies are encoded here directly: pyrad's CreateReply + AddAttribute + ReplyPacket cost about
    as much as the rest of the request together (a dictionary lookup per attribute and every
    attribute encoded twice). The bytes are the same as pyrad's (a test compares them)."""
    secret, request_authenticator = request.secret, request.authenticator
    body = _proxy_states(request) + attributes
    if message_authenticator:
        body = _MA_ZERO + body
    if 20 + len(body) > MAX_PACKET:
        raise ValueError(f"reply of {20 + len(body)} octets is longer than {MAX_PACKET}")
    header = _SHORT_HEADER.pack(code, request.id, 20 + len(body))
    if message_authenticator:
        # RFC 2869 5.14 / RFC 5997 3: replies use the Request Authenticator in the HMAC
        ma = hmac_md5(secret, header + request_authenticator + body)
        body = b"\x50\x12" + ma + body[18:]
    response = hashlib.md5(header + request_authenticator + body + secret).digest()
    return header + response + body


def encode_request(code: int, identifier: int, attributes: bytes, secret: bytes,
                   authenticator: bytes | None = None) -> tuple[bytes, bytes]:
    """(packet, Request Authenticator) of a request we send. An Accounting-Request gets the
    RFC 2866 authenticator; any other request the given random one and a Message-Authenticator
    as its first attribute (BlastRADIUS advice)."""
    if code == AccountingRequest:
        length = 20 + len(attributes)
        head = _SHORT_HEADER.pack(code, identifier, length)
        authenticator = hashlib.md5(head + _ZERO16 + attributes + secret).digest()
        packet = head + authenticator + attributes
    else:
        length = 38 + len(attributes)
        head = _SHORT_HEADER.pack(code, identifier, length) + authenticator
        mac = hmac_md5(secret, head + _MA_ZERO + attributes)
        packet = head + b"\x50\x12" + mac + attributes
    if length > MAX_PACKET:
        raise ValueError(f"request of {length} octets is longer than {MAX_PACKET}")
    return packet, authenticator
