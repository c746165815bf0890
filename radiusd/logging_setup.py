"""structlog configuration: one JSON object per line (stderr by default).

Each line leaves the process in one write(2) on the file descriptor, bypassing Python's
buffers: several worker processes share one stderr, and a line written in pieces (a buffer
flushed mid-line, the newline written apart) could be joined with another worker's line.
Records of the standard `logging` module (asyncio, libraries) and Python warnings go out the
same way, as JSON.

Never log a password or a shared secret: log lines carry names, numbers and reasons only.
"""
from __future__ import annotations

import io
import json
import logging
import os
import sys
import threading
import time

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "warn": logging.WARNING, "error": logging.ERROR, "critical": logging.CRITICAL}
# One encoder made once: json.dumps(..., default=str) builds a new JSONEncoder on every call.
_encode = json.JSONEncoder(default=str, ensure_ascii=True).encode
_second: list = [None, ""]   # [whole second, its "YYYY-MM-DDTHH:MM:SS"]: one strftime per second


def timestamp() -> str:
    """UTC now as ISO-8601 with microseconds, e.g. 2026-12-01T17:00:23.123456Z (every line's
    `timestamp`; the date part is formatted once per second, not once per line)."""
    now = time.time()
    second = int(now)
    if second != _second[0]:
        _second[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second[0] = second
    return f"{_second[1]}.{int((now - second) * 1e6):06d}Z"


_METHOD_LEVEL = {"warn": "warning", "exception": "error"}   # as structlog's add_log_level names them


def _stamp(_logger, method_name, event_dict):
    event_dict["level"] = _METHOD_LEVEL.get(method_name, method_name)
    event_dict["timestamp"] = timestamp()
    return event_dict


def _render(_logger, _name, event_dict) -> str:
    return _encode(event_dict)


class LineLogger:
    """A structlog logger writing each rendered line with a single os.write (whole line or, for
    a stream without a file descriptor such as StringIO, one stream.write). Without a stream it
    writes to whatever sys.stderr is at the time of the line."""

    def __init__(self, stream=None):
        self._stream = stream
        self._lock = threading.Lock()  # threads of one process: finish a (rare) partial write first

    def msg(self, message: str) -> None:
        stream = self._stream or sys.stderr
        data = (message + "\n").encode("utf-8", "replace")
        try:
            fd = stream.fileno()
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            fd = None
        with self._lock:
            if fd is None:
                stream.write(data.decode("utf-8"))
                stream.flush()
                return
            view = memoryview(data)
            while view:  # a regular file or a pipe takes a line in one write; a signal may cut it short
                view = view[os.write(fd, view):]

    log = debug = info = warn = warning = error = err = critical = fatal = exception = failure = msg


class _StdlibToJson(logging.Handler):
    """Standard-library log records as JSON lines through structlog (same writer, same format)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = {"logger": record.name}
            if record.exc_info:
                fields["exc_info"] = record.exc_info
            structlog.get_logger(record.name).log(record.levelno, record.getMessage().rstrip(), **fields)
        except Exception:
            self.handleError(record)


def configure(level: str = "info", stream=None, **context) -> None:
    """JSON lines with timestamp (UTC, ISO-8601) and level; `context` is bound to every line."""
    numeric = _LEVELS.get(str(level).lower(), logging.INFO)
    try:
        (stream or sys.stderr).flush()  # what Python buffered before goes out before our direct writes
    except (AttributeError, OSError, ValueError):
        pass
    processors = [structlog.contextvars.merge_contextvars, _stamp]
    if context:
        processors.append(_bind(context))
    processors += [structlog.processors.format_exc_info, _render]
    line_logger = LineLogger(stream)
    _lines.update(level=numeric, context=dict(context), write=line_logger.msg)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=lambda *_args: line_logger,
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _StdlibToJson):
            root.removeHandler(handler)
    root.addHandler(_StdlibToJson())
    root.setLevel(max(numeric, logging.WARNING))
    logging.captureWarnings(True)   # Python warnings too: a JSON line, not free text on stderr


def _bind(context: dict):
    def processor(_logger, _name, event_dict):
        for key, value in context.items():
            event_dict.setdefault(key, value)
        return event_dict
    return processor


def get_logger(name: str = "radiusd"):
    return structlog.get_logger(name)


_lines: dict = {}   # what configure() set: level, context, write; empty until it is called


def log_line(level: str, event: str, fields: dict) -> None:
    """One log line with `fields`, the same JSON as structlog's (`get_logger().<level>(event,
    **fields)`: the fields, then event, level, timestamp, the configured context), written
    without structlog's processor chain: this is the per-request line (auth.decision,
    accounting.recorded), paid for on every packet. `fields` is taken over (changed in place).
    Lines with exc_info, or before configure(), go through structlog."""
    config = _lines
    if not config or "exc_info" in fields:
        getattr(get_logger(), level)(event, **fields)
        return
    if _LEVELS[level] < config["level"]:
        return
    fields["event"] = event
    fields["level"] = level
    fields["timestamp"] = timestamp()
    for key, value in config["context"].items():
        fields.setdefault(key, value)
    config["write"](_encode(fields))
