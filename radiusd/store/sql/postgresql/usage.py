"""Repair of the usage counters (radiusd.store.sweeper) on PostgreSQL: rows locked in id order."""
from __future__ import annotations

from radiusd.store.sql.usage_shared import usage

STATEMENTS = usage(lock=" FOR NO KEY UPDATE")
