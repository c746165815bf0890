"""Repair of the usage counters (radiusd.store.sweeper) on PostgreSQL: rows locked in id order."""
from radiusd.store.sql.usage_shared import usage

STATEMENTS = usage(lock=" FOR NO KEY UPDATE")
