"""Plain facts the RADIUS edge extracts from a packet, whatever the switch dialect.

Everything dialect-specific (Cisco `name=value`, time formats, Kamailio numbering, Digest
attribute layouts) is resolved at the edge; the core sees only these values.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PapCredentials:
    password: str


@dataclass(frozen=True, slots=True)
class ChapCredentials:
    chap_id: bytes        # 1 octet
    response: bytes       # 16 octets
    challenge: bytes      # CHAP-Challenge, else the Request Authenticator


@dataclass(frozen=True, slots=True)
class DigestCredentials:
    """SIP Digest (draft-sterman 206/207 or RFC 5090 103-122), RFC 2617 arithmetic."""
    response: str         # 32 hex digits from the client
    username: str
    realm: str
    nonce: str
    method: str
    uri: str
    algorithm: str = "MD5"
    qop: str | None = None
    cnonce: str | None = None
    nonce_count: str | None = None
    body_digest: str | None = None


Credentials = PapCredentials | ChapCredentials | DigestCredentials


@dataclass(frozen=True, slots=True)
class AuthFacts:
    """What an Access-Request says about a call."""
    nas_id: int
    caller_address: str | None     # the address the NAS's caller_address_source points to
    user_name: str | None = None
    credentials: Credentials | None = None
    calling_number: str | None = None   # ANI (Calling-Station-Id)
    called_number: str | None = None    # DNIS (Called-Station-Id), digits, tech prefix included
    call_id: str | None = None          # h323-conf-id / Cisco call-id / SIP Call-ID / Acct-Session-Id
    protocol: str | None = None         # sip | h323, when the request says
    port: int | None = None             # caller's signalling port, when the request says


@dataclass(frozen=True, slots=True)
class AcctFacts:
    """What an Accounting-Request says about one call leg."""
    nas_id: int
    status: str                          # start | interim | stop | failed | on | off
    acct_session_id: str | None
    leg_key: str                         # NAS + Acct-Session-Id [+ Acct-Unique-Session-Id]
    call_id: str | None = None
    leg: str = "orig"                    # orig (answer/incoming) | term (originate/outgoing)
    caller_address: str | None = None    # for identification of the originator account
    remote_address: str | None = None    # h323-remote-address: the peer of this leg
    user_name: str | None = None
    calling_number: str | None = None
    called_number: str | None = None
    protocol: str | None = None
    port: int | None = None
    setup_time: dt.datetime | None = None
    connect_time: dt.datetime | None = None
    disconnect_time: dt.datetime | None = None
    event_time: dt.datetime | None = None          # Event-Timestamp, else receive time - Acct-Delay-Time
    session_time: int | None = None                # Acct-Session-Time
    disconnect_cause: str | None = None            # Q.850 cause, hex as Cisco sends it
    terminate_cause: int | None = None             # Acct-Terminate-Cause
    flags: tuple[str, ...] = ()                    # anomalies found reading it (radiusd.core.sanity kinds)
