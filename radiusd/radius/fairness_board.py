"""What each worker's fairness ceiling knows of the others: a board in memory shared by the
supervisor's forked workers (an anonymous shared mmap made before the first fork).

The kernel hashes each flow (source address and port) to one worker, so the worker that carries
part of a flood may never hear the NAS it hurts: that NAS's flows went to the other worker, and
both share the machine's CPUs. Every ADAPT_WINDOW each worker posts the NAS it heard lately
(FairQueue.heard: NAS key, when last heard, what it sent per second) and reads the other
workers' posts for its next look (FairQueue.observe's `elsewhere`). The policy stays in
radiusd.radius.fairness; this is only the carrying.

Layout: one slot per worker process, two per worker index (a successor and its predecessor serve
side by side during a reload: each posts in its own slot, `slot` = 2 × index + generation % 2).
A slot is a seqlock: an odd sequence number while its worker writes, so a reader that meets one,
or a number that moved while it read, skips that slot for this look (it is read again at the next, ADAPT_WINDOW later).
"""
from __future__ import annotations

import mmap
import struct

ENTRIES = 32                          # NAS per post: the busiest ones, then the latest heard
_HEADER = struct.Struct("<QdI4x")     # sequence, posted at (monotonic s), entries
_ENTRY = struct.Struct("<qdd")        # NAS key (-1: sources in no NAS), last heard, offered/s
SLOT = _HEADER.size + ENTRIES * _ENTRY.size
_NO_NAS = -1


class FairnessBoard:
    """Made by the supervisor before it forks; each worker posts to its slot and reads the rest.
    CLOCK_MONOTONIC is one clock for every process of the machine, so times compare across them."""

    def __init__(self, workers: int):
        self.slots = 2 * workers
        self._mem = mmap.mmap(-1, self.slots * SLOT)   # anonymous and MAP_SHARED: inherited by fork

    def slot(self, slot: int) -> "BoardSlot":
        """What one worker process holds: its own slot to post to, the others to read."""
        return BoardSlot(self, slot)

    def post(self, slot: int, now: float, heard: list) -> None:
        base = slot * SLOT
        (seq,) = struct.unpack_from("<Q", self._mem, base)
        struct.pack_into("<Q", self._mem, base, seq + 1)   # odd: being written
        entries = heard[:ENTRIES]
        for i, (key, last, rate) in enumerate(entries):
            _ENTRY.pack_into(self._mem, base + _HEADER.size + i * _ENTRY.size,
                             _NO_NAS if key is None else key, last, rate)
        _HEADER.pack_into(self._mem, base, seq + 2, now, len(entries))

    def read(self, own_slot: int) -> list:
        """The other slots' posts: (NAS key, last heard, offered/s, posted at) each."""
        found = []
        for slot in range(self.slots):
            if slot == own_slot:
                continue
            base = slot * SLOT
            seq, posted, count = _HEADER.unpack_from(self._mem, base)
            if seq == 0 or seq & 1:
                continue   # never posted, or being written
            entries = [_ENTRY.unpack_from(self._mem, base + _HEADER.size + i * _ENTRY.size)
                       for i in range(min(count, ENTRIES))]
            if struct.unpack_from("<Q", self._mem, base)[0] != seq:
                continue   # written while we read
            found.extend((None if key == _NO_NAS else key, last, rate, posted) for key, last, rate in entries)
        return found


class BoardSlot:
    __slots__ = ("board", "slot")

    def __init__(self, board: FairnessBoard, slot: int):
        self.board, self.slot = board, slot

    def post(self, now: float, heard: list) -> None:
        self.board.post(self.slot, now, heard)

    def read(self) -> list:
        return self.board.read(self.slot)
