"""What authorization decides, in two pure steps around the store's atomic capacity check.

1. `radiusd.core.authorize.plan_call(facts, snapshot, now)` -> `CallPlan | Reject`
   identification, password, active flags, rate: everything the snapshot can answer.
2. The store locks the client, reads its `Usage`, and calls
   `radiusd.core.authorize.admit(plan, usage, max_call_duration)` -> `Accept | Reject`
   capacity and money; on Accept it records the reservation in the same transaction.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from radiusd.core.reasons import RejectReason
from radiusd.core.snapshot import AccountInfo, ClientInfo, Rate, RateTableInfo, RoutingPlanInfo


@dataclass(frozen=True, slots=True)
class Route:
    """One terminator the switch may send the call to, in order of preference."""
    account_id: int
    account_name: str
    protocol: str | None
    host: str | None
    port: int | None
    share: int = 100


@dataclass(frozen=True, slots=True)
class CallPlan:
    """An identified call with a rate, waiting for the capacity and money check."""
    nas_id: int
    account: AccountInfo
    client: ClientInfo
    called_number: str                  # tech prefix stripped
    calling_number: str | None
    call_id: str | None
    rate_table: RateTableInfo
    rate: Rate
    routing_plan: RoutingPlanInfo | None
    routes: tuple[Route, ...] = ()


@dataclass(frozen=True, slots=True)
class Usage:
    """The client's live numbers, read by the store under the client's lock."""
    balance: Decimal
    account_calls: int          # the account's originating calls, active or reserved
    client_calls: int           # all the client's originating calls, active or reserved
    exposure: Decimal           # worst-case cost of those calls (sum of their max_cost)


@dataclass(frozen=True, slots=True)
class Accept:
    plan: CallPlan
    max_duration: int           # seconds: h323-credit-time and Session-Timeout
    max_cost: Decimal           # worst-case cost of this call, held against the balance
    available: Decimal | None   # balance + credit - exposure before this call; None = unlimited


@dataclass(frozen=True, slots=True)
class Reject:
    reason: RejectReason
    account_id: int | None = None
    client_id: int | None = None
    detail: str = ""            # for the log line, never shown to the switch
