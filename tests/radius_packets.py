"""Helpers for the RADIUS edge tests: build packets with pyrad as a switch would send them."""
from __future__ import annotations

from pyrad.packet import AccessRequest, AccountingRequest, AcctPacket, AuthPacket

from radiusd.config import PROJECT_ROOT
from radiusd.core.snapshot import NasInfo
from radiusd.radius.codec import load_dictionary

DICTIONARY = load_dictionary(str(PROJECT_ROOT / "dictionaries"))
SECRET = b"testing123"


def nas(dialect="cisco", source="h323-remote-address", id=1, **kw) -> NasInfo:
    return NasInfo(id=id, name=f"nas{id}", address="127.0.0.1/32", secret=SECRET, dialect=dialect,
                   caller_address_source=source, **kw)


def _fill(pkt, attrs, raw):
    for name, value in attrs:
        pkt.AddAttribute(name, value)
    for code, values in (raw or {}).items():
        pkt[code] = list(values)
    return pkt


def auth_request(attrs=(), raw=None, password=None, ma=True, secret=SECRET, id=7) -> tuple[bytes, AuthPacket]:
    """(wire bytes, the request as the server decodes them)."""
    pkt = AuthPacket(code=AccessRequest, id=id, secret=secret, dict=DICTIONARY)
    pkt.authenticator = pkt.CreateAuthenticator()
    if password is not None:
        pkt.AddAttribute("User-Password", pkt.PwCrypt(password))
    _fill(pkt, attrs, raw)
    if ma:
        pkt.add_message_authenticator()
    data = pkt.RequestPacket()
    return data, AuthPacket(packet=data, dict=DICTIONARY, secret=SECRET)


def acct_request(attrs=(), raw=None, secret=SECRET, id=9) -> tuple[bytes, AcctPacket]:
    pkt = AcctPacket(code=AccountingRequest, id=id, secret=secret, dict=DICTIONARY)
    _fill(pkt, attrs, raw)
    data = pkt.RequestPacket()
    return data, AcctPacket(packet=data, dict=DICTIONARY, secret=SECRET)
