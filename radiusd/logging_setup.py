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
import logging
import os
import sys
import threading

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "warn": logging.WARNING, "error": logging.ERROR, "critical": logging.CRITICAL}


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


class LineLoggerFactory:
    def __init__(self, stream):
        self._logger = LineLogger(stream)

    def __call__(self, *_args) -> LineLogger:
        return self._logger


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
    processors = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if context:
        processors.append(_bind(context))
    processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer(default=str)]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=LineLoggerFactory(stream),
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
