"""Admission of a batch of Access-Requests, pure: capacity and money against the live usage the
store read under the clients' locks, and the reservations to write for the calls accepted.

The store (radiusd.store.capacity) only loads a `Loaded`, calls `admit_batch` and writes the
`Reservation`s it returns. The definitions the store's SQL and this module share:

- **counted leg**: an originating leg (`leg = 'orig'`) in `active_calls`, reserved or active.
  The store keeps **usage counters** of the counted legs, maintained by triggers in the
  transaction that writes the legs (radiusd.store.sql.<dialect>.ddl): per client the number of
  legs (`clients.open_calls`) and the sum of their `max_cost` (`clients.money_held`, the
  exposure), per account the number of legs (`account_usage.open_calls`, no row = 0). Reading them costs the same
  whatever the number of calls in progress.
- **open leg**: a counted leg that counts against capacity and money at `now`: a started call
  (`state = 'active'`) or an unexpired reservation (`state = 'reserved'` and `expires_at > now`),
  SQL fragment `radiusd.store.sql.shared.OPEN_LEG`. A reservation past `expires_at` is still
  counted until it is deleted, so the store, under the clients' locks, first deletes the expired
  reservations of the clients it locked (the triggers decrement): then their counters are
  exactly their open legs.
- **usage** of a client: its balance, its counters (`Loaded.clients`) and those of the accounts
  of the batch (`Loaded.accounts`), and, one by one, the open legs a call of the batch would
  replace (`Loaded.replaced`, by reservation key: a re-auth refreshes its own reservation instead
  of counting twice). `_Book` keeps them up to date through the batch.
- **reservation key**: `radiusd.core.keys.reservation_key(nas_id, call_id)`.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal

from radiusd.core.authorize import admit
from radiusd.core.decision import Accept, CallPlan, Reject, Usage
from radiusd.core.keys import reservation_key
from radiusd.core.reasons import RejectReason

Decision = Accept | Reject
NO_USAGE = Usage(balance=Decimal(0), account_calls=0, client_calls=0, exposure=Decimal(0))


@dataclass(frozen=True, slots=True)
class Request:
    """One Access-Request waiting for admission: its plan, the time it arrived, its call id as
    stored (fitted, or made up by the store when the switch sent none) and reservation key."""
    plan: CallPlan
    now: dt.datetime
    call_id: str
    key: str


def request(plan: CallPlan, now: dt.datetime, call_id: str) -> Request:
    return Request(plan, now, call_id, reservation_key(plan.nas_id, call_id))


@dataclass(frozen=True, slots=True)
class ClientUsage:
    """A locked client's balance and usage counters (its open legs, all accounts)."""
    balance: Decimal
    calls: int = 0
    exposure: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True)
class Replaced:
    """An open leg whose key a call of the batch would take (re-auth of the same call)."""
    client_id: int | None
    account_id: int | None
    max_cost: Decimal


@dataclass(slots=True)
class Loaded:
    """What the store read for a batch, in its transaction, the limited clients locked."""
    clients: dict[int, ClientUsage] = field(default_factory=dict)   # limited clients still in the store
    accounts: dict[int, int] = field(default_factory=dict)          # open legs of the batch's accounts
    replaced: dict[str, Replaced] = field(default_factory=dict)     # by leg key
    existing_clients: set[int] | None = None    # read only after a foreign-key failure
    existing_accounts: set[int] | None = None


@dataclass(frozen=True, slots=True)
class Reservation:
    """The active_calls row of an accepted call, until its Accounting-Start takes it over
    (the row's constant part — originating leg, state reserved, not started — is RESERVED)."""
    leg_key: str
    call_id: str
    nas_id: int
    account_id: int
    client_id: int
    caller: str
    called: str
    rate_table_id: int
    prefix: str
    max_cost: Decimal
    max_duration: int
    created_at: dt.datetime
    expires_at: dt.datetime
    last_seen_at: dt.datetime


RESERVATION_FIELDS = tuple(Reservation.__dataclass_fields__)
# the columns every reservation row has the same value in
RESERVED = {"leg": "orig", "state": "reserved", "acct_session_id": None, "started_at": None, "session_seconds": 0}


def needs_usage(plan: CallPlan) -> bool:
    """Whether `admit` looks at live numbers for this call (any capacity or a credit limit)."""
    return (plan.account.orig_capacity is not None or plan.client.capacity is not None
            or plan.client.credit_limit is not None)


def limited_clients(requests: list[Request]) -> list[int]:
    """The clients whose rows the store locks and whose usage it reads, in id (lock) order."""
    return sorted({r.plan.client.id for r in requests if needs_usage(r.plan)})


def counted_accounts(requests: list[Request]) -> list[int]:
    """The accounts whose counters the store reads: those of the calls whose client it locks."""
    limited = set(limited_clients(requests))
    return sorted({r.plan.account.id for r in requests if r.plan.client.id in limited})


class _Book:
    """Usage of the locked clients, kept up to date while a batch is decided: each call is counted
    without its own earlier reservation, as if the calls had been decided one after the other.
    The counters include the legs in `keyed` (each key's leg as it stands)."""

    def __init__(self, loaded: Loaded):
        self.balances = {client_id: usage.balance for client_id, usage in loaded.clients.items()}
        self.client = {client_id: usage.calls for client_id, usage in loaded.clients.items()}
        self.exposure = {client_id: usage.exposure for client_id, usage in loaded.clients.items()}
        self.account = dict(loaded.accounts)
        self.keyed: dict[str, Replaced] = dict(loaded.replaced)

    def _count(self, leg: Replaced, sign: int) -> None:
        if leg.client_id in self.client:
            self.client[leg.client_id] += sign
            self.exposure[leg.client_id] += sign * leg.max_cost
        if leg.account_id in self.account:
            self.account[leg.account_id] += sign

    def usage(self, plan: CallPlan, key: str) -> Usage:
        client_id, account_id = plan.client.id, plan.account.id
        client_calls, exposure = self.client[client_id], self.exposure[client_id]
        account_calls = self.account.get(account_id, 0)
        own = self.keyed.get(key)
        if own is not None:   # its own earlier reservation is replaced, not counted
            if own.client_id == client_id:
                client_calls -= 1
                exposure -= own.max_cost
            if own.account_id == account_id:
                account_calls -= 1
        return Usage(self.balances[client_id], account_calls, client_calls, exposure)

    def take(self, key: str, leg: Replaced) -> None:
        """The leg of `key` becomes `leg` (an accepted call's reservation)."""
        old = self.keyed.get(key)
        if old is not None:
            self._count(old, -1)
        self.keyed[key] = leg
        self._count(leg, 1)


def _missing(plan: CallPlan, loaded: Loaded, limited: set[int]) -> str | None:
    client_id = plan.client.id
    if client_id in limited and client_id not in loaded.clients:
        return "client not in store"       # deleted since the snapshot was built
    if loaded.existing_clients is not None and client_id not in loaded.existing_clients:
        return "client not in store"
    if loaded.existing_accounts is not None and plan.account.id not in loaded.existing_accounts:
        return "account not in store"
    return None


def reservation(req: Request, decision: Accept, ttl: int) -> Reservation:
    plan, now = req.plan, req.now
    return Reservation(
        leg_key=req.key, call_id=req.call_id, nas_id=plan.nas_id, account_id=plan.account.id,
        client_id=plan.client.id, caller=(plan.calling_number or "")[:64], called=(plan.called_number or "")[:64],
        rate_table_id=plan.rate_table.id, prefix=plan.rate.prefix, max_cost=decision.max_cost,
        max_duration=decision.max_duration, created_at=now, expires_at=now + dt.timedelta(seconds=ttl),
        last_seen_at=now,
    )


def admit_batch(requests: list[Request], loaded: Loaded, max_call_duration: int,
                reservation_ttl: int) -> tuple[list[Decision], list[Reservation]]:
    """`admit` for each request in arrival order, the calls accepted earlier counting against the
    later ones. Returns the decisions and the reservations to write, one per key (a later re-auth
    of the same call in the batch replaces the earlier one)."""
    limited = set(limited_clients(requests))
    book = _Book(loaded)
    decisions: list[Decision] = []
    accepted: dict[str, Reservation] = {}
    for req in requests:
        plan = req.plan
        missing = _missing(plan, loaded, limited)
        if missing is not None:
            decisions.append(Reject(RejectReason.UNKNOWN_ACCOUNT, plan.account.id, plan.client.id, missing))
            continue
        counted = plan.client.id in loaded.clients
        decision = admit(plan, book.usage(plan, req.key) if counted else NO_USAGE, max_call_duration)
        if isinstance(decision, Accept):
            accepted[req.key] = reservation(req, decision, reservation_ttl)
            book.take(req.key, Replaced(plan.client.id, plan.account.id, decision.max_cost))
        decisions.append(decision)
    return decisions, list(accepted.values())
