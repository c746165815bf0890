"""The routing answer of an Access-Accept: which terminators the switch may try, in order.

Rules of the originator's routing plan whose prefix starts the (tech-prefix-stripped) called
number take part ('' matches any number); the longest prefix comes first, then the lower priority
number. Terminators that cannot take the call (missing, inactive, terminator settings disabled,
or their client inactive) are skipped, and each terminator appears once, at its best position.
"""
from __future__ import annotations

from radiusd.core.decision import Route
from radiusd.core.snapshot import RoutingPlanInfo, Snapshot


def routes_for(plan: RoutingPlanInfo | None, called_number: str, snapshot: Snapshot) -> tuple[Route, ...]:
    if plan is None:
        return ()
    number = called_number or ""
    matching = [rule for rule in plan.rules if number.startswith(rule.prefix or "")]
    # sorted() is stable: rules equal in prefix length and priority keep the plan's order
    matching.sort(key=lambda rule: (-len(rule.prefix or ""), rule.priority))
    routes: list[Route] = []
    seen: set[int] = set()
    for rule in matching:
        account = snapshot.accounts.get(rule.terminator_account_id) if rule.terminator_account_id else None
        if account is None or account.id in seen:
            continue
        if not (account.active and account.term_enabled):
            continue
        client = snapshot.clients.get(account.client_id)
        if client is None or not client.active:
            continue
        seen.add(account.id)
        routes.append(Route(
            account_id=account.id,
            account_name=account.name,
            protocol=account.term_protocol,
            host=account.term_proxy,
            port=account.term_port,
            share=rule.share,
        ))
    return tuple(routes)
