"""Authorization of a call in two pure steps (contract: `radiusd.core.decision`).

`plan_call` answers everything the snapshot can, in this order, the first failure being the
reject reason:

1. a called number is present .......................... INVALID_REQUEST (11)
2. the account is identified (`radiusd.core.identify`) .. UNKNOWN_ACCOUNT / AMBIGUOUS_ACCOUNT (1)
3. login accounts (ident_by=name) prove their password .. BAD_PASSWORD (2); no credentials = bad.
   Only login accounts are password-checked: an IP or ANI account is identified by where the
   call comes from, and credentials a switch adds to such a request are ignored.
4. the client is active ................................ CLIENT_INACTIVE (7)
5. the account is active ............................... ACCOUNT_INACTIVE (7)
6. the account may originate calls ..................... ORIGINATOR_DISABLED (7)
7. a called number is left after the tech prefix ....... INVALID_REQUEST (11)
8. a rate for the destination, now: the account's originator rate table, else the client's
   ...................................................... NO_RATE (9)
9. routes from the account's routing plan, else the client's (no plan: no routes, not a reject).

`admit` then runs under the client's lock in the store, with the client's live usage:

1. capacity, the strictest of account and client ....... CAPACITY_ACCOUNT / CAPACITY_CLIENT (3)
2. money (clients with a credit limit): balance + credit limit must buy the first billing step
   ...................................................... BALANCE_EXHAUSTED (4); and what is left
   after the worst case of the calls in progress must too  INSUFFICIENT_BALANCE (12).
   Unlimited credit: the call may last the maximum.
   The maximum is the smallest of the account's and the client's `max_call_duration` and
   `[limits] max_call_duration` (`call_duration_cap`).
"""
from __future__ import annotations

import datetime as dt

from radiusd.core import rating
from radiusd.core.decision import Accept, CallPlan, Reject, Usage
from radiusd.core.facts import AuthFacts
from radiusd.core.identify import identify
from radiusd.core.passwords import verify_password
from radiusd.core.reasons import RejectReason
from radiusd.core.routing import routes_for
from radiusd.core.snapshot import Snapshot


def plan_call(facts: AuthFacts, snapshot: Snapshot, now: dt.datetime) -> CallPlan | Reject:
    """Identify, check and rate a call from an Access-Request's facts, at time `now`."""
    called = (facts.called_number or "").strip()
    if not called:
        return Reject(RejectReason.INVALID_REQUEST, detail="no called number")

    found = identify(facts, snapshot)
    if isinstance(found, Reject):
        return found
    account, number = found
    ids = {"account_id": account.id, "client_id": account.client_id}

    if account.ident_by == "name" and not verify_password(facts.credentials, account.password):
        detail = "no credentials" if facts.credentials is None else "credentials do not match"
        return Reject(RejectReason.BAD_PASSWORD, detail=detail, **ids)

    client = snapshot.clients.get(account.client_id)
    if client is None:
        return Reject(RejectReason.CLIENT_INACTIVE, detail="client missing from snapshot", **ids)
    if not client.active:
        return Reject(RejectReason.CLIENT_INACTIVE, **ids)
    if not account.active:
        return Reject(RejectReason.ACCOUNT_INACTIVE, **ids)
    if not account.orig_enabled:
        return Reject(RejectReason.ORIGINATOR_DISABLED, **ids)
    if not number:
        return Reject(RejectReason.INVALID_REQUEST, detail="called number is only the tech prefix", **ids)

    table_id = account.orig_rate_table_id if account.orig_rate_table_id is not None else client.orig_rate_table_id
    table = snapshot.rate_tables.get(table_id) if table_id is not None else None
    if table is None:
        return Reject(RejectReason.NO_RATE, detail="no originator rate table", **ids)
    rate = rating.find_rate(table, number, now)
    if rate is None:
        return Reject(RejectReason.NO_RATE, detail=f"rate table {table.id}: no rate for {number}", **ids)

    plan_id = account.orig_routing_plan_id if account.orig_routing_plan_id is not None else client.routing_plan_id
    routing_plan = snapshot.routing_plans.get(plan_id) if plan_id is not None else None
    return CallPlan(
        nas_id=facts.nas_id,
        account=account,
        client=client,
        called_number=number,
        calling_number=facts.calling_number,
        call_id=facts.call_id,
        rate_table=table,
        rate=rate,
        routing_plan=routing_plan,
        routes=routes_for(routing_plan, number, snapshot),
    )


def call_duration_cap(account_limit: int | None, client_limit: int | None, configured: int) -> int:
    """The longest call we answer: the smallest of the account's, the client's (None = no limit
    at that level) and the configured `[limits] max_call_duration`. The money then may shorten
    it further, and the reservation holds only the cost of this worst case, so a smaller cap lets
    the same balance carry more simultaneous calls."""
    return min(limit for limit in (account_limit, client_limit, configured) if limit is not None)


def admit(plan: CallPlan, usage: Usage, max_call_duration: int) -> Accept | Reject:
    """Capacity and money for a planned call, given the client's live usage (read under its lock)."""
    account, client, rate = plan.account, plan.client, plan.rate
    ids = {"account_id": account.id, "client_id": client.id}

    if account.orig_capacity is not None and usage.account_calls >= account.orig_capacity:
        return Reject(RejectReason.CAPACITY_ACCOUNT,
                      detail=f"{usage.account_calls} calls, capacity {account.orig_capacity}", **ids)
    if client.capacity is not None and usage.client_calls >= client.capacity:
        return Reject(RejectReason.CAPACITY_CLIENT,
                      detail=f"{usage.client_calls} calls, capacity {client.capacity}", **ids)

    cap = call_duration_cap(account.max_call_duration, client.max_call_duration, max_call_duration)
    if client.credit_limit is None:
        seconds = rating.max_duration(None, rate, cap)
        return Accept(plan, seconds, rating.call_cost(seconds, rate)[1], None)

    without_others = usage.balance + client.credit_limit
    available = without_others - usage.exposure
    if rating.max_duration(without_others, rate, cap) == 0:
        return Reject(RejectReason.BALANCE_EXHAUSTED, detail=f"available {without_others}", **ids)
    seconds = rating.max_duration(available, rate, cap)
    if seconds == 0:
        return Reject(RejectReason.INSUFFICIENT_BALANCE,
                      detail=f"available {without_others}, calls in progress may use {usage.exposure}", **ids)
    return Accept(plan, seconds, rating.call_cost(seconds, rate)[1], available)
