"""Shared seed data and packet builders for the accounting/capacity/spool tests (no tests here).

A small carrier: customer `acme` (balance 100 USD, no credit, capacity 2) sending calls from
198.51.100.10 through gateway gw-a; login account `alice` (client `kamco`) behind a Kamailio
NAS; vendor `vendorco` terminating at 203.0.113.5 behind gw-b.

Retail rates (USD/min): 44 -> 0.10, minimum 30 s, interval 6 s; 4420 -> 0.06 per 60 s with a
0.05 connection fee and 5 s grace; 33 -> only effective from 2030 (so no rate today).
Vendor rates: 44 -> 0.04 per second.
"""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import select

from radiusd.config import Settings
from radiusd.core.decision import Accept, CallPlan, Reject
from radiusd.core.facts import AcctFacts, AuthFacts
from radiusd.models import Account, AccountNetwork, ActiveCall, Cdr, Client, Nas, Rate, RateTable
from radiusd.store.accounting import apply
from radiusd.store.capacity import reserve_batch
from radiusd.store.sealing import seal_column
from radiusd.store.snapshot_loader import load_snapshot

T0 = dt.datetime(2026, 11, 25, 20, 0, 0, tzinfo=dt.timezone.utc)
EPOCH = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
CUSTOMER_IP = "198.51.100.10"
VENDOR_IP = "203.0.113.5"


def seed(sessions, capacity: int | None = 2, balance: str = "100", credit_limit: str | None = "0") -> dict:
    """Create the carrier above; returns ids by name."""
    with sessions() as s, s.begin():
        retail = RateTable(name="retail", currency="USD")
        vendor = RateTable(name="vendor", currency="USD")
        s.add_all([retail, vendor])
        s.flush()
        s.add_all([
            Rate(rate_table_id=retail.id, prefix="44", price_per_minute=Decimal("0.10"), minimum_seconds=30,
                 interval_seconds=6, effective_from=EPOCH),
            Rate(rate_table_id=retail.id, prefix="4420", price_per_minute=Decimal("0.06"),
                 connection_fee=Decimal("0.05"), interval_seconds=60, grace_seconds=5, effective_from=EPOCH),
            Rate(rate_table_id=retail.id, prefix="33", price_per_minute=Decimal("0.20"),
                 effective_from=dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)),
            Rate(rate_table_id=vendor.id, prefix="44", price_per_minute=Decimal("0.04"), effective_from=EPOCH),
        ])
        gwa = Nas(name="gw-a", address="10.0.0.1/32", secret="s3cret-a", dialect="cisco")
        gwb = Nas(name="gw-b", address="10.0.0.2/32", secret="s3cret-b", dialect="cisco")
        kam = Nas(name="kam", address="10.0.0.3/32", secret="s3cret-k", dialect="kamailio")
        s.add_all([gwa, gwb, kam])
        for row in (gwa, gwb, kam):
            seal_column(s, row, "secret")  # as the admin layer stores it
        acme = Client(name="acme", balance=Decimal(balance),
                      credit_limit=None if credit_limit is None else Decimal(credit_limit),
                      capacity=capacity, orig_rate_table_id=retail.id)
        kamco = Client(name="kamco", balance=Decimal("50"), credit_limit=Decimal("0"), orig_rate_table_id=retail.id)
        vendorco = Client(name="vendorco", balance=Decimal("0"), term_rate_table_id=vendor.id)
        s.add_all([acme, kamco, vendorco])
        s.flush()
        acme_gw = Account(client_id=acme.id, name="acme-gw", ident_by="ip",
                          networks=[AccountNetwork(cidr=f"{CUSTOMER_IP}/32")])
        alice = Account(client_id=kamco.id, name="alice", ident_by="name", password="alice-pw")
        vendor_out = Account(client_id=vendorco.id, name="vendor-out", ident_by="ip", orig_enabled=False,
                             term_enabled=True, networks=[AccountNetwork(cidr=f"{VENDOR_IP}/32")])
        s.add_all([acme_gw, alice, vendor_out])
        seal_column(s, alice, "password")
        s.flush()
        return {"gw-a": gwa.id, "gw-b": gwb.id, "kam": kam.id, "acme": acme.id, "kamco": kamco.id,
                "vendorco": vendorco.id, "acme-gw": acme_gw.id, "alice": alice.id, "vendor-out": vendor_out.id,
                "retail": retail.id, "vendor": vendor.id}


def snapshot_of(sessions):
    with sessions() as s:
        return load_snapshot(s)


def feed(sessions, snapshot, facts: AcctFacts, now: dt.datetime | None = None):
    """Apply one accounting packet in its own transaction (as a group of one)."""
    with sessions() as s, s.begin():
        return apply(s, facts, snapshot, now or facts.event_time or T0)


def acct(nas_id: int, status: str, session_id: str, leg: str = "orig", **kw) -> AcctFacts:
    return AcctFacts(nas_id=nas_id, status=status, acct_session_id=session_id, leg_key=f"{nas_id}:{session_id}",
                     leg=leg, **kw)


def auth(nas_id: int, call_id: str, called: str = "441612345678", caller_address: str = CUSTOMER_IP) -> AuthFacts:
    return AuthFacts(nas_id=nas_id, caller_address=caller_address, calling_number="15551230000",
                     called_number=called, call_id=call_id)


def cdrs(sessions, **where) -> list[Cdr]:
    with sessions() as s:
        stmt = select(Cdr).order_by(Cdr.id)
        for key, value in where.items():
            stmt = stmt.where(getattr(Cdr, key) == value)
        return list(s.scalars(stmt))


def open_calls(sessions, **where) -> list[ActiveCall]:
    with sessions() as s:
        stmt = select(ActiveCall).order_by(ActiveCall.id)
        for key, value in where.items():
            stmt = stmt.where(getattr(ActiveCall, key) == value)
        return list(s.scalars(stmt))


def balance(sessions, client_id: int) -> Decimal:
    with sessions() as s:
        return s.scalar(select(Client.balance).where(Client.id == client_id))


def reserve_call(sessions, plan: CallPlan, now: dt.datetime, settings: Settings) -> Accept | Reject:
    """One call through the store's admission (reserve_batch, as the batcher runs it); store errors raise."""
    [result] = reserve_batch(sessions, [(plan, now)], settings)
    if isinstance(result, BaseException):
        raise result
    return result
