"""Authenticator checks at the edge, and what `auto` learns about each NAS.

`verify(pkt, nas)` answers None (the packet proves it knows the NAS's secret and passes the NAS's
Message-Authenticator policy) or the drop reason:

- Status-Server: Message-Authenticator required (RFC 5997).
- Accounting-Request: Request Authenticator checked; Message-Authenticator verified when present.
- Access-Request: the HMAC is verified here and the decision is the core's
  (`radiusd.core.message_authenticator.check`). When the core says *learn* (the first valid
  Message-Authenticator from an `auto` NAS), the NAS is remembered at once in this process and
  recorded in the store off the event loop (`radiusd.store.nas_learning`): that write bumps the
  store version, so every worker and server picks the learned state up with its next snapshot,
  and it survives restarts. One log line per NAS says which way it went.
"""
from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from concurrent.futures import Future
from typing import Callable

from pyrad.packet import AccountingRequest, StatusServer

from radiusd.core import message_authenticator as policy
from radiusd.core.snapshot import NasInfo, Snapshot
from radiusd.radius.dialects import message_authenticator_ok

PROXY_STATE, MESSAGE_AUTHENTICATOR = 33, 80


class MessageAuthenticatorGuard:
    """Per-process memory of what `auto` learned, on top of what the snapshot already knows."""

    def __init__(self, log, metrics, record_seen: Callable[[NasInfo, dt.datetime], Future] | None):
        """record_seen(nas, now) stores the learned state in a thread and returns its future."""
        self.log = log
        self.metrics = metrics
        self.record_seen = record_seen
        self.learned: set[int] = set()      # NAS ids learned by this process (until the snapshot knows)
        self.stored: set[int] = set()       # ... of which the store has the record
        self.logged: set[int] = set()       # NAS ids whose "not sent" state was logged

    def is_learned(self, nas: NasInfo) -> bool:
        return nas.message_authenticator_learned or nas.id in self.learned

    def verify(self, pkt, nas: NasInfo) -> str | None:
        try:
            has_ma = bool(pkt.message_authenticator)
            if has_ma and len((OrderedDict.get(pkt, MESSAGE_AUTHENTICATOR) or [b""])[0]) != 16:
                return policy.BAD
            if pkt.code == StatusServer:
                if not has_ma:
                    return policy.MISSING
                return None if message_authenticator_ok(pkt, pkt.secret) else policy.BAD
            if pkt.code == AccountingRequest:
                if not pkt.VerifyAcctRequest():
                    return "bad_authenticator"
                if has_ma and not message_authenticator_ok(pkt, pkt.secret):
                    return policy.BAD
                return None
            learned = self.is_learned(nas)
            verdict = policy.check(nas.message_authenticator, learned, has_ma,
                                   has_ma and message_authenticator_ok(pkt, pkt.secret), PROXY_STATE in pkt)
        except Exception:
            return policy.BAD
        if verdict.learn:
            self._learn(nas)
        elif verdict.accept and not has_ma and nas.id not in self.logged:
            self.logged.add(nas.id)
            self.log.info("nas.message_authenticator", nas=nas.name, policy=nas.message_authenticator,
                          learned=False, state=policy.describe(nas.message_authenticator, False),
                          detail="Access-Request accepted without Message-Authenticator")
        return verdict.drop_reason

    def _learn(self, nas: NasInfo) -> None:
        self.learned.add(nas.id)
        self.log.warning("nas.message_authenticator", nas=nas.name, policy=nas.message_authenticator,
                         learned=True, state=policy.describe(nas.message_authenticator, True),
                         detail="first Access-Request with Message-Authenticator: required from now on")
        if self.record_seen is None:
            return
        try:
            future = self.record_seen(nas, dt.datetime.now(dt.timezone.utc))
        except Exception as exc:   # e.g. the store thread pool is already shut down
            return self._not_recorded(nas, exc)
        future.add_done_callback(lambda f, nas=nas: self._recorded(nas, f))

    def _recorded(self, nas: NasInfo, future) -> None:
        exc = future.exception()
        if exc is None:
            self.stored.add(nas.id)
        else:
            self._not_recorded(nas, exc)

    def _not_recorded(self, nas: NasInfo, exc: BaseException) -> None:
        # Not stored: remembered in this process only; the next Message-Authenticator from this
        # NAS tries again.
        self.learned.discard(nas.id)
        self.metrics.inc("radiusd_store_errors_total", operation="learn_message_authenticator")
        self.log.error("store.unreachable", operation="learn_message_authenticator", nas=nas.name,
                       error=exc.__class__.__name__)

    def snapshot_loaded(self, snapshot: Snapshot) -> None:
        """A snapshot loaded after our record was stored knows the truth (also when an operator
        has since reset the policy): stop overriding it for those NAS."""
        for nas_id in list(self.stored):
            self.stored.discard(nas_id)
            self.learned.discard(nas_id)

    def required_count(self, snapshot: Snapshot) -> int:
        """NAS whose Access-Requests must carry Message-Authenticator now (yes, or auto learned)."""
        return sum(1 for nas in snapshot.nas.values()
                   if policy.required(nas.message_authenticator, self.is_learned(nas)))

    def learned_count(self, snapshot: Snapshot) -> int:
        """NAS under auto that have sent Message-Authenticator (so now require it)."""
        return sum(1 for nas in snapshot.nas.values()
                   if nas.message_authenticator == "auto" and self.is_learned(nas))
