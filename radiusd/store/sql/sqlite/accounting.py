"""Accounting (radiusd.store.accounting) on SQLite: plain statements, one row at a time; the
transaction holds the database lock (BEGIN IMMEDIATE), so no row locks."""
from __future__ import annotations

from radiusd.store.sql.accounting_shared import loads, writes

STATEMENTS = {**loads(lock="", skip_locked="", client_lock=""), **writes()}
