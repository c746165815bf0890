"""The JSON-friendly form of values, shared by every layer (audit log, CLI output, web, API).

How money is written, in every command, table or JSON, page and audit entry: the store keeps 6
decimal places on both backends, and nothing shown is rounded. An amount (balance, credit limit,
cost, fee, refund) has at least cents and the places it needs beyond them: 100.00, 0.0125,
1.583333. A rate (price per minute) always has all 6: 0.012500.
"""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

from radiusd.models import MONEY_SCALE

RATE_FIELDS = frozenset({"price_per_minute"})
_SCALE = Decimal(1).scaleb(-MONEY_SCALE)


def amount_text(value) -> str:
    text = format(Decimal(value).quantize(_SCALE), "f")
    whole, _, places = text.partition(".")
    places = places.rstrip("0")
    return f"{whole}.{places.ljust(2, '0')}"


def rate_text(value) -> str:
    return format(Decimal(value).quantize(_SCALE), "f")


def plain(value, key: str | None = None):
    """A JSON-friendly copy: money as text in its one format (a rate when `key` names a rate field,
    else an amount), datetimes as ISO-8601, containers as lists/dicts."""
    if isinstance(value, Decimal):
        return rate_text(value) if key in RATE_FIELDS else amount_text(value)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v, key) for v in value]
    if isinstance(value, dict):
        return {k: plain(v, k) for k, v in value.items()}
    return value
