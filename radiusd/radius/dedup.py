"""RFC 5080 §2.2.2 duplicate detection, one cache per listening port.

Key: (source IP, source port, Identifier). An entry remembers the Request Authenticator and,
once answered, the exact reply bytes:
- same key + same authenticator, answered   -> send the cached reply again (no new decision);
- same key + same authenticator, unanswered -> drop (the first copy is still being processed);
- same key + a different authenticator      -> a new request: the old entry is purged.
Only packets that passed the authenticator checks reach the cache (RFC 5080: a packet with a
bad Message-Authenticator must not affect it). Answered entries live `ttl` seconds; requests
still in progress are forgotten after `max_request_time`. Bounded: the oldest entries go first.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

NEW, REPLAY, IN_PROGRESS = "new", "replay", "in_progress"


@dataclass(slots=True)
class _Entry:
    authenticator: bytes
    reply: bytes | None
    expires: float


class DuplicateCache:
    def __init__(self, ttl: float, max_entries: int = 65536, max_request_time: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        self.ttl = ttl
        self.max_entries = max_entries
        self.max_request_time = max_request_time
        self._clock = clock
        self._entries: OrderedDict[tuple, _Entry] = OrderedDict()
        self.conflicts = 0

    def __len__(self) -> int:
        return len(self._entries)

    def _expire(self, now: float) -> None:
        # entries are kept in order of last change; expire from the front while stale
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if entry.expires > now and len(self._entries) <= self.max_entries:
                break
            del self._entries[key]

    def check(self, key: tuple, authenticator: bytes, now: float | None = None) -> tuple[str, bytes | None]:
        """(NEW, None) and the request is now in progress; (REPLAY, reply); or (IN_PROGRESS, None).
        `now`: monotonic seconds, read by the caller (the edge reads the clock once per packet)."""
        if now is None:
            now = self._clock()
        entry = self._entries.get(key)
        if entry is not None and entry.expires > now:
            if entry.authenticator == authenticator:
                return (REPLAY, entry.reply) if entry.reply is not None else (IN_PROGRESS, None)
            self.conflicts += 1
        if entry is not None:
            del self._entries[key]
        self._entries[key] = _Entry(authenticator, None, now + self.max_request_time)
        self._expire(now)
        return NEW, None

    def complete(self, key: tuple, authenticator: bytes, reply: bytes, now: float | None = None) -> None:
        """Remember the reply sent for this request, for `ttl` seconds from `now`."""
        entry = self._entries.get(key)
        if entry is None or entry.authenticator != authenticator:
            return  # purged by a newer request meanwhile
        entry.reply = reply
        entry.expires = (self._clock() if now is None else now) + self.ttl
        self._entries.move_to_end(key)

    def forget(self, key: tuple, authenticator: bytes) -> None:
        """No reply was sent (dropped, not recorded): a retransmission is processed afresh."""
        entry = self._entries.get(key)
        if entry is not None and entry.authenticator == authenticator:
            del self._entries[key]
