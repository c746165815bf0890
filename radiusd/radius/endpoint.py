"""The RADIUS edge without I/O: a datagram, its source address and the time in; actions out.

Like h11 for HTTP, this is the protocol as a state machine over data: the asyncio protocol in
`server.py` reads the clock, hands every datagram and every completion (a reservation decided,
an accounting record durable) to the `Endpoint`, and carries out the actions it returns. Nothing
here touches a socket, a clock, a thread or the store, so every rule of the edge can be tested
with bytes in and actions out.

    datagram -> admit: NAS by source -> its fair share (radiusd.radius.fairness), else dropped
             -> next_admitted (round robin over NAS) -> datagram: codec.decode -> authenticators (incl. BlastRADIUS rules)
             -> duplicate cache (RFC 5080) -> Status-Server | Access-Request | Accounting-Request
    Access-Request:     dialect -> facts -> plan_call -> Authorize ... authorized() -> Send
    Accounting-Request: dialect -> facts -> Record    ... recorded()   -> Send (once durable)
    Status-Server:      Send (known NAS, valid Message-Authenticator only)

State kept here: the duplicate caches (whose replies are the exact bytes sent) and the number
of Access-Requests waiting for the store. Drops are silent on the wire; each is a `Drop` action,
which the protocol counts in `radiusd_packets_dropped_total{port,reason}` and logs (rate-limited).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Iterable

from radiusd.core import message_authenticator as ma_rule
from radiusd.core.authorize import plan_call
from radiusd.core.decision import Accept, CallPlan, Reject
from radiusd.core.facts import AcctFacts, AuthFacts
from radiusd.core.reasons import RejectReason
from radiusd.core.snapshot import NasInfo, Snapshot
from radiusd.radius import codec, dialects, replies
from radiusd.radius.codec import AccessRequest, AccountingRequest, StatusServer
from radiusd.radius.dedup import IN_PROGRESS, REPLAY, DuplicateCache
from radiusd.radius.fairness import OVER_RATE, QUEUE_FULL, FairnessLimits, FairQueue
from radiusd.radius.ma_policy import LEARNED, MessageAuthenticatorMemory
from radiusd.radius.nas_table import NasTable, canonical_source

AUTH, ACCT = "auth", "acct"
MAX_IN_FLIGHT = 2048   # Access-Requests being decided at once, per process
IN_FLIGHT = "in_flight"   # a NAS's third limit, past the loop: its Access-Requests waiting for the store
# which of its [fairness] limits a NAS ran into (the `limit` of its nas_over_budget drops)
OVER_BUDGET_DETAIL = {
    OVER_RATE: "the NAS sends more than its rate (settings [fairness] rate and burst, or the adaptive ceiling)",
    QUEUE_FULL: "the NAS already has its [fairness] depth of datagrams waiting to be decided",
    IN_FLIGHT: "the NAS has its [fairness] in_flight of Access-Requests waiting for the store",
}
_ALLOWED = {AUTH: (AccessRequest, StatusServer), ACCT: (AccountingRequest, StatusServer)}
_DECODE_ERRORS = (codec.PacketError, ValueError, KeyError, IndexError, TypeError)


@dataclass(slots=True)
class Now:
    """The time, read once at the I/O boundary per datagram or completion."""
    utc: dt.datetime   # wall clock: what decisions and records are stamped with
    mono: float        # monotonic seconds: duplicate-cache lifetimes and latencies


@dataclass(frozen=True)
class EdgeState:
    """What a packet is checked against; replaced as a whole on reload, never mutated."""
    snapshot: Snapshot
    nas_table: NasTable


# --- requests in progress -------------------------------------------------------------------

@dataclass(slots=True, eq=False)
class AuthRequest:
    """An Access-Request between its arrival and its answer."""
    addr: tuple
    via: object            # opaque here: the listener the request came in on, for the reply
    key: tuple             # duplicate-cache key (source IP, source port, Identifier)
    packet: object         # the decoded pyrad packet
    nas: NasInfo
    snapshot: Snapshot
    source: str
    facts: AuthFacts
    received: Now
    plan: CallPlan | None = None

    @property
    def authenticator(self) -> bytes:
        return self.packet.authenticator


@dataclass(slots=True, eq=False)
class AcctRequest:
    """An Accounting-Request between its arrival and its record being durable. It keeps the
    answer, made at arrival, rather than the decoded packet: a record can wait in the writer's
    queue for seconds when the store is slow, and the packet is most of its memory."""
    addr: tuple
    via: object
    key: tuple
    authenticator: bytes   # the request's, for the duplicate cache
    reply: bytes           # the Accounting-Response, sent once the record is durable
    nas: NasInfo
    source: str
    facts: AcctFacts
    received: Now


# --- actions --------------------------------------------------------------------------------
# Plain slotted classes, not NamedTuples: built several times per packet, and a NamedTuple costs
# twice as much to make.

@dataclass(slots=True)
class Send:
    data: bytes
    addr: tuple
    via: object


@dataclass(slots=True)
class Drop:
    """No answer: count radiusd_packets_dropped_total{port, reason}, log one (rate-limited) line."""
    port: str
    reason: str
    source: str
    nas: str | None
    fields: dict
    amount: int = 1     # datagrams this drop stands for (drops counted in bulk: nas_over_budget)


@dataclass(slots=True)
class Count:
    metric: str
    labels: dict
    amount: int = 1


@dataclass(slots=True)
class Log:
    level: str      # debug | info | warning | error
    event: str
    fields: dict


@dataclass(slots=True)
class Authorize:
    """Reserve capacity for `request.plan` at `request.received.utc`; then call authorized()."""
    request: AuthRequest


@dataclass(slots=True)
class LearnMessageAuthenticator:
    """Record in the store that `nas` (policy auto) sent a valid Message-Authenticator; then call
    message_authenticator_recorded()."""
    nas: NasInfo


@dataclass(slots=True)
class Record:
    """Make `request.facts` durable (store or spool); then call recorded()."""
    request: AcctRequest


# --- the endpoint ---------------------------------------------------------------------------

class Endpoint:
    def __init__(self, dictionary, duplicate_ttl: float, billing_model: str | None = None,
                 max_in_flight: int = MAX_IN_FLIGHT, fairness: FairnessLimits = FairnessLimits()):
        self.dictionary = dictionary
        self.billing_model = billing_model
        self.max_in_flight = max_in_flight
        self.caches = {AUTH: DuplicateCache(duplicate_ttl), ACCT: DuplicateCache(duplicate_ttl)}
        self.in_flight = 0          # Access-Requests between Authorize and authorized()
        self.accepting = True       # False once the server is stopping: every packet is dropped
        self.ma = MessageAuthenticatorMemory()
        self.fair = FairQueue(fairness)
        self.nas_max_in_flight = fairness.in_flight
        self.nas_in_flight: dict[int, int] = {}   # NAS id -> its Access-Requests in `in_flight`
        self._over_budget: dict = {}   # (port, NAS id) -> [datagrams, NAS name, a source], since last taken

    # --- admission: each NAS its share, before any decoding -------------------------------

    def admit(self, port: str, data: bytes, addr: tuple, mono: float, state: EdgeState, via=None) -> bool:
        """Queue a datagram for `datagram()` under its NAS, if within that NAS's share (one
        lookup, no decoding: a flood must cost little to refuse). Refused ones are tallied for
        `over_budget()`. Unknown sources share one queue (they are dropped when processed)."""
        nas = state.nas_table.lookup(addr[0])
        key = nas.id if nas is not None else None
        refused = self.fair.offer(key, (port, data, addr, via), mono)
        if refused is None:
            return True
        self._tally(port, key, refused, nas, addr[0])
        return False

    def _tally(self, port: str, key, limit: str, nas: NasInfo | None, source: str) -> None:
        tally = self._over_budget.get((port, key, limit))
        if tally is None:
            self._over_budget[(port, key, limit)] = [1, nas.name if nas is not None else None, source]
        else:
            tally[0] += 1

    def next_admitted(self):
        """The next admitted (port, data, addr, via) to decide, one NAS per turn; None if none."""
        return self.fair.take()

    def over_budget(self, state: EdgeState) -> list:
        """Datagrams refused by `admit`, or shed from a NAS's queue when the fairness ceiling
        came down on it, since the last call: one Drop and one Count per NAS and limit."""
        if self.fair.shed:
            for key, (port, _, addr, _) in self.fair.shed:
                self._tally(port, key, OVER_RATE, state.nas_table.lookup(addr[0]), addr[0])
            self.fair.shed.clear()
        if not self._over_budget:
            return []
        actions: list = []
        for (port, _, limit), (count, name, source) in self._over_budget.items():
            actions.append(Count("radiusd_packets_received_total", {"port": port}, count))
            actions.append(Count("radiusd_nas_over_budget_total", {"port": port, "nas": name or "unknown",
                                                                   "limit": limit}, count))
            actions.append(Drop(port, "nas_over_budget", canonical_source(source), name,
                                {"limit": limit, "detail": OVER_BUDGET_DETAIL[limit]}, count))
        self._over_budget = {}
        return actions

    # --- datagrams ------------------------------------------------------------------------

    def datagram(self, port: str, data: bytes, addr: tuple, now: Now, state: EdgeState, via=None) -> list:
        """One datagram received on `port` (AUTH or ACCT) from `addr` -> the actions it causes."""
        actions: list = [Count("radiusd_packets_received_total", {"port": port})]
        self._datagram(actions, port, data, addr, now, state, via)
        return actions

    def _datagram(self, actions: list, port: str, data: bytes, addr: tuple, now: Now, state: EdgeState, via) -> None:
        source = canonical_source(addr[0])
        if not self.accepting:
            return actions.append(Drop(port, "shutting_down", source, None, {}))
        nas = state.nas_table.lookup(source)
        if nas is None:
            return actions.append(Drop(port, "unknown_nas", source, None, {}))
        if not nas.active:
            return actions.append(Drop(port, "inactive_nas", source, nas.name, {}))
        if len(data) < codec.HEADER_LENGTH:
            return actions.append(Drop(port, "malformed", source, nas.name, {"detail": "shorter than a RADIUS header"}))
        code = data[0]
        if code not in _ALLOWED[port]:
            return actions.append(Drop(port, "unsupported_code", source, nas.name, {"code": code}))
        try:
            pkt = codec.decode(data, self.dictionary, nas.secret, accounting=port == ACCT)
        except _DECODE_ERRORS as exc:
            return actions.append(Drop(port, "malformed", source, nas.name, {"detail": str(exc)[:120]}))
        reason, event = self.ma.check(pkt, nas)
        if event is not None:
            self._message_authenticator_event(actions, nas, event)
        if reason:
            return actions.append(Drop(port, reason, source, nas.name, {"id": pkt.id}))
        key = (addr[0], addr[1], pkt.id)
        cache = self.caches[port]
        verdict, cached = cache.check(key, pkt.authenticator, now.mono)
        if verdict == REPLAY:
            actions.append(Count("radiusd_duplicates_total", {"port": port, "kind": "replayed"}))
            actions.append(Log("info", "packet.duplicate",
                               {"port": port, "source": source, "nas": nas.name, "id": pkt.id, "action": "replayed"}))
            return actions.append(Send(cached, addr, via))
        if verdict == IN_PROGRESS:
            actions.append(Count("radiusd_duplicates_total", {"port": port, "kind": "in_progress"}))
            return actions.append(Drop(port, "duplicate_in_progress", source, nas.name, {"id": pkt.id}))
        if cache.conflicts:
            actions.append(Count("radiusd_duplicates_total", {"port": port, "kind": "conflict"}, cache.conflicts))
            cache.conflicts = 0
        if code == StatusServer:
            self._reply(actions, port, key, pkt.authenticator, replies.status_reply(pkt), addr, via, now)
            return actions.append(Count("radiusd_status_server_total", {"port": port}))
        if port == AUTH:
            return self._access_request(actions, addr, via, key, pkt, nas, state.snapshot, source, now)
        return self._accounting_request(actions, addr, via, key, pkt, nas, source, now)

    def _message_authenticator_event(self, actions: list, nas: NasInfo, event: str) -> None:
        learned = event == LEARNED
        actions.append(Log("warning" if learned else "info", "nas.message_authenticator", {
            "nas": nas.name, "policy": nas.message_authenticator, "learned": learned,
            "state": ma_rule.describe(nas.message_authenticator, learned),
            "detail": ("first Access-Request with Message-Authenticator: required from now on" if learned
                       else "Access-Request accepted without Message-Authenticator")}))
        if learned:
            actions.append(LearnMessageAuthenticator(nas))

    def message_authenticator_recorded(self, nas: NasInfo, error: BaseException | None) -> list:
        """The store write asked for by LearnMessageAuthenticator finished (error None: stored)."""
        self.ma.recorded(nas.id, error is None)
        if error is None:
            return []
        return [Count("radiusd_store_errors_total", {"operation": "learn_message_authenticator"}),
                Log("error", "store.unreachable", {"operation": "learn_message_authenticator", "nas": nas.name,
                                                   "error": error.__class__.__name__})]

    def _reply(self, actions: list, port: str, key: tuple, authenticator: bytes, reply: bytes, addr: tuple, via,
               now: Now) -> None:
        """Answer, and remember the answer: a retransmission gets these very bytes again."""
        self.caches[port].complete(key, authenticator, reply, now.mono)
        actions.append(Send(reply, addr, via))

    def _refuse(self, actions: list, port: str, key: tuple, authenticator: bytes, reason: str, source: str, nas: NasInfo,
                fields: dict) -> None:
        """Drop after the duplicate cache took the request: a retransmission is processed afresh."""
        self.caches[port].forget(key, authenticator)
        actions.append(Drop(port, reason, source, nas.name, fields))

    # --- authorization --------------------------------------------------------------------

    def _access_request(self, actions, addr, via, key, pkt, nas: NasInfo, snapshot: Snapshot, source: str,
                        now: Now) -> None:
        if self.in_flight >= self.max_in_flight:
            # Past this the answers would come too late for the switch anyway; its
            # retransmission (or its next server) gets a chance once we have caught up.
            return self._refuse(actions, AUTH, key, pkt.authenticator, "overloaded", source, nas, {})
        nas_in_flight = self.nas_in_flight
        if not self.in_flight and nas_in_flight:
            nas_in_flight.clear()   # idle: whatever was counted is settled
        if nas_in_flight.get(nas.id, 0) >= self.nas_max_in_flight:
            # One NAS's share of the store's batches is used up: the others keep theirs.
            actions.append(Count("radiusd_nas_over_budget_total", {"port": AUTH, "nas": nas.name, "limit": IN_FLIGHT}))
            return self._refuse(actions, AUTH, key, pkt.authenticator, "nas_over_budget", source, nas,
                                {"limit": IN_FLIGHT, "detail": OVER_BUDGET_DETAIL[IN_FLIGHT]})
        try:
            facts = dialects.auth_facts(pkt, nas, source)
        except dialects.MalformedRequest as exc:
            return self._refuse(actions, AUTH, key, pkt.authenticator, exc.reason, source, nas, {"detail": exc.detail})
        try:
            decision = plan_call(facts, snapshot, now.utc)
        except Exception as exc:
            actions.append(Log("error", "auth.internal_error", {"nas": nas.name, "stage": "plan_call", "exc_info": exc}))
            decision = Reject(RejectReason.SERVICE_UNAVAILABLE, detail="internal error in plan_call")
        request = AuthRequest(addr, via, key, pkt, nas, snapshot, source, facts, now)
        if isinstance(decision, CallPlan):
            request.plan = decision
            self.in_flight += 1
            nas_in_flight[nas.id] = nas_in_flight.get(nas.id, 0) + 1
            return actions.append(Authorize(request))
        self._answer(actions, request, decision, now)

    def authorized(self, request: AuthRequest, decision: Accept | Reject, now: Now) -> list:
        """The reservation of an `Authorize` was decided (a store failure is a Reject)."""
        self.gave_up(request)
        actions: list = []
        self._answer(actions, request, decision, now)
        return actions

    def gave_up(self, request: AuthRequest) -> None:
        """An `Authorize` is settled without an answer from here (or before `authorized` answers)."""
        self.in_flight -= 1
        count = self.nas_in_flight.get(request.nas.id, 0)
        if count > 1:
            self.nas_in_flight[request.nas.id] = count - 1
        else:
            self.nas_in_flight.pop(request.nas.id, None)

    def _answer(self, actions: list, request: AuthRequest, decision: Accept | Reject, now: Now) -> None:
        pkt, nas, facts = request.packet, request.nas, request.facts
        if isinstance(decision, Accept):
            reply = replies.accept_reply(pkt, decision, nas, self.billing_model)
            plan = decision.plan
            actions.append(Count("radiusd_auth_decisions_total", {"outcome": "accept", "reason": "none"}))
            actions.append(Log("info", "auth.decision", {
                "outcome": "accept", "nas": nas.name, "source": request.source, "account": plan.account.name,
                "client": plan.client.name, "h323_return_code": 0, "called": plan.called_number,
                "calling": facts.calling_number, "call_id": facts.call_id, "max_duration": decision.max_duration,
                "rate_prefix": plan.rate.prefix, "latency_ms": round((now.mono - request.received.mono) * 1000, 2),
            }))
        else:
            reason = decision.reason
            reply = replies.reject_reply(pkt, reason)
            account = request.snapshot.accounts.get(decision.account_id) if decision.account_id else None
            client = request.snapshot.clients.get(decision.client_id) if decision.client_id else None
            actions.append(Count("radiusd_auth_decisions_total", {"outcome": "reject", "reason": reason.name.lower()}))
            actions.append(Log("info", "auth.decision", {
                "outcome": "reject", "nas": nas.name, "source": request.source,
                "account": account.name if account else None, "client": client.name if client else None,
                "user_name": facts.user_name, "reason": reason.name.lower(), "h323_return_code": reason.return_code,
                "detail": decision.detail or None, "called": facts.called_number, "calling": facts.calling_number,
                "call_id": facts.call_id, "latency_ms": round((now.mono - request.received.mono) * 1000, 2),
            }))
        self._reply(actions, AUTH, request.key, pkt.authenticator, reply, request.addr, request.via, now)

    # --- accounting -----------------------------------------------------------------------

    def _accounting_request(self, actions, addr, via, key, pkt, nas: NasInfo, source: str, now: Now) -> None:
        warnings: list[str] = []
        try:
            facts = dialects.acct_facts(pkt, nas, source, now.utc, warnings)
        except dialects.MalformedRequest as exc:
            return self._refuse(actions, ACCT, key, pkt.authenticator, exc.reason, source, nas, {"detail": exc.detail})
        for warning in warnings:
            actions.append(Log("warning", "accounting.attribute", {"nas": nas.name, "source": source, "detail": warning}))
        actions.append(Record(AcctRequest(addr, via, key, pkt.authenticator, replies.accounting_reply(pkt), nas,
                                          source, facts, now)))

    def recorded(self, results: Iterable[tuple[AcctRequest, bool]], now: Now) -> list:
        """Records of `Record` actions are durable (True) or stored nowhere (False): answer the
        first, drop the others (the switch retransmits them)."""
        results = list(results)
        actions: list = []
        # Count before answering, so a switch that sees its answer also sees it in /metrics.
        per_status: dict[str, int] = {}
        for request, ok in results:
            if ok:
                per_status[request.facts.status] = per_status.get(request.facts.status, 0) + 1
        for status, count in per_status.items():
            actions.append(Count("radiusd_accounting_total", {"status": status}, count))
        for request, ok in results:
            if not ok:
                actions.extend(self.not_recorded(request))
                continue
            facts = request.facts
            actions.append(Log("info", "accounting.recorded", {
                "nas": request.nas.name, "source": request.source, "status": facts.status, "leg_key": facts.leg_key,
                "call_id": facts.call_id, "leg": facts.leg, "latency_ms": round((now.mono - request.received.mono) * 1000, 2),
            }))
            self._reply(actions, ACCT, request.key, request.authenticator, request.reply,
                        request.addr, request.via, now)
        return actions

    def not_recorded(self, request: AcctRequest, detail: str | None = None) -> list:
        """The record could not be made durable (or not even handed over): no answer."""
        facts = request.facts
        fields = {"status": facts.status, "leg_key": facts.leg_key}
        if detail:
            fields["detail"] = detail
        actions: list = [Count("radiusd_store_errors_total", {"operation": "accounting"})]
        self._refuse(actions, ACCT, request.key, request.authenticator, "not_recorded", request.source, request.nas, fields)
        return actions
