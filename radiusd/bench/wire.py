"""RADIUS wire format for the load generator: attribute blocks and whole request packets.

The block of attributes common to every request of a kind is encoded once with pyrad (from a
small built-in dictionary); per-account blocks are encoded once and cached; per-request values
(called number, call id, session id, times) are a few bytes concatenated. Then the header,
Request Authenticator, PAP password and Message-Authenticator are computed per send.
"""
from __future__ import annotations

import hashlib
import hmac
import io
import ipaddress
import random
import struct
import time
import zlib

ACCESS_REQUEST, ACCESS_ACCEPT, ACCESS_REJECT = 1, 2, 3
ACCOUNTING_REQUEST, ACCOUNTING_RESPONSE = 4, 5

CISCO = 9
MA_ZERO = b"\x50\x12" + bytes(16)

# Only what the generator sends; enough for pyrad to encode the common block and for tests
# to decode what the generator puts on the wire.
DICTIONARY = """
ATTRIBUTE User-Name 1 string
ATTRIBUTE User-Password 2 string
ATTRIBUTE NAS-IP-Address 4 ipaddr
ATTRIBUTE NAS-Port 5 integer
ATTRIBUTE Service-Type 6 integer
ATTRIBUTE Called-Station-Id 30 string
ATTRIBUTE Calling-Station-Id 31 string
ATTRIBUTE NAS-Identifier 32 string
ATTRIBUTE Acct-Status-Type 40 integer
ATTRIBUTE Acct-Delay-Time 41 integer
ATTRIBUTE Acct-Session-Id 44 string
ATTRIBUTE Acct-Session-Time 46 integer
ATTRIBUTE Acct-Terminate-Cause 49 integer
ATTRIBUTE Event-Timestamp 55 integer
ATTRIBUTE NAS-Port-Type 61 integer
ATTRIBUTE Message-Authenticator 80 octets
ATTRIBUTE NAS-IPv6-Address 95 ipv6addr
VENDOR Cisco 9
BEGIN-VENDOR Cisco
ATTRIBUTE Cisco-AVPair 1 string
ATTRIBUTE h323-remote-address 23 string
ATTRIBUTE h323-conf-id 24 string
ATTRIBUTE h323-setup-time 25 string
ATTRIBUTE h323-call-origin 26 string
ATTRIBUTE h323-call-type 27 string
ATTRIBUTE h323-connect-time 28 string
ATTRIBUTE h323-disconnect-time 29 string
ATTRIBUTE h323-disconnect-cause 30 string
END-VENDOR Cisco
"""


def dictionary():
    from pyrad.dictionary import Dictionary

    return Dictionary(io.StringIO(DICTIONARY))


def attr(code: int, value: bytes) -> bytes:
    if len(value) > 253:
        raise ValueError(f"attribute {code}: value longer than 253 bytes")
    return bytes((code, len(value) + 2)) + value


def cisco(code: int, name: str, value: str) -> bytes:
    """A Cisco VSA in the `name=value` form Cisco gateways send."""
    data = f"{name}={value}".encode()
    if len(data) > 247:
        raise ValueError(f"{name}: value longer than 247 bytes")
    return bytes((26, len(data) + 8)) + b"\x00\x00\x00\x09" + bytes((code, len(data) + 2)) + data


def integer(code: int, value: int) -> bytes:
    return b"%c\x06" % code + struct.pack("!I", value)


def pap_encrypt(password: bytes, secret: bytes, authenticator: bytes) -> bytes:
    """RFC 2865 §5.2 User-Password hiding."""
    if len(password) > 128:
        raise ValueError("password longer than 128 bytes")
    padded = password + bytes(-len(password) % 16 or (16 if not password else 0))
    out = bytearray()
    last = authenticator
    for i in range(0, len(padded), 16):
        key = hashlib.md5(secret + last).digest()
        block = (int.from_bytes(padded[i:i + 16], "big") ^ int.from_bytes(key, "big")).to_bytes(16, "big")
        out += block
        last = block
    return bytes(out)


def cisco_time(epoch: float) -> str:
    """h323-*-time in the Cisco NTP form: `14:30:25.429 UTC Wed Jan 23 2002`."""
    t = time.gmtime(epoch)
    ms = int((epoch % 1) * 1000)
    return time.strftime("%H:%M:%S", t) + f".{ms:03d} UTC " + time.strftime("%a %b %d %Y", t)


class LoadAccount:
    """One account of the generated population, as a switch would present it."""

    __slots__ = ("kind", "ident", "password", "called", "calling", "network", "_blocks")

    def __init__(self, kind: str, ident: str, password: str = "", called: str = "44", calling: str = ""):
        if kind not in ("ip", "login"):
            raise ValueError(f"kind: {kind!r} is not ip or login")
        if not ident:
            raise ValueError("id: empty")
        if not called or not all(c.isdigit() or c in "#*+" for c in called):
            raise ValueError(f"called: {called!r} is not a number prefix")
        self.kind = kind
        self.ident = ident
        self.password = password
        self.called = called
        self.calling = calling or "1555" + str(zlib.crc32(ident.encode()) % 10**7).zfill(7)
        self.network = None
        if kind == "ip":
            try:
                self.network = ipaddress.ip_network(ident, strict=False)
            except ValueError:
                raise ValueError(f"id: {ident!r} is not an IP address or CIDR") from None
        self._blocks = None

    def caller_address(self, seq: int) -> str:
        """An address inside the account's network, different per request where the network allows."""
        net = self.network
        if net.num_addresses <= 2:
            return str(net.network_address)
        # skip network and broadcast addresses of small IPv4 subnets
        usable = min(net.num_addresses - 2, 1 << 16)
        return str(net.network_address + 1 + seq % usable)

    def user_name(self, seq: int) -> str:
        return self.ident if self.kind == "login" else self.caller_address(seq)


class PacketFactory:
    """Builds the requests of one benchmark run; `secret` is bytes and never printed."""

    def __init__(self, secret: bytes, nas_address: str = "127.0.0.1", nas_identifier: str = "radiusd-bench"):
        from pyrad.packet import Packet

        self.secret = secret
        self._rand = random.Random()
        self._time_cache = (0, "")
        d = dictionary()
        nas_ip = ipaddress.ip_address(nas_address)
        nas_attr = "NAS-IP-Address" if nas_ip.version == 4 else "NAS-IPv6-Address"

        def block(**attrs) -> bytes:
            p = Packet(dict=d, secret=secret)
            for key, value in attrs.items():
                p.AddAttribute(key.replace("_", "-"), value)
            return p._PktEncodeAttributes()

        common = {nas_attr: str(nas_ip), "NAS-Identifier": nas_identifier, "NAS-Port-Type": 5}
        self.auth_common = block(**common, **{"Service-Type": 1, "h323-call-type": "h323-call-type=VoIP"})
        self.acct_common = {
            (status, origin): block(**common, **{
                "Acct-Status-Type": status,
                "Acct-Delay-Time": 0,
                "h323-call-type": "h323-call-type=VoIP",
                "h323-call-origin": f"h323-call-origin={origin}",
            })
            for status in (1, 2) for origin in ("answer", "originate")
        }
        self.stop_extra = integer(49, 1) + cisco(30, "h323-disconnect-cause", "10")

    def _account_block(self, acc: LoadAccount) -> bytes:
        if acc._blocks is None:
            acc._blocks = attr(31, acc.calling.encode())
            if acc.kind == "login":
                acc._blocks += attr(1, acc.ident.encode())
        return acc._blocks

    def _now_text(self, epoch: float) -> str:
        sec = int(epoch)
        if self._time_cache[0] != sec:
            self._time_cache = (sec, cisco_time(sec))
        return self._time_cache[1]

    @staticmethod
    def called_number(acc: LoadAccount, seq: int) -> str:
        digits = 12 - len(acc.called)
        return acc.called + str(seq % 10 ** max(digits, 4)).zfill(max(digits, 4))

    @staticmethod
    def conf_id(run_tag: int, seq: int) -> str:
        # four 8-hex-digit words like a Cisco gateway's; unique per run and call
        return f"{run_tag & 0xFFFFFFFF:08X} {(seq >> 32) & 0xFFFFFFFF:08X} {seq & 0xFFFFFFFF:08X} 0000B3C4"

    def access_request(self, ident: int, acc: LoadAccount, seq: int, conf_id: str) -> tuple[bytes, bytes]:
        """(packet, request authenticator). Message-Authenticator first, as BlastRADIUS advice says."""
        authenticator = self._rand.randbytes(16)
        attrs = self.auth_common + self._account_block(acc) + attr(30, self.called_number(acc, seq).encode())
        attrs += cisco(24, "h323-conf-id", conf_id)
        if acc.kind == "ip":
            address = acc.caller_address(seq)
            attrs += attr(1, address.encode()) + cisco(23, "h323-remote-address", address)
        if acc.password:
            attrs += attr(2, pap_encrypt(acc.password.encode(), self.secret, authenticator))
        header = struct.pack("!BBH", ACCESS_REQUEST, ident, 38 + len(attrs)) + authenticator
        mac = hmac.new(self.secret, header + MA_ZERO + attrs, "md5").digest()
        return header + b"\x50\x12" + mac + attrs, authenticator

    def accounting_request(self, ident: int, acc: LoadAccount, seq: int, conf_id: str, session_id: str,
                           status: int, origin: str, session_time: int, now: float) -> tuple[bytes, bytes]:
        """(packet, request authenticator) of an Accounting Start (1) or Stop (2)."""
        attrs = self.acct_common[(status, origin)] + self._account_block(acc)
        if acc.kind == "ip":
            address = acc.caller_address(seq)
            attrs += attr(1, address.encode()) + cisco(23, "h323-remote-address", address)
        attrs += attr(30, self.called_number(acc, seq).encode()) + attr(44, session_id.encode())
        attrs += cisco(24, "h323-conf-id", conf_id) + integer(55, int(now))
        setup = self._now_text(now - session_time) if status == 2 else self._now_text(now)
        attrs += cisco(25, "h323-setup-time", setup) + cisco(28, "h323-connect-time", setup)
        if status == 2:
            attrs += integer(46, session_time) + self.stop_extra
            attrs += cisco(29, "h323-disconnect-time", self._now_text(now))
        head = struct.pack("!BBH", ACCOUNTING_REQUEST, ident, 20 + len(attrs))
        authenticator = hashlib.md5(head + bytes(16) + attrs + self.secret).digest()
        return head + authenticator + attrs, authenticator


def reply_is_genuine(reply: bytes, request_authenticator: bytes, secret: bytes) -> bool:
    """RFC 2865 §3 Response Authenticator check."""
    length = int.from_bytes(reply[2:4], "big")
    if length < 20 or length > len(reply):
        return False
    digest = hashlib.md5(reply[:4] + request_authenticator + reply[20:length] + secret).digest()
    return hmac.compare_digest(digest, reply[4:20])
