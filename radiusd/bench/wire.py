"""Requests for the load generator: attribute blocks and whole request packets.

The wire format is radiusd.radius.codec's (the server's own). The block of attributes common
to every request of a kind is encoded once; per-account blocks are encoded once and cached;
per-request values (called number, call id, session id, times) are a few bytes concatenated.
Then the header, Request Authenticator, PAP password and Message-Authenticator are computed per
send.
"""
from __future__ import annotations

import ipaddress
import random
import time
import zlib

from radiusd.radius.codec import (
    AccessAccept, AccessReject, AccessRequest, AccountingRequest, AccountingResponse, attribute, cisco_pair,
    encode_request, hide_password, integer,
)

ACCESS_REQUEST, ACCESS_ACCEPT, ACCESS_REJECT = AccessRequest, AccessAccept, AccessReject
ACCOUNTING_REQUEST, ACCOUNTING_RESPONSE = AccountingRequest, AccountingResponse

# attribute numbers the generator sends (dictionaries/dictionary.rfc2865, .rfc2866, .cisco)
USER_NAME, USER_PASSWORD, NAS_IP_ADDRESS, SERVICE_TYPE = 1, 2, 4, 6
CALLED_STATION_ID, CALLING_STATION_ID, NAS_IDENTIFIER = 30, 31, 32
ACCT_STATUS_TYPE, ACCT_DELAY_TIME, ACCT_SESSION_ID, ACCT_SESSION_TIME, ACCT_TERMINATE_CAUSE = 40, 41, 44, 46, 49
EVENT_TIMESTAMP, NAS_PORT_TYPE, NAS_IPV6_ADDRESS = 55, 61, 95
# Cisco VSAs
REMOTE_ADDRESS, CONF_ID, SETUP_TIME, CALL_ORIGIN, CALL_TYPE = 23, 24, 25, 26, 27
CONNECT_TIME, DISCONNECT_TIME, DISCONNECT_CAUSE = 28, 29, 30


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
        self.secret = secret
        self._rand = random.Random()
        self._time_cache = (0, "")
        nas_ip = ipaddress.ip_address(nas_address)
        common = (attribute(NAS_IP_ADDRESS if nas_ip.version == 4 else NAS_IPV6_ADDRESS, nas_ip.packed)
                  + attribute(NAS_IDENTIFIER, nas_identifier.encode()) + integer(NAS_PORT_TYPE, 5))
        voip = cisco_pair(CALL_TYPE, "h323-call-type", "VoIP")
        self.auth_common = common + integer(SERVICE_TYPE, 1) + voip
        self.acct_common = {
            (status, origin): common + integer(ACCT_STATUS_TYPE, status) + integer(ACCT_DELAY_TIME, 0)
            + voip + cisco_pair(CALL_ORIGIN, "h323-call-origin", origin)
            for status in (1, 2) for origin in ("answer", "originate")
        }
        self.stop_extra = integer(ACCT_TERMINATE_CAUSE, 1) + cisco_pair(DISCONNECT_CAUSE, "h323-disconnect-cause", "10")

    def _account_block(self, acc: LoadAccount) -> bytes:
        if acc._blocks is None:
            acc._blocks = attribute(CALLING_STATION_ID, acc.calling.encode())
            if acc.kind == "login":
                acc._blocks += attribute(USER_NAME, acc.ident.encode())
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

    def _caller(self, acc: LoadAccount, seq: int) -> bytes:
        address = acc.caller_address(seq)
        return attribute(USER_NAME, address.encode()) + cisco_pair(REMOTE_ADDRESS, "h323-remote-address", address)

    def access_request(self, ident: int, acc: LoadAccount, seq: int, conf_id: str) -> tuple[bytes, bytes]:
        """(packet, request authenticator). Message-Authenticator first, as BlastRADIUS advice says."""
        authenticator = self._rand.randbytes(16)
        attrs = (self.auth_common + self._account_block(acc)
                 + attribute(CALLED_STATION_ID, self.called_number(acc, seq).encode())
                 + cisco_pair(CONF_ID, "h323-conf-id", conf_id))
        if acc.kind == "ip":
            attrs += self._caller(acc, seq)
        if acc.password:
            attrs += attribute(USER_PASSWORD, hide_password(acc.password.encode(), self.secret, authenticator))
        return encode_request(ACCESS_REQUEST, ident, attrs, self.secret, authenticator)

    def accounting_request(self, ident: int, acc: LoadAccount, seq: int, conf_id: str, session_id: str,
                           status: int, origin: str, session_time: int, now: float) -> tuple[bytes, bytes]:
        """(packet, request authenticator) of an Accounting Start (1) or Stop (2)."""
        attrs = self.acct_common[(status, origin)] + self._account_block(acc)
        if acc.kind == "ip":
            attrs += self._caller(acc, seq)
        attrs += (attribute(CALLED_STATION_ID, self.called_number(acc, seq).encode())
                  + attribute(ACCT_SESSION_ID, session_id.encode())
                  + cisco_pair(CONF_ID, "h323-conf-id", conf_id) + integer(EVENT_TIMESTAMP, int(now)))
        setup = self._now_text(now - session_time) if status == 2 else self._now_text(now)
        attrs += cisco_pair(SETUP_TIME, "h323-setup-time", setup) + cisco_pair(CONNECT_TIME, "h323-connect-time", setup)
        if status == 2:
            attrs += integer(ACCT_SESSION_TIME, session_time) + self.stop_extra
            attrs += cisco_pair(DISCONNECT_TIME, "h323-disconnect-time", self._now_text(now))
        return encode_request(ACCOUNTING_REQUEST, ident, attrs, self.secret)
