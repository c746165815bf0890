"""Password checks for login accounts: PAP, CHAP (RFC 1994) and SIP Digest (RFC 2617)."""
from __future__ import annotations

import hashlib

import pytest
from radius_packets import auth_request, nas

from radiusd.core.facts import ChapCredentials, DigestCredentials, PapCredentials
from radiusd.core.passwords import verify_password
from radiusd.radius.dialects import auth_facts


def md5hex(s: str) -> str:
    return hashlib.md5(s.encode()).hexdigest()


# --- PAP -------------------------------------------------------------------------------

def test_pap_right_and_wrong_password():
    assert verify_password(PapCredentials("s3cret"), "s3cret")
    assert not verify_password(PapCredentials("s3cret "), "s3cret")
    assert not verify_password(PapCredentials("S3CRET"), "s3cret")
    assert not verify_password(PapCredentials(""), "s3cret")


def test_pap_tolerates_rfc2865_nul_padding():
    assert verify_password(PapCredentials("s3cret\x00\x00\x00"), "s3cret")


def test_pap_non_ascii_password():
    assert verify_password(PapCredentials("pässwörd"), "pässwörd")
    assert not verify_password(PapCredentials("passwort"), "pässwörd")


@pytest.mark.parametrize("stored", [None, ""])
def test_account_without_password_never_authenticates(stored):
    assert not verify_password(PapCredentials(""), stored)
    assert not verify_password(PapCredentials("x"), stored)


def test_no_credentials_is_not_a_password():
    assert not verify_password(None, "s3cret")


# --- CHAP ------------------------------------------------------------------------------

def chap(password: str, chap_id=b"\x2a", challenge=bytes(range(16))) -> ChapCredentials:
    # RFC 1994 §4.1: Response = MD5(Identifier || secret || Challenge)
    response = hashlib.md5(chap_id + password.encode() + challenge).digest()
    return ChapCredentials(chap_id=chap_id, response=response, challenge=challenge)


def test_chap_right_password():
    assert verify_password(chap("s3cret"), "s3cret")


def test_chap_wrong_password():
    assert not verify_password(chap("guess"), "s3cret")


def test_chap_response_bound_to_identifier_and_challenge():
    good = chap("s3cret")
    assert not verify_password(ChapCredentials(b"\x2b", good.response, good.challenge), "s3cret")
    assert not verify_password(ChapCredentials(good.chap_id, good.response, b"\x00" * 16), "s3cret")


def test_chap_with_authenticator_as_challenge_of_other_length():
    creds = chap("s3cret", chap_id=b"\x01", challenge=b"0123456789abcdefXYZ")
    assert verify_password(creds, "s3cret")


@pytest.mark.parametrize("chap_id, response", [(b"", b"\x00" * 16), (b"\x01\x02", b"\x00" * 16),
                                               (b"\x01", b"\x00" * 15), (b"\x01", b"")])
def test_chap_malformed_fields_fail_cleanly(chap_id, response):
    assert not verify_password(ChapCredentials(chap_id, response, b"c" * 16), "s3cret")


# --- SIP Digest ------------------------------------------------------------------------

RFC2617 = dict(
    username="Mufasa", realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
    method="GET", uri="/dir/index.html", qop="auth", nonce_count="00000001", cnonce="0a4f113b",
)


def test_digest_rfc2617_section_3_5_vector():
    creds = DigestCredentials(response="6629fae49393a05397450978507c4ef1", **RFC2617)
    assert verify_password(creds, "Circle Of Life")
    assert not verify_password(creds, "Circle of Life")


def test_digest_response_hex_case_does_not_matter():
    creds = DigestCredentials(response="6629FAE49393A05397450978507C4EF1", **RFC2617)
    assert verify_password(creds, "Circle Of Life")


def test_digest_tampered_fields_fail():
    for field, value in [("uri", "/other"), ("method", "POST"), ("nonce_count", "00000002"),
                         ("cnonce", "ffffffff"), ("realm", "evil"), ("nonce", "00")]:
        params = dict(RFC2617, **{field: value})
        assert not verify_password(DigestCredentials(response="6629fae49393a05397450978507c4ef1", **params),
                                   "Circle Of Life"), field


def sip_params(**kw):
    base = dict(username="alice", realm="sip.example.net", nonce="4f6b1c2d", method="INVITE",
                uri="sip:4930123@sip.example.net")
    base.update(kw)
    return base


def test_digest_without_qop_rfc2069_form():
    p = sip_params()
    ha1 = md5hex("alice:sip.example.net:pw")
    ha2 = md5hex("INVITE:sip:4930123@sip.example.net")
    creds = DigestCredentials(response=md5hex(f"{ha1}:4f6b1c2d:{ha2}"), **p)
    assert verify_password(creds, "pw")
    assert not verify_password(creds, "pw2")


def test_digest_md5_sess():
    p = sip_params(algorithm="MD5-sess", qop="auth", cnonce="abc", nonce_count="00000001")
    ha1 = md5hex(f"{md5hex('alice:sip.example.net:pw')}:4f6b1c2d:abc")
    ha2 = md5hex("INVITE:sip:4930123@sip.example.net")
    creds = DigestCredentials(response=md5hex(f"{ha1}:4f6b1c2d:00000001:abc:auth:{ha2}"), **p)
    assert verify_password(creds, "pw")
    # the same response computed as plain MD5 does not pass for MD5-sess
    plain = dict(p, algorithm="MD5")
    assert not verify_password(DigestCredentials(response=creds.response, **plain), "pw")


def test_digest_auth_int_uses_body_digest():
    body_digest = md5hex("v=0\r\n")
    p = sip_params(qop="auth-int", cnonce="abc", nonce_count="00000001", body_digest=body_digest)
    ha1 = md5hex("alice:sip.example.net:pw")
    ha2 = md5hex(f"INVITE:sip:4930123@sip.example.net:{body_digest}")
    creds = DigestCredentials(response=md5hex(f"{ha1}:4f6b1c2d:00000001:abc:auth-int:{ha2}"), **p)
    assert verify_password(creds, "pw")
    other = dict(p, body_digest=md5hex("other body"))
    assert not verify_password(DigestCredentials(response=creds.response, **other), "pw")


@pytest.mark.parametrize("kw", [
    dict(algorithm="SHA-256", qop="auth", cnonce="a", nonce_count="00000001"),
    dict(qop="auth"),                                    # qop without cnonce / nc
    dict(qop="auth-int", cnonce="a", nonce_count="00000001"),   # auth-int without body digest
    dict(algorithm="MD5-sess"),                          # MD5-sess without cnonce
    dict(qop="bogus", cnonce="a", nonce_count="00000001"),
])
def test_digest_unusable_parameters_fail_cleanly(kw):
    assert not verify_password(DigestCredentials(response="0" * 32, **sip_params(**kw)), "pw")


def test_digest_garbage_response_fails_cleanly():
    assert not verify_password(DigestCredentials(response="zz\u00e9", **sip_params()), "pw")


# --- the same Digest whichever attribute layout the switch uses ---------------------------

def test_rfc2617_vector_verifies_from_draft_sterman_and_rfc5090_packets():
    v = RFC2617
    response = b"6629fae49393a05397450978507c4ef1"

    def sub(kind, text):
        return bytes([kind, len(text) + 2]) + text.encode()

    sterman = [sub(1, v["realm"]), sub(2, v["nonce"]), sub(3, v["method"]), sub(4, v["uri"]), sub(5, v["qop"]),
               sub(8, v["cnonce"]), sub(9, v["nonce_count"]), sub(10, v["username"])]
    _, pkt = auth_request([("User-Name", "Mufasa")], raw={206: [response], 207: sterman})
    from_sterman = auth_facts(pkt, nas(dialect="kamailio", source="packet-source"), "127.0.0.1").credentials

    rfc5090 = {103: [response], 104: [v["realm"].encode()], 105: [v["nonce"].encode()],
               108: [v["method"].encode()], 109: [v["uri"].encode()], 110: [v["qop"].encode()],
               113: [v["cnonce"].encode()], 114: [v["nonce_count"].encode()], 115: [v["username"].encode()]}
    _, pkt = auth_request([("User-Name", "Mufasa")], raw=rfc5090)
    from_rfc5090 = auth_facts(pkt, nas(dialect="generic"), "127.0.0.1").credentials

    assert from_sterman == from_rfc5090
    assert verify_password(from_sterman, "Circle Of Life")
    assert not verify_password(from_rfc5090, "Circle of Life")
