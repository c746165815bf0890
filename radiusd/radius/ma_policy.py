"""Authenticator checks at the edge, and what `auto` remembers about each NAS (no I/O here).

`MessageAuthenticatorMemory.check(pkt, nas)` answers (drop reason or None, what happened):

- Status-Server: Message-Authenticator required (RFC 5997).
- Accounting-Request: Request Authenticator checked; Message-Authenticator verified when present.
- Access-Request: the HMAC is verified here and the decision is the core's
  (`radiusd.core.message_authenticator.check`). When the core says *learn* (the first valid
  Message-Authenticator from an `auto` NAS), the NAS is remembered at once in this process and the
  endpoint asks the server to record it in the store (`radiusd.store.nas_learning`), so it
  survives restarts. Every worker and server reads the learned set with its store poll
  (`store_read`), about once a second, with no snapshot roll. The first Access-Request accepted without one is reported
  once per NAS, so the log says which way each NAS went.
"""
from __future__ import annotations

from collections import OrderedDict

from radiusd.core import message_authenticator as policy
from radiusd.core.snapshot import NasInfo, Snapshot
from radiusd.radius import codec
from radiusd.radius.codec import AccountingRequest, StatusServer

PROXY_STATE = 33
LEARNED = "learned"                      # first valid Message-Authenticator from an `auto` NAS
ACCEPTED_WITHOUT = "accepted_without"    # first Access-Request of a NAS accepted without one


class MessageAuthenticatorMemory:
    """Per-process memory of what `auto` learned, on top of what the snapshot already knows."""

    def __init__(self):
        self.learned: set[int] = set()      # NAS ids learned by this process (until the store read knows)
        self.stored: set[int] = set()       # ... of which the store has the record
        self.reported: set[int] = set()     # NAS ids whose "accepted without" was reported
        self.in_store: set[int] | None = None   # learned per the last store read (None: the snapshot's flags)

    def is_learned(self, nas: NasInfo) -> bool:
        if nas.id in self.learned:
            return True
        return nas.message_authenticator_learned if self.in_store is None else nas.id in self.in_store

    def store_read(self, learned: set[int], snapshot: Snapshot) -> list[NasInfo]:
        """The poll read the NAS the store has learned (by any worker or server, or reset by an
        operator since). Returns the NAS this process requires it from only now."""
        before = {nas.id for nas in snapshot.nas.values() if self.is_learned(nas)}
        self.in_store = learned
        confirmed = self.stored & learned   # our own records the read has (a later write: the next read)
        self.learned -= confirmed
        self.stored -= confirmed
        return [nas for nas in snapshot.nas.values() if nas.id not in before and self.is_learned(nas)]

    def check(self, pkt, nas: NasInfo) -> tuple[str | None, str | None]:
        try:
            has_ma = bool(pkt.message_authenticator)
            if has_ma and len((OrderedDict.get(pkt, codec.MESSAGE_AUTHENTICATOR) or [b""])[0]) != 16:
                return policy.BAD, None
            if pkt.code == StatusServer:
                if not has_ma:
                    return policy.MISSING, None
                return (None if codec.message_authenticator_ok(pkt, pkt.secret) else policy.BAD), None
            if pkt.code == AccountingRequest:
                if not codec.request_authenticator_ok(pkt.raw_packet, pkt.secret):
                    return "bad_authenticator", None
                if has_ma and not codec.message_authenticator_ok(pkt, pkt.secret):
                    return policy.BAD, None
                return None, None
            verdict = policy.check(nas.message_authenticator, self.is_learned(nas), has_ma,
                                   has_ma and codec.message_authenticator_ok(pkt, pkt.secret), PROXY_STATE in pkt)
        except Exception:
            return policy.BAD, None
        if verdict.learn:
            self.learned.add(nas.id)
            return verdict.drop_reason, LEARNED
        if verdict.accept and not has_ma and nas.id not in self.reported:
            self.reported.add(nas.id)
            return verdict.drop_reason, ACCEPTED_WITHOUT
        return verdict.drop_reason, None

    def recorded(self, nas_id: int, stored: bool) -> None:
        """The store write of a learned NAS finished. Not stored: remembered in this process only,
        and the next Message-Authenticator from this NAS tries again."""
        if stored:
            self.stored.add(nas_id)
        else:
            self.learned.discard(nas_id)

    def snapshot_loaded(self) -> None:
        """A snapshot loaded after our record was stored knows the truth (also when an operator
        has since reset the policy): stop overriding it; the next store read overrides both."""
        self.learned -= self.stored
        self.stored.clear()
        self.in_store = None

    def required_count(self, snapshot: Snapshot) -> int:
        """NAS whose Access-Requests must carry Message-Authenticator now (yes, or auto learned)."""
        return sum(1 for nas in snapshot.nas.values()
                   if policy.required(nas.message_authenticator, self.is_learned(nas)))

    def learned_count(self, snapshot: Snapshot) -> int:
        """NAS under auto that have sent Message-Authenticator (so now require it)."""
        return sum(1 for nas in snapshot.nas.values()
                   if nas.message_authenticator == "auto" and self.is_learned(nas))
