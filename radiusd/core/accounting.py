"""The accounting life of a call leg, as a pure state machine.

Every accounting event — Start, Interim-Update, Stop, Failed (Acct-Status-Type 15),
Accounting-On/Off, the sweeper's stale expiry, a manual removal, and a spool replay (which is
the original event again) — is decided here by `transition(leg, closed, event, now, view)` from
the leg's loaded state: its active_calls row (or, for an originating leg, the reservation made
at Access-Accept for its call id) and whether its leg key already has a CDR. The answer is data
(`Effects`): the row to open / refresh / delete, the CDR to write, the debit. `fold()` runs a
group of events in order over the loaded state of the group, so one record is a group of one.
The store (radiusd.store.accounting) only loads that state, calls `fold` and writes the plan.

Leg states (`LegState`), as h11 names a connection's states:

    (none) --Start/Interim--> OPEN --Stop/Failed/reset/stale/removed--> CLOSED
    RESERVED --Start/Interim (orig leg, same call id)--> OPEN    (the reservation row is re-keyed,
    RESERVED --Stop--> CLOSED                                      so capacity counts it once)
    RESERVED --Accounting-On/Off, removed--> (none)                (released, no CDR)
    (none) --Stop/Failed--> CLOSED                                 (Stop without Start: one CDR)

CLOSED is terminal and is what makes every event idempotent per leg key: a repeated Stop is a
duplicate, a Start or Interim after the Stop is ignored (Stop-then-Start leaves no open call), a
repeated Start changes nothing, a late Interim never moves a call backwards. `TRANSITIONS` is the
whole table; a pair not in it is a bug and raises.

Legs and money:
- orig (answer/incoming) legs bill the originator account: the reservation's account, else
  identification as at Access-Request; rated with the account's orig rate table, else its
  client's; the client's balance is debited by the CDR cost.
- term (originate/outgoing) legs are matched to a terminator account by remote address and
  protocol/port; the vendor cost is rated with the terminator's term rate table, else its
  client's, and recorded on the CDR for margin reporting. It moves no balance (vendor invoices
  are reconciled outside radiusd). While open, term legs count against the terminator's capacity.
- A leg whose account is unknown (e.g. between a carrier's own gateways) is still recorded: CDR
  with no account, no rate, cost 0. Unrated legs (no rate effective at the connect time) have
  `price_per_minute` None with duration > 0 and are logged by the store.
- All legs of one call share `call_id` (h323-conf-id / call-id / SIP Call-ID): that is the link.

Closing without a Stop (Accounting-On/Off, stale, removed by hand): the time charged is what is
proven — the longer of the last Interim's Acct-Session-Time and last-seen - start — never the
time until we noticed (a NAS down for hours must not bill hours nobody talked). A call removed
by hand is charged like a Stop now: now - start. The start is the connect time: a leg whose
Start came at setup (a setup time, no connect time: Yate) has no start until an Interim reports
its connect (h323-connect-time, or Acct-Session-Time counting from it); if none does, the leg
never connected and its CDR costs nothing (no connection fee, result not `success`). The CDR
keeps the setup time the Start or an Interim carried (the row's `setup_at`).

Sanity (radiusd.core.sanity, `Limits`): every time is bounded before the event is decided, the
billed duration never exceeds what the leg was granted plus a slack, disconnect never precedes
connect; each such correction is a flag on the CDR. Accounting-On/Off only ends calls started (and
drops reservations made) at or before its time, so replaying an old one from the spool never
ends calls that began after the reboot.

The billable start of an open leg is its row's `started_at`, part of the leg's state (not fixed
when it opens): `_refresh` (OPEN --Interim--> OPEN) is the one place an Interim changes an open
leg, the store's update writes `started_at` back, and the CDR takes its connect time (unless the
Stop carries one) and its rate from it. So a connect time learned from a later Interim can move
the billable start by a change to `_refresh` alone: no new state, no store change.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import functools
from dataclasses import dataclass
from decimal import Decimal
from typing import Iterable, Protocol

import structlog

from radiusd.core import identify as _identify_mod
from radiusd.core import legs
from radiusd.core.causes import describe
from radiusd.core.facts import AcctFacts
from radiusd.core.keys import KEY_SIZE, fit_key, reservation_key
from radiusd.core.legs import charge_leg, leg_duration, strip_tech_prefix
from radiusd.core.rating import find_rate
from radiusd.core.sanity import (
    DEFAULT_LIMITS, DISCONNECT_BEFORE_CONNECT, DURATION_CAPPED, Limits, add, bounded, merged,
)
from radiusd.core.snapshot import AccountInfo, RateTableInfo, Snapshot

log = structlog.get_logger("radiusd.accounting")

NAS_REBOOT = "NAS-Reboot"
STALE = "stale"
MANUAL = "manual"
ZERO = Decimal(0)


class LegState(enum.Enum):
    RESERVED = "reserved"   # Access-Accept reserved capacity; no accounting yet
    OPEN = "active"         # Start or Interim seen: the call is up and counts
    CLOSED = "closed"       # its CDR exists (leg key claimed): nothing changes it any more

    __hash__ = object.__hash__  # members are singletons: C-speed hashing for the table lookups


class Event(enum.Enum):
    START = "start"
    INTERIM = "interim"
    STOP = "stop"
    FAILED = "failed"
    NAS_RESET = "nas_reset"   # Accounting-On/Off of the leg's NAS
    EXPIRE = "expire"         # the sweeper: no Interim or Stop for stale_call_after
    REMOVE = "remove"         # `radiusd calls remove`

    __hash__ = object.__hash__


_R, _O, _C = LegState.RESERVED, LegState.OPEN, LegState.CLOSED
_ENDS = (Event.NAS_RESET, Event.EXPIRE, Event.REMOVE)

# (state before, event) -> (state after, action); None = no row and no CDR.
TRANSITIONS: dict[tuple[LegState | None, Event], tuple[LegState | None, str]] = {
    **{(None, e): (_O, "opened") for e in (Event.START, Event.INTERIM)},
    **{(_R, e): (_O, "took_over") for e in (Event.START, Event.INTERIM)},
    (_O, Event.START): (_O, "duplicate"),
    (_O, Event.INTERIM): (_O, "updated"),
    **{(_C, e): (_C, "ignored") for e in (Event.START, Event.INTERIM)},
    **{(s, e): (_C, "closed") for s in (None, _R, _O) for e in (Event.STOP, Event.FAILED)},
    **{(_C, e): (_C, "duplicate") for e in (Event.STOP, Event.FAILED) + _ENDS},
    **{(_R, e): (None, "released") for e in _ENDS},
    **{(_O, e): (_C, "closed") for e in _ENDS},
    **{(None, e): (None, "ignored") for e in _ENDS},   # ended meanwhile (another sweeper, by hand)
}


@dataclass(frozen=True, slots=True)
class Leg:
    """An active_calls row: a reservation or an open call (the field names are its columns)."""
    leg_key: str
    call_id: str
    acct_session_id: str | None
    nas_id: int | None
    leg: str
    state: str                       # LegState.value of RESERVED or OPEN
    account_id: int | None
    client_id: int | None
    caller: str
    called: str
    rate_table_id: int | None
    prefix: str | None
    max_cost: Decimal
    max_duration: int | None
    created_at: dt.datetime
    expires_at: dt.datetime | None
    started_at: dt.datetime | None   # billable start
    last_seen_at: dt.datetime
    session_seconds: int
    setup_at: dt.datetime | None = None   # the switch's setup time, for a CDR closed without a Stop
    flags: str = ""                  # anomalies of its Start/Interims, carried to its CDR
    id: int | None = None            # None: not in the store yet (inserted by the plan)


@dataclass(frozen=True, slots=True)
class CdrRecord:
    """One CDR (the field names are the cdrs columns)."""
    leg_key: str
    call_id: str
    acct_session_id: str | None
    nas_id: int | None
    leg: str
    account_id: int | None
    client_id: int | None
    caller: str
    called: str
    tech_prefix: str
    remote_address: str | None
    setup_time: dt.datetime | None
    connect_time: dt.datetime | None
    disconnect_time: dt.datetime
    duration: int
    billed_seconds: int
    disconnect_cause: str
    result: str
    rate_table_id: int | None
    prefix: str | None
    price_per_minute: Decimal | None
    cost: Decimal
    currency: str
    flags: str = ""                  # anomalies, comma separated (radiusd.core.sanity kinds)

    @property
    def debit(self) -> Decimal:
        """What the client's balance loses when this CDR is written: orig legs only."""
        return self.cost if self.leg == "orig" and self.client_id is not None else ZERO

    @property
    def unrated(self) -> bool:
        """A connected leg of a known account that no rate applied to (logged, cost 0)."""
        return self.duration > 0 and self.price_per_minute is None and self.account_id is not None


@dataclass(frozen=True, slots=True)
class Close:
    """A leg ending without a packet about it: Accounting-On/Off (at its time), stale, by hand."""
    event: Event        # NAS_RESET | EXPIRE | REMOVE
    at: dt.datetime     # NAS_RESET: the On/Off time; REMOVE: now; EXPIRE: unused (last seen)


@dataclass(frozen=True, slots=True)
class Effects:
    """What one event does to one leg."""
    event: Event
    before: LegState | None
    after: LegState | None
    action: str                     # opened | took_over | updated | closed | released | duplicate | ignored
    row: Leg | None = None          # the row after the event: inserted (id None) or updated
    removed: Leg | None = None      # the row that stops counting: deleted
    cdr: CdrRecord | None = None    # written (and debited) only if its leg key is not claimed yet
    unassigned: bool = False        # opened with no known account


# -- what the core reads: rate tables, currencies, accounts ------------------------------------

class View(Protocol):
    def rate_table(self, table_id: int | None) -> RateTableInfo | None: ...
    def currency(self, client_id: int | None) -> str: ...
    def account(self, account_id: int | None) -> AccountInfo | None: ...
    def identify(self, facts: AcctFacts) -> "Party": ...   # a packet's leg that has no row


class SnapshotView:
    """Rate tables, currencies and accounts from the server's in-memory snapshot."""

    def __init__(self, snapshot: Snapshot):
        self.snapshot = snapshot

    def rate_table(self, table_id: int | None) -> RateTableInfo | None:
        return self.snapshot.rate_tables.get(table_id) if table_id is not None else None

    def currency(self, client_id: int | None) -> str:
        client = self.snapshot.clients.get(client_id) if client_id is not None else None
        return client.currency if client else "USD"

    def account(self, account_id: int | None) -> AccountInfo | None:
        return self.snapshot.accounts.get(account_id) if account_id is not None else None

    def identify(self, facts: AcctFacts) -> "Party":
        return identify_party(self.snapshot, facts)


# -- who a leg belongs to ----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Party:
    account: AccountInfo | None
    client_id: int | None
    called: str               # tech prefix stripped
    tech_prefix: str
    rate_table_id: int | None


def identify_party(snapshot: Snapshot, facts: AcctFacts) -> Party:
    """The account of a leg that has no row: originator or terminator, as authorization finds it."""
    account: AccountInfo | None = None
    called, tech_prefix = facts.called_number or "", ""
    try:
        if facts.leg == "orig":
            found = _identify_mod.identify_originator(
                snapshot, facts.nas_id, facts.caller_address, facts.user_name, facts.calling_number,
                facts.called_number, facts.protocol, facts.port)
            if found is not None:
                account, called = found
                if called != (facts.called_number or "") and account.tech_prefix:
                    tech_prefix = account.tech_prefix
        else:
            account = _identify_mod.find_terminator(
                snapshot, facts.nas_id, facts.remote_address, facts.protocol, facts.port, facts.called_number)
            if account is not None:
                called, tech_prefix = strip_tech_prefix(facts.called_number, account.tech_prefix)
    except Exception as exc:  # a bad packet must not lose the leg: record it unassigned
        log.warning("accounting_identify_failed", leg_key=facts.leg_key, error=repr(exc))
        account = None
    if account is None:
        return Party(None, None, called, tech_prefix, None)
    client = snapshot.clients.get(account.client_id)
    if facts.leg == "orig":
        table_id = account.orig_rate_table_id or (client.orig_rate_table_id if client else None)
    else:
        table_id = account.term_rate_table_id or (client.term_rate_table_id if client else None)
    return Party(account, account.client_id, called, tech_prefix, table_id)


def _party_of_row(row: Leg, facts: AcctFacts, view: View) -> Party:
    account = view.account(row.account_id)
    prefix = account.tech_prefix if account else ""
    called = row.called or strip_tech_prefix(facts.called_number, prefix)[0]
    tech_prefix = prefix if prefix and (facts.called_number or "").startswith(prefix) else ""
    return Party(account, row.client_id, called, tech_prefix, row.rate_table_id)


# -- small pure helpers ------------------------------------------------------------------------

def normalised(facts: AcctFacts) -> AcctFacts:
    """Over-long keys made to fit the 255-character columns (long ids end in a digest)."""
    if len(facts.leg_key) > KEY_SIZE or (facts.acct_session_id and len(facts.acct_session_id) > KEY_SIZE):
        return dataclasses.replace(facts, leg_key=fit_key(facts.leg_key),
                                   acct_session_id=(facts.acct_session_id or "")[:KEY_SIZE] or None)
    return facts


def call_id_of(facts: AcctFacts) -> str:
    return fit_key(facts.call_id or facts.acct_session_id or facts.leg_key)


def _clip(value: str | None, size: int = 64) -> str:
    return (value or "")[:size]


def proven_seconds(row: Leg, until: dt.datetime | None = None) -> int:
    """How long an open call is known to have been up: last Interim / last-seen, never more."""
    if row.started_at is None:
        return 0
    seen = max(0, int((row.last_seen_at - row.started_at).total_seconds()))
    seconds = max(row.session_seconds or 0, seen)
    if until is not None:
        seconds = min(seconds, max(0, int((until - row.started_at).total_seconds())))
    return seconds


_STATES = {s.value: s for s in LegState}
_EVENTS = {e.value: e for e in (Event.START, Event.INTERIM, Event.STOP, Event.FAILED)}
_EVENTS.update(on=Event.NAS_RESET, off=Event.NAS_RESET)


def state_of(row: Leg | None, closed: bool) -> LegState | None:
    if closed:
        return _C
    return None if row is None else _STATES[row.state]


def event_of(event: AcctFacts | Close) -> Event:
    if isinstance(event, Close):
        return event.event
    found = _EVENTS.get(event.status)
    if found is None:
        raise ValueError(f"Acct-Status-Type: unknown value {event.status!r}")
    return found


def _cdr(view: View, *, leg_key: str, call_id: str, acct_session_id: str | None, nas_id: int | None, leg: str,
         account_id: int | None, client_id: int | None, caller: str | None, called: str, tech_prefix: str,
         remote_address: str | None, setup_time: dt.datetime | None, connect_time: dt.datetime | None,
         disconnect_time: dt.datetime, duration: int, cause: str, result: str, rate_table_id: int | None,
         chargeable: bool = True, granted: int | None = None, flags: tuple[str, ...] = (),
         limits: Limits = DEFAULT_LIMITS) -> CdrRecord:
    """Rate a finished leg at its connect time and build its CDR.

    `duration` is what the switch reported (recorded as is); what is billed never exceeds what the
    leg was `granted` at authorization plus the slack. A leg with no connect time never connected:
    it costs nothing. Disconnect before connect is clamped.
    """
    if connect_time is not None and connect_time > disconnect_time:
        connect_time, flags = disconnect_time, add(flags, DISCONNECT_BEFORE_CONNECT)
    billable = duration
    cap = limits.billable(granted)
    if duration > cap:
        billable, flags = cap, add(flags, DURATION_CAPPED)
    if connect_time is None and duration <= 0:
        chargeable = False
        if result == "success":
            result = "error"
    charge = charge_leg(view.rate_table(rate_table_id), called, connect_time or disconnect_time, billable,
                        fallback_currency=view.currency(client_id), chargeable=chargeable)
    return CdrRecord(
        leg_key=leg_key, call_id=call_id, acct_session_id=acct_session_id, nas_id=nas_id, leg=leg,
        account_id=account_id, client_id=client_id, caller=_clip(caller), called=_clip(called),
        tech_prefix=_clip(tech_prefix, 32), remote_address=remote_address[:64] if remote_address else None,
        setup_time=setup_time, connect_time=connect_time, disconnect_time=disconnect_time, duration=duration,
        billed_seconds=charge.billed_seconds, disconnect_cause=_clip(cause, 32), result=result,
        rate_table_id=charge.rate_table.id if charge.rate_table else None,
        prefix=charge.rate.prefix if charge.rate else None,
        price_per_minute=charge.rate.price_per_minute if charge.rate else None,
        cost=charge.cost, currency=charge.currency, flags=",".join(flags),
    )


# -- the transitions ---------------------------------------------------------------------------

def transition(leg: Leg | None, closed: bool, event: AcctFacts | Close, now: dt.datetime,
               view: View, limits: Limits = DEFAULT_LIMITS) -> Effects:
    """Decide one event for one leg.

    `leg`: the leg's row (its open call, or for a packet of an orig leg without one, the
    reservation of its call id); `closed`: its leg key has a CDR. Facts are `normalised` and
    `bounded` (radiusd.core.sanity).
    """
    kind = event_of(event)
    before = state_of(leg, closed)
    if kind is Event.NAS_RESET and leg is not None:
        # a replayed old On/Off never ends what began after it
        born = leg.created_at if leg.state == _R.value else leg.started_at or leg.setup_at or leg.created_at
        if born is not None and born > (event.at if isinstance(event, Close) else event.event_time or now):
            return Effects(kind, before, before, "ignored")
    try:
        after, action = TRANSITIONS[(before, kind)]
    except KeyError:
        raise ValueError(f"no transition from {before} on {kind.value}") from None
    if after is None:
        return Effects(kind, before, after, action, removed=leg)
    if before is _C:  # nothing changes; a row still open for an ended leg stops counting
        return Effects(kind, before, after, action, removed=leg if kind in _ENDS else None)
    if kind in (Event.START, Event.INTERIM):
        if before is _O:
            if kind is Event.START:
                return Effects(kind, before, after, action)
            return Effects(kind, before, after, action, row=_refresh(leg, event, now))
        return _open(leg, event, kind, now, view, action)
    if kind in (Event.STOP, Event.FAILED):
        return Effects(kind, before, after, action, removed=leg, cdr=_stop_cdr(leg, event, now, view, limits))
    return Effects(kind, before, after, action, removed=leg, cdr=_end_cdr(leg, event, now, view, limits))


def _refresh(row: Leg, facts: AcctFacts, now: dt.datetime) -> Leg:
    """An Interim-Update on an open leg: last seen and the running duration move forward only; the
    billable start becomes the connect time the Interim reports (radiusd.core.legs.connected_at)."""
    started = legs.connected_at(facts, facts.event_time or now, row.started_at)
    if started != row.started_at:  # the running duration counts from the new start, up to the last sign of life
        alive = 0 if started is None else max(0, int((row.last_seen_at - started).total_seconds()))
        row = dataclasses.replace(row, started_at=started, session_seconds=alive)
    seen, seconds = legs.interim_progress(facts, now, row.started_at, row.last_seen_at, row.session_seconds)
    return dataclasses.replace(row, last_seen_at=seen, session_seconds=seconds,
                               setup_at=row.setup_at or facts.setup_time,
                               flags=",".join(merged(row.flags, facts.flags)))


def _open(reservation: Leg | None, facts: AcctFacts, kind: Event, now: dt.datetime, view: View,
          action: str) -> Effects:
    if kind is Event.START:
        started, seen = legs.start_times(facts, now)
        seconds = 0
    else:  # the Start was lost: the call began Acct-Session-Time before this Interim
        started, seen, seconds = legs.interim_opening(facts, now)
    before = None if reservation is None else _R
    if reservation is not None:
        # the same row becomes the call, so capacity counts it once
        row = dataclasses.replace(
            reservation, leg_key=facts.leg_key, state=_O.value, acct_session_id=facts.acct_session_id,
            expires_at=None, started_at=started, last_seen_at=seen, session_seconds=seconds,
            setup_at=facts.setup_time, flags=",".join(merged(reservation.flags, facts.flags)), caller=_clip(facts.calling_number) if facts.calling_number else reservation.caller)
        return Effects(kind, before, _O, action, row=row)
    party = view.identify(facts)
    rate = find_rate(view.rate_table(party.rate_table_id), party.called, started or seen)
    row = Leg(
        leg_key=facts.leg_key, call_id=call_id_of(facts), acct_session_id=facts.acct_session_id,
        nas_id=facts.nas_id, leg=facts.leg, state=_O.value, account_id=party.account.id if party.account else None,
        client_id=party.client_id, caller=_clip(facts.calling_number), called=_clip(party.called),
        rate_table_id=party.rate_table_id, prefix=rate.prefix if rate else None, max_cost=ZERO, max_duration=None,
        created_at=now, expires_at=None, started_at=started, last_seen_at=seen, session_seconds=seconds,
        setup_at=facts.setup_time, flags=",".join(facts.flags))
    return Effects(kind, before, _O, action, row=row, unassigned=party.account is None)


def _stop_cdr(row: Leg | None, facts: AcctFacts, now: dt.datetime, view: View,
              limits: Limits = DEFAULT_LIMITS) -> CdrRecord:
    """The CDR of a Stop or Failed: times from the packet, the party from the row if there is one."""
    if row is not None:
        party = _party_of_row(row, facts, view)
        started_at, caller, account_id = row.started_at, facts.calling_number or row.caller, row.account_id
    else:
        party = view.identify(facts)
        started_at, caller = None, facts.calling_number
        account_id = party.account.id if party.account else None
    disconnect = facts.disconnect_time or facts.event_time or now
    failed = facts.status == "failed"
    duration = 0 if failed else leg_duration(
        facts.session_time, facts.connect_time, facts.disconnect_time, started_at, facts.event_time or disconnect)
    connect = facts.connect_time or started_at
    if connect is None and duration > 0:
        # at most the billable cap back: a 2^32 s claim must not put the connect in 1890
        connect = disconnect - dt.timedelta(seconds=min(duration, limits.billable(row.max_duration if row else None)))
    cause, result = describe(duration, facts.disconnect_cause, facts.terminate_cause)
    return _cdr(view, leg_key=facts.leg_key, call_id=call_id_of(facts), acct_session_id=facts.acct_session_id,
                nas_id=facts.nas_id, leg=facts.leg, account_id=account_id, client_id=party.client_id, caller=caller,
                called=party.called, tech_prefix=party.tech_prefix, remote_address=facts.remote_address,
                setup_time=facts.setup_time or (row.setup_at if row is not None else None), connect_time=connect,
                disconnect_time=disconnect, duration=duration, cause=cause, result=result,
                rate_table_id=party.rate_table_id, chargeable=not failed,
                granted=row.max_duration if row is not None else None,
                flags=merged(facts.flags, row.flags if row is not None else ""), limits=limits)


def _end_cdr(row: Leg, end: Close | AcctFacts, now: dt.datetime, view: View,
             limits: Limits = DEFAULT_LIMITS) -> CdrRecord:
    """The CDR of an open leg that ended without a Stop: charged for what is proven (or, by hand, until now)."""
    kind = event_of(end)
    if kind is Event.NAS_RESET:
        at = end.at if isinstance(end, Close) else end.event_time or now
        disconnect, duration, cause = at, proven_seconds(row, at), NAS_REBOOT
    elif kind is Event.EXPIRE:
        disconnect, duration, cause = row.last_seen_at, proven_seconds(row), STALE
    else:
        at = end.at
        seconds = max(0, int((at - row.started_at).total_seconds())) if row.started_at else 0
        disconnect, duration, cause = at, seconds, MANUAL
    return _cdr(view, leg_key=row.leg_key, call_id=row.call_id, acct_session_id=row.acct_session_id,
                nas_id=row.nas_id, leg=row.leg, account_id=row.account_id, client_id=row.client_id,
                caller=row.caller, called=row.called, tech_prefix="", remote_address=None, setup_time=row.setup_at,
                connect_time=row.started_at, disconnect_time=disconnect, duration=duration, cause=cause,
                result="success" if duration > 0 else "error", rate_table_id=row.rate_table_id,
                granted=row.max_duration, flags=merged(row.flags, end.flags if isinstance(end, AcctFacts) else ()),
                limits=limits)


# -- a group of events over the loaded state ---------------------------------------------------

@dataclass
class Plan:
    """What a group of events does to the store, in the order the store writes it."""
    effects: list[Effects]
    deletes: list[int]           # ids of loaded rows that stop counting
    updates: list[Leg]           # loaded rows changed (re-keyed reservations, refreshed calls)
    inserts: list[Leg]           # new open calls
    cdrs: list[CdrRecord]        # each written only if its leg key's claim is new

    @functools.cached_property
    def clients(self) -> list[int]:
        """The clients whose rows the write changes (usage counters, debits), in id order: the order
        every transaction takes client locks in (radiusd.store.capacity)."""
        ids = {e.removed.client_id for e in self.effects if e.removed is not None}
        ids.update(row.client_id for row in self.updates + self.inserts)
        ids.update(cdr.client_id for cdr in self.cdrs)
        ids.discard(None)
        return sorted(ids)

    @property
    def touched(self) -> list[str]:
        """Leg keys of the rows inserted or updated (the store drops any whose leg another writer closed)."""
        return [row.leg_key for row in self.updates + self.inserts]


def targets(event: AcctFacts | Close, rows: dict[str, Leg]) -> list[str | None]:
    """The leg keys an event is about: one for a packet, every row of the NAS for On/Off."""
    if isinstance(event, AcctFacts) and event.status in ("on", "off"):
        mine = [row for row in rows.values() if row.nas_id == event.nas_id]
        return [row.leg_key for row in sorted(mine, key=lambda r: (r.id is None, r.id or 0))]
    return [None]


def row_for(facts: AcctFacts, rows: dict[str, Leg]) -> Leg | None:
    """The leg's open row, else (orig legs) the Access-Accept reservation of its call id."""
    row = rows.get(facts.leg_key)
    if row is not None or facts.leg != "orig":
        return row
    reserved = rows.get(reservation_key(facts.nas_id, call_id_of(facts)))
    return reserved if reserved is not None and reserved.state == _R.value else None


def fold(rows: Iterable[Leg], closed: Iterable[str], events: Iterable[AcctFacts | Close | tuple[str, Close]],
         now: dt.datetime, view: View, limits: Limits = DEFAULT_LIMITS) -> Plan:
    """Decide `events` in order over the loaded rows and closed leg keys; the plan to write.

    An event is a packet's AcctFacts (normalised here), or (leg key, Close) for a row loaded by
    the sweeper or a manual removal. Accounting-On/Off applies to every loaded row of its NAS.
    """
    state = {row.leg_key: row for row in rows}
    done = set(closed)
    changed: dict[int, Leg | None] = {}   # loaded row id -> row after the group; None = deleted
    fresh: dict[str, Leg] = {}            # new rows by leg key
    effects: list[Effects] = []
    cdrs: list[CdrRecord] = []
    for event in events:
        if isinstance(event, tuple):
            key, event = event
            pairs = [(state.get(key), key in done)]
        elif isinstance(event, AcctFacts):
            event = bounded(normalised(event), now, limits)
            keys = targets(event, state)
            if keys == [None]:
                pairs = [(row_for(event, state), event.leg_key in done)]
            else:
                pairs = [(state[key], key in done) for key in keys]
        else:
            raise TypeError(f"not an accounting event: {event!r}")
        for leg, is_closed in pairs:
            eff = transition(leg, is_closed, event, now, view, limits)
            effects.append(eff)
            if eff.removed is not None:
                state.pop(eff.removed.leg_key, None)
                if eff.removed.id is not None:
                    changed[eff.removed.id] = None
                else:
                    fresh.pop(eff.removed.leg_key, None)
            if eff.row is not None:
                if leg is not None and leg.leg_key != eff.row.leg_key:
                    state.pop(leg.leg_key, None)
                state[eff.row.leg_key] = eff.row
                if eff.row.id is not None:
                    changed[eff.row.id] = eff.row
                else:
                    fresh[eff.row.leg_key] = eff.row
            if eff.cdr is not None:
                done.add(eff.cdr.leg_key)
                cdrs.append(eff.cdr)
    return Plan(effects, [i for i, row in changed.items() if row is None],
                [row for row in changed.values() if row is not None], list(fresh.values()), cdrs)
