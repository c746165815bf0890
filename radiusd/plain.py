"""The JSON-friendly form of values, shared by every layer (audit log, CLI output, web)."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal


def plain(value):
    """A JSON-friendly copy: Decimal as exact text, datetimes as ISO-8601, containers as lists/dicts."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value
