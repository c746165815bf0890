"""Routing answer: which terminators an accepted call may go to, in order."""
from __future__ import annotations

from radiusd.core.routing import routes_for
from radiusd.core.snapshot import AccountInfo, ClientInfo, RoutingPlanInfo, RoutingRuleInfo, build_snapshot


def term(id, client_id=2, **kw):
    base = dict(term_enabled=True, term_protocol="sip", term_proxy=f"gw{id}.example", term_port=5060)
    base.update(kw)
    return AccountInfo(id, client_id, f"term{id}", "ip", networks=(f"203.0.113.{id}/32",), **base)


def snap(*accounts):
    return build_snapshot(
        clients=[ClientInfo(1, "acme"), ClientInfo(2, "vendor"), ClientInfo(3, "gone", active=False)],
        accounts=list(accounts),
    )


def plan(*rules):
    return RoutingPlanInfo(1, "p", tuple(RoutingRuleInfo(*r) for r in rules))


def ids(routes):
    return [r.account_id for r in routes]


def test_longest_prefix_first_then_priority():
    s = snap(term(1), term(2), term(3), term(4))
    p = plan((1, "", 1), (2, "49", 2), (1, "49", 3), (1, "4930", 4), (1, "33", 1))
    assert ids(routes_for(p, "4930123", s)) == [4, 3, 2, 1]
    assert ids(routes_for(p, "4940123", s)) == [3, 2, 1]
    assert ids(routes_for(p, "1234", s)) == [1]


def test_route_carries_terminator_settings_and_share():
    s = snap(term(7, term_protocol="h323", term_proxy="198.51.100.7", term_port=1720))
    (route,) = routes_for(plan((1, "", 7, 40)), "4930", s)
    assert (route.account_id, route.account_name, route.protocol, route.host, route.port, route.share) == \
        (7, "term7", "h323", "198.51.100.7", 1720, 40)


def test_unusable_terminators_are_skipped():
    s = snap(
        term(1, active=False),
        term(2, term_enabled=False),
        term(3, client_id=3),        # client inactive
        term(4),
    )
    p = plan((1, "", 1), (2, "", 2), (3, "", 3), (4, "", 99), (5, "", None), (6, "", 4))
    assert ids(routes_for(p, "4930", s)) == [4]


def test_terminator_listed_twice_keeps_best_position():
    s = snap(term(1), term(2))
    p = plan((5, "", 1), (1, "49", 2), (9, "", 2))
    assert ids(routes_for(p, "4930", s)) == [2, 1]


def test_no_plan_or_no_match_gives_no_routes():
    s = snap(term(1))
    assert routes_for(None, "4930", s) == ()
    assert routes_for(plan((1, "33", 1)), "4930", s) == ()
    assert routes_for(plan(), "4930", s) == ()
