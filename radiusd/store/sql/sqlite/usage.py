"""Repair of the usage counters (radiusd.store.sweeper) on SQLite: BEGIN IMMEDIATE holds the database."""
from radiusd.store.sql.usage_shared import usage

STATEMENTS = usage(lock="")
