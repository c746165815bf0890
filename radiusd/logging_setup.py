"""structlog configuration: one JSON object per line (stderr by default).

Never log a password or a shared secret: log lines carry names, numbers and reasons only.
"""
from __future__ import annotations

import logging
import sys

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "warn": logging.WARNING, "error": logging.ERROR, "critical": logging.CRITICAL}


def configure(level: str = "info", stream=None, **context) -> None:
    """JSON lines with timestamp (UTC, ISO-8601) and level; `context` is bound to every line."""
    numeric = _LEVELS.get(str(level).lower(), logging.INFO)
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
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=stream or sys.stderr)


def _bind(context: dict):
    def processor(_logger, _name, event_dict):
        for key, value in context.items():
            event_dict.setdefault(key, value)
        return event_dict
    return processor


def get_logger(name: str = "radiusd"):
    return structlog.get_logger(name)
