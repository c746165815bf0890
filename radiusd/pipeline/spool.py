"""The accounting spool: an append-only, fsync'ed local journal for when the store can't commit.

RFC 2866 §4.1: an Accounting-Response may only be sent once the record is stored. When the store
is unreachable the writer appends the records here, fsyncs, and only then acknowledges; the
replayer feeds them to the store in order when it is back (the FreeRADIUS detail-file /
buffered-sql pattern). The files (journal, work file, dead letters, lock) are described in the
README ("Durability"). A record half-written when the process died (no trailing newline) was never
acknowledged: it is cut off when the spool is opened again.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import fcntl
import json
import os
import threading
from pathlib import Path
from typing import Iterator

from radiusd.core.facts import AcctFacts

JOURNAL = "journal.jsonl"
WORK = "journal.work"
DEAD_LETTER = "dead-letter.jsonl"
LOCK = ".lock"

_TIME_FIELDS = {f.name for f in dataclasses.fields(AcctFacts) if "datetime" in str(f.type)}
_FIELDS = {f.name for f in dataclasses.fields(AcctFacts)}


class SpoolBusy(RuntimeError):
    """Another process already owns this spool directory."""


def facts_from_dict(data: dict) -> AcctFacts:
    # JSON has no tuples: the facts' sequences are tuples
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in _FIELDS}
    for name in _TIME_FIELDS:
        if values.get(name) is not None:
            values[name] = dt.datetime.fromisoformat(values[name])
    return AcctFacts(**values)


def encode(seq: int, facts: AcctFacts, **extra) -> bytes:
    data = {name: getattr(facts, name) for name in _FIELDS}
    for name in _TIME_FIELDS:
        if data[name] is not None:
            data[name] = data[name].astimezone(dt.timezone.utc).isoformat()
    return (json.dumps({"seq": seq, "facts": data, **extra}, separators=(",", ":"), sort_keys=True) + "\n").encode()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs(path: Path) -> None:
    """mkdir -p, fsync'ing the parent of every directory created: the journal and dead-letter
    files inside hold acknowledged records, so their directory entries must survive a crash too."""
    if not path.is_dir():
        _make_dirs(path.parent)
        path.mkdir(exist_ok=True)
        _fsync_dir(path.parent)


def _append(path: Path, data: bytes) -> None:
    """Append and fsync (and the directory when the file is new); on failure cut what was
    written, so no half record is left behind (it was never acknowledged)."""
    created = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError:
            os.ftruncate(fd, start)
            raise
    finally:
        os.close(fd)
    if created:
        _fsync_dir(path.parent)


def _cut_partial_tail(path: Path) -> None:
    """Drop bytes after the last newline: a write that died before its fsync, never acked."""
    size = path.stat().st_size if path.exists() else 0
    if size == 0:
        return
    with open(path, "rb+") as fh:
        fh.seek(size - 1)
        if fh.read(1) != b"\n":   # the whole file is read only then
            fh.truncate(path.read_bytes().rfind(b"\n") + 1)
            os.fsync(fh.fileno())


def _count_lines(path: Path) -> tuple[int, int]:
    """(lines, highest seq) of a journal file."""
    if not path.exists():
        return 0, 0
    lines = top = 0
    with open(path, "rb") as fh:
        for raw in fh:
            lines += 1
            try:
                top = max(top, int(json.loads(raw).get("seq", 0)))
            except (ValueError, AttributeError, TypeError):
                pass
    return lines, top


class Spool:
    """One process's spool directory. Not shared: the .lock flock makes a second owner fail."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        _make_dirs(self.path)
        self.journal = self.path / JOURNAL
        self.work = self.path / WORK
        self.dead = self.path / DEAD_LETTER
        self._lock_fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise SpoolBusy(f"spool {self.path} is in use by another radiusd process "
                            "(give each process its own [spool] path)") from None
        self._mutex = threading.Lock()
        _cut_partial_tail(self.journal)
        _cut_partial_tail(self.work)
        self._journal_lines, journal_top = _count_lines(self.journal)
        work_lines, work_top = _count_lines(self.work)
        self._depth = self._journal_lines + work_lines
        self._seq = max(journal_top, work_top, _count_lines(self.dead)[1])

    def append(self, records: list[AcctFacts]) -> list[int]:
        """Append records and fsync; returns their sequence numbers. Raises OSError on failure."""
        if not records:
            return []
        with self._mutex:
            seqs = list(range(self._seq + 1, self._seq + 1 + len(records)))
            _append(self.journal, b"".join(encode(seq, facts) for seq, facts in zip(seqs, records)))
            self._seq = seqs[-1]
            self._depth += len(records)
            self._journal_lines += len(records)
            return seqs

    def dead_letter(self, items: list[tuple[AcctFacts, str]]) -> None:
        """Keep records the store refused for data reasons, with the error. Raises OSError."""
        if not items:
            return
        with self._mutex:
            first = self._seq + 1
            _append(self.dead, b"".join(encode(first + i, facts, error=error[:500])
                                        for i, (facts, error) in enumerate(items)))
            self._seq += len(items)

    def depth(self) -> int:
        """Records waiting to be replayed."""
        return self._depth

    def has_pending(self) -> bool:
        return self._depth > 0 or self.work.exists() or self._journal_lines > 0

    def claim(self) -> Path | None:
        """The file to replay next: an unfinished work file, else the journal renamed to one."""
        with self._mutex:
            if self.work.exists():
                return self.work
            if self._journal_lines == 0 and not (self.journal.exists() and self.journal.stat().st_size):
                return None
            os.replace(self.journal, self.work)
            _fsync_dir(self.path)
            self._journal_lines = 0
            return self.work

    def read(self, path: Path, offset: int = 0) -> Iterator[tuple[int, int, AcctFacts | None, bytes]]:
        """(offset after the line, seq, facts or None if unreadable, raw line) from `offset` on."""
        with open(path, "rb") as fh:
            fh.seek(offset)
            for raw in fh:
                offset += len(raw)
                try:
                    data = json.loads(raw)
                    yield offset, int(data.get("seq", 0)), facts_from_dict(data["facts"]), raw
                except (ValueError, KeyError, TypeError, AttributeError):
                    yield offset, 0, None, raw

    def replayed(self, count: int) -> None:
        """`count` records of the work file are committed to the store."""
        with self._mutex:
            self._depth = max(0, self._depth - count)

    def finish(self, path: Path) -> None:
        """Every record of the work file is committed: delete it."""
        with self._mutex:
            path.unlink(missing_ok=True)
            _fsync_dir(self.path)
            self._depth = self._journal_lines

    def dead_letter_raw(self, raw: bytes, error: str) -> None:
        with self._mutex:
            line = json.dumps({"raw": raw.decode("utf-8", "replace").rstrip("\n"), "error": error}) + "\n"
            _append(self.dead, line.encode())

    def close(self) -> None:
        if self._lock_fd is not None:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            finally:
                os.close(self._lock_fd)
                self._lock_fd = None
