"""Checking a login account's password against what the switch sent: PAP, CHAP or SIP Digest.

- PAP (RFC 2865 §5.2): the edge has already decrypted User-Password; compared in constant time.
- CHAP (RFC 1994 §4.1, RFC 2865 §5.3): response = MD5(CHAP ident + password + challenge).
- SIP Digest (RFC 2617 arithmetic; attributes from draft-sterman 206/207 or RFC 5090 103-122,
  both turned into one `DigestCredentials` by the edge).

An account without a stored password (None or '') never authenticates: a login account must have
one. Unknown Digest algorithms or qop values, and malformed CHAP fields, are a failed check, not
an error.
"""
from __future__ import annotations

import hashlib
import hmac

from radiusd.core.facts import ChapCredentials, Credentials, DigestCredentials, PapCredentials


def _md5_hex(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def expected_digest_response(credentials: DigestCredentials, password: str) -> str | None:
    """The RFC 2617 request-digest for these Digest parameters, or None when they are unusable."""
    algorithm = (credentials.algorithm or "MD5").strip().lower()
    c = credentials
    ha1 = _md5_hex(f"{c.username}:{c.realm}:{password}")
    if algorithm == "md5-sess":
        if not c.cnonce:
            return None
        ha1 = _md5_hex(f"{ha1}:{c.nonce}:{c.cnonce}")
    elif algorithm != "md5":
        return None
    qop = (c.qop or "").strip().lower()
    if qop == "auth-int":
        if not c.body_digest:
            return None
        ha2 = _md5_hex(f"{c.method}:{c.uri}:{c.body_digest.lower()}")
    elif qop in ("", "auth"):
        ha2 = _md5_hex(f"{c.method}:{c.uri}")
    else:
        return None
    if not qop:
        return _md5_hex(f"{ha1}:{c.nonce}:{ha2}")
    if not c.cnonce or not c.nonce_count:
        return None
    return _md5_hex(f"{ha1}:{c.nonce}:{c.nonce_count}:{c.cnonce}:{qop}:{ha2}")


def verify_password(credentials: Credentials | None, stored_password: str | None) -> bool:
    """True when the credentials prove knowledge of `stored_password`."""
    if credentials is None or not stored_password:
        return False
    if isinstance(credentials, PapCredentials):
        # RFC 2865 pads User-Password with NULs to 16 octets; tolerate an edge that left them.
        given = (credentials.password or "").rstrip("\x00")
        return hmac.compare_digest(given.encode("utf-8"), stored_password.encode("utf-8"))
    if isinstance(credentials, ChapCredentials):
        if len(credentials.chap_id) != 1 or len(credentials.response) != 16 or not credentials.challenge:
            return False
        expected = hashlib.md5(
            credentials.chap_id + stored_password.encode("utf-8") + credentials.challenge
        ).digest()
        return hmac.compare_digest(expected, credentials.response)
    if isinstance(credentials, DigestCredentials):
        expected = expected_digest_response(credentials, stored_password)
        if expected is None:
            return False
        given = (credentials.response or "").strip().lower()
        return hmac.compare_digest(expected.encode("ascii"), given.encode("ascii", "replace"))
    return False
