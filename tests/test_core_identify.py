"""Identification: which account a call belongs to, from plain snapshot data."""
from __future__ import annotations

import pytest

from radiusd.core.decision import Reject
from radiusd.core.facts import AuthFacts, PapCredentials
from radiusd.core.identify import find_terminator, identify, identify_originator
from radiusd.core.reasons import RejectReason
from radiusd.core.snapshot import AccountInfo, ClientInfo, NasInfo, build_snapshot

NAS1, NAS2 = 1, 2


def ip_account(id, *networks, tech="", gateways=(), proto=None, port=None, active=True, client_id=1, **kw):
    return AccountInfo(
        id=id, client_id=client_id, name=f"acc{id}", ident_by="ip", networks=tuple(networks), tech_prefix=tech,
        gateway_ids=frozenset(gateways), term_protocol=proto, term_port=port, active=active, **kw,
    )


def snap(*accounts):
    return build_snapshot(
        version=1,
        nas=[NasInfo(NAS1, "sw1", "192.0.2.1/32", b"s1"), NasInfo(NAS2, "sw2", "192.0.2.2/32", b"s2")],
        clients=[ClientInfo(1, "c1"), ClientInfo(2, "c2")],
        accounts=list(accounts),
    )


def facts(caller="10.1.2.3", called="4930123", nas=NAS1, **kw):
    return AuthFacts(nas_id=nas, caller_address=caller, called_number=called, **kw)


def who(result):
    assert not isinstance(result, Reject), result
    account, number = result
    return account.id, number


def reason(result):
    assert isinstance(result, Reject), result
    return result.reason


# --- IP and CIDR precedence -------------------------------------------------------------

@pytest.mark.parametrize("caller, expected", [
    ("10.1.2.3", 32),      # exact host beats /28 and /24
    ("10.1.2.4", 28),      # inside the /28, not the /32
    ("10.1.2.200", 24),    # only the /24 covers it
])
def test_most_specific_cidr_wins(caller, expected):
    s = snap(ip_account(24, "10.1.2.0/24"), ip_account(28, "10.1.2.0/28"), ip_account(32, "10.1.2.3/32"))
    assert who(identify(facts(caller), s)) == (expected, "4930123")


def test_address_outside_every_network_is_unknown():
    s = snap(ip_account(24, "10.1.2.0/24"))
    assert reason(identify(facts("10.9.9.9"), s)) is RejectReason.UNKNOWN_ACCOUNT


def test_account_with_several_networks_matches_any_of_them():
    s = snap(ip_account(7, "10.1.2.0/24", "172.16.0.5/32"))
    assert who(identify(facts("172.16.0.5"), s))[0] == 7
    assert who(identify(facts("10.1.2.77"), s))[0] == 7


def test_falls_back_to_less_specific_cidr_when_tech_prefix_does_not_match():
    # The /32 account only takes numbers with tech prefix 777; other calls from that host
    # belong to the /24 account.
    s = snap(ip_account(32, "10.1.2.3/32", tech="777"), ip_account(24, "10.1.2.0/24"))
    assert who(identify(facts(called="7774930123"), s)) == (32, "4930123")
    assert who(identify(facts(called="4930123"), s)) == (24, "4930123")


def test_falls_back_to_less_specific_cidr_when_gateway_does_not_match():
    s = snap(ip_account(32, "10.1.2.3/32", gateways=[NAS2]), ip_account(24, "10.1.2.0/24"))
    assert who(identify(facts(nas=NAS1), s))[0] == 24
    assert who(identify(facts(nas=NAS2), s))[0] == 32


def test_no_fallback_when_most_specific_level_is_ambiguous():
    s = snap(ip_account(1, "10.1.2.3/32"), ip_account(2, "10.1.2.3/32"), ip_account(3, "10.1.2.0/24"))
    r = identify(facts(), s)
    assert reason(r) is RejectReason.AMBIGUOUS_ACCOUNT
    assert "1" in r.detail and "2" in r.detail


# --- tech prefix ------------------------------------------------------------------------

def test_longest_tech_prefix_wins_and_is_stripped():
    s = snap(
        ip_account(1, "10.1.2.0/24"),
        ip_account(2, "10.1.2.0/24", tech="12"),
        ip_account(3, "10.1.2.0/24", tech="123"),
    )
    assert who(identify(facts(called="1234930"), s)) == (3, "4930")
    assert who(identify(facts(called="1294930"), s)) == (2, "94930")
    assert who(identify(facts(called="4930"), s)) == (1, "4930")


def test_tech_prefix_without_match_and_no_catch_all_is_unknown():
    s = snap(ip_account(1, "10.1.2.0/24", tech="99"))
    assert reason(identify(facts(called="4930"), s)) is RejectReason.UNKNOWN_ACCOUNT


def test_same_ip_same_tech_prefix_is_ambiguous():
    s = snap(ip_account(1, "10.1.2.0/24", tech="9"), ip_account(2, "10.1.2.0/24", tech="9"))
    assert reason(identify(facts(called="94930"), s)) is RejectReason.AMBIGUOUS_ACCOUNT


def test_inactive_account_does_not_shadow_its_active_twin():
    s = snap(ip_account(1, "10.1.2.0/24", active=False), ip_account(2, "10.1.2.0/24"))
    assert who(identify(facts(), s))[0] == 2


def test_only_inactive_account_is_still_named():
    s = snap(ip_account(1, "10.1.2.0/24", active=False))
    assert who(identify(facts(), s))[0] == 1  # authorization then says "account inactive"


# --- gateways --------------------------------------------------------------------------

def test_account_with_gateways_is_valid_only_on_those_nas():
    s = snap(ip_account(1, "10.1.2.0/24", gateways=[NAS2]))
    assert reason(identify(facts(nas=NAS1), s)) is RejectReason.UNKNOWN_ACCOUNT
    assert who(identify(facts(nas=NAS2), s))[0] == 1


def test_same_ip_on_different_gateways_is_not_ambiguous():
    s = snap(ip_account(1, "10.1.2.0/24", gateways=[NAS1]), ip_account(2, "10.1.2.0/24", gateways=[NAS2]))
    assert who(identify(facts(nas=NAS1), s))[0] == 1
    assert who(identify(facts(nas=NAS2), s))[0] == 2


# --- protocol / port -------------------------------------------------------------------

def test_protocol_and_port_separate_accounts_sharing_an_ip():
    s = snap(
        ip_account(1, "10.1.2.3/32", proto="sip", port=5060),
        ip_account(2, "10.1.2.3/32", proto="sip", port=5080),
        ip_account(3, "10.1.2.3/32", proto="h323"),
    )
    assert who(identify(facts(protocol="sip", port=5060), s))[0] == 1
    assert who(identify(facts(protocol="sip", port=5080), s))[0] == 2
    assert who(identify(facts(protocol="h323", port=1720), s))[0] == 3
    # without protocol/port in the request the three are indistinguishable
    assert reason(identify(facts(), s)) is RejectReason.AMBIGUOUS_ACCOUNT


def test_matching_protocol_beats_account_without_protocol():
    s = snap(ip_account(1, "10.1.2.3/32"), ip_account(2, "10.1.2.3/32", proto="sip"))
    assert who(identify(facts(protocol="sip"), s))[0] == 2
    assert who(identify(facts(protocol="h323"), s))[0] == 1   # the sip account is excluded


def test_tech_prefix_ranks_before_protocol():
    s = snap(ip_account(1, "10.1.2.3/32", tech="55"), ip_account(2, "10.1.2.3/32", proto="sip", port=5060))
    assert who(identify(facts(called="554930", protocol="sip", port=5060), s)) == (1, "4930")


# --- address forms ---------------------------------------------------------------------

@pytest.mark.parametrize("garbage", ["", "not-an-ip", "10.1.2", "999.1.1.1", "10.1.2.3:5060", None])
def test_garbage_caller_address_matches_no_network(garbage):
    s = snap(ip_account(1, "0.0.0.0/0"))
    assert who(identify(facts("198.51.100.1"), s))[0] == 1   # any real IPv4 address would match
    assert reason(identify(facts(garbage), s)) is RejectReason.UNKNOWN_ACCOUNT


def test_garbage_caller_address_still_allows_ani():
    s = snap(ip_account(1, "10.0.0.0/8"), AccountInfo(2, 1, "ani", "ani", ani="4930555"))
    assert who(identify(facts("garbage", calling_number="4930555"), s))[0] == 2


def test_ipv6_caller_uses_ipv6_networks():
    s = snap(ip_account(1, "2001:db8::/32"), ip_account(2, "2001:db8:1::/48"), ip_account(3, "0.0.0.0/0"))
    assert who(identify(facts("2001:db8:1::5"), s))[0] == 2
    assert who(identify(facts("2001:db8:2::5"), s))[0] == 1
    # an IPv6 address outside the v6 networks never falls into IPv4 networks (0.0.0.0/0 here)
    assert reason(identify(facts("2001:dead::1"), s)) is RejectReason.UNKNOWN_ACCOUNT


def test_ipv4_mapped_ipv6_is_the_ipv4_address():
    s = snap(ip_account(1, "10.1.2.0/24"), ip_account(2, "::/0"))
    assert who(identify(facts("::ffff:10.1.2.3"), s))[0] == 1


def test_ipv4_does_not_match_ipv6_networks():
    s = snap(ip_account(1, "::/0"))
    assert reason(identify(facts("10.1.2.3"), s)) is RejectReason.UNKNOWN_ACCOUNT


# --- login and ANI ---------------------------------------------------------------------

def login(id, name, password="secret", **kw):
    return AccountInfo(id=id, client_id=1, name=name, ident_by="name", password=password, **kw)


def ani(id, number, tech="", **kw):
    return AccountInfo(id=id, client_id=1, name=f"ani{id}", ident_by="ani", ani=number, tech_prefix=tech, **kw)


def test_login_with_credentials_beats_ip():
    s = snap(ip_account(1, "10.1.2.0/24"), login(2, "alice"))
    with_creds = facts(user_name="alice", credentials=PapCredentials("anything"))
    assert who(identify(with_creds, s))[0] == 2   # password checked later, by authorize


def test_login_name_without_credentials_loses_to_ip():
    s = snap(ip_account(1, "10.1.2.0/24"), login(2, "alice"))
    assert who(identify(facts(user_name="alice"), s))[0] == 1


def test_login_name_without_credentials_and_no_other_match_names_login_account():
    s = snap(login(2, "alice"))
    assert who(identify(facts("10.9.9.9", user_name="alice"), s))[0] == 2


def test_credentials_with_unknown_user_fall_back_to_ip():
    s = snap(ip_account(1, "10.1.2.0/24"), login(2, "alice"))
    assert who(identify(facts(user_name="bob", credentials=PapCredentials("x")), s))[0] == 1


def test_login_account_tech_prefix_is_stripped_and_required():
    s = snap(login(2, "alice", tech_prefix="77"))
    creds = PapCredentials("secret")
    assert who(identify(facts(user_name="alice", credentials=creds, called="774930"), s)) == (2, "4930")
    assert reason(identify(facts(user_name="alice", credentials=creds, called="4930"), s)) \
        is RejectReason.UNKNOWN_ACCOUNT


def test_login_account_restricted_to_gateway():
    s = snap(login(2, "alice", gateway_ids=frozenset({NAS2})))
    creds = PapCredentials("secret")
    assert reason(identify(facts(user_name="alice", credentials=creds, nas=NAS1), s)) \
        is RejectReason.UNKNOWN_ACCOUNT
    assert who(identify(facts(user_name="alice", credentials=creds, nas=NAS2), s))[0] == 2


@pytest.mark.parametrize("stored, sent", [("4930555", "+4930555"), ("4930555", "4930555"),
                                          ("+4930555", "4930555"), ("+4930555", "+4930555")])
def test_ani_ignores_leading_plus(stored, sent):
    s = snap(ani(5, stored))
    assert who(identify(facts("10.9.9.9", calling_number=sent), s))[0] == 5


def test_ani_longest_tech_prefix_among_same_ani():
    s = snap(ani(5, "4930555"), ani(6, "4930555", tech="11"))
    assert who(identify(facts(None, calling_number="4930555", called="11222"), s)) == (6, "222")
    assert who(identify(facts(None, calling_number="4930555", called="222"), s)) == (5, "222")


def test_ip_beats_ani():
    s = snap(ip_account(1, "10.1.2.0/24"), ani(5, "4930555"))
    assert who(identify(facts(calling_number="4930555"), s))[0] == 1


def test_nothing_matches_is_unknown_account():
    s = snap(ip_account(1, "10.1.2.0/24"), ani(5, "4930555"), login(2, "alice"))
    r = identify(facts("192.168.1.1", calling_number="111", user_name="bob"), s)
    assert reason(r) is RejectReason.UNKNOWN_ACCOUNT


def test_empty_snapshot_is_unknown_account():
    assert reason(identify(facts(), snap())) is RejectReason.UNKNOWN_ACCOUNT


# --- accounting helpers ----------------------------------------------------------------

def test_identify_originator_uses_the_same_rules():
    s = snap(ip_account(1, "10.1.2.0/24"), ip_account(2, "10.1.2.0/24", tech="9"), login(3, "alice"))
    account, number = identify_originator(s, NAS1, "10.1.2.3", None, None, "94930")
    assert (account.id, number) == (2, "4930")
    # a login name reported in accounting wins, no password involved
    account, _ = identify_originator(s, NAS1, "10.1.2.3", "alice", None, "4930")
    assert account.id == 3
    assert identify_originator(s, NAS1, "192.168.0.1", None, None, "4930") is None


def test_identify_originator_ambiguous_is_none():
    s = snap(ip_account(1, "10.1.2.0/24"), ip_account(2, "10.1.2.0/24"))
    assert identify_originator(s, NAS1, "10.1.2.3", None, None, "4930") is None


def test_identify_originator_without_called_number_needs_no_tech_prefix():
    s = snap(ip_account(1, "10.1.2.0/24"), ip_account(2, "10.1.2.0/24", tech="9"))
    account, number = identify_originator(s, NAS1, "10.1.2.3", None, None, None)
    assert (account.id, number) == (1, "")


def term(id, *networks, **kw):
    kw.setdefault("term_enabled", True)
    return ip_account(id, *networks, **kw)


def test_find_terminator_most_specific_term_enabled_account():
    s = snap(term(1, "203.0.113.0/24"), term(2, "203.0.113.7/32"), ip_account(3, "203.0.113.8/32"))
    assert find_terminator(s, NAS1, "203.0.113.7").id == 2
    assert find_terminator(s, NAS1, "203.0.113.9").id == 1
    # account 3 is not a terminator: the covering /24 terminator is found instead
    assert find_terminator(s, NAS1, "203.0.113.8").id == 1
    assert find_terminator(s, NAS1, "198.51.100.1") is None
    assert find_terminator(s, NAS1, "garbage") is None
    assert find_terminator(s, NAS1, None) is None


def test_find_terminator_protocol_port_then_tech_prefix():
    s = snap(
        term(1, "203.0.113.7/32", proto="sip", port=5060),
        term(2, "203.0.113.7/32", proto="h323", port=1720),
        term(3, "203.0.113.7/32", proto="sip", port=5060, tech="44"),
    )
    assert find_terminator(s, NAS1, "203.0.113.7", "h323", 1720).id == 2
    assert find_terminator(s, NAS1, "203.0.113.7", "sip", 5060, "444930").id == 3
    assert find_terminator(s, NAS1, "203.0.113.7", "sip", 5060, "4930").id == 1
    assert find_terminator(s, NAS1, "203.0.113.7", "sip", 5060) is None   # 1 and 3 tie


def test_find_terminator_respects_gateways():
    s = snap(term(1, "203.0.113.0/24", gateways=[NAS2]))
    assert find_terminator(s, NAS1, "203.0.113.7") is None
    assert find_terminator(s, NAS2, "203.0.113.7").id == 1
