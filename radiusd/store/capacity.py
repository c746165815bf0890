"""Capacity and money at Access-Request time: one atomic check-and-reserve per call.

`reserve_call` is the only place an Access-Accept is decided against live numbers. In ONE
transaction it locks the client's row, counts what the client and account already have open
(active calls + unexpired reservations, originating legs only), reads the balance, asks the pure
`radiusd.core.authorize.admit` and, on Accept, records a reservation that the later
Accounting-Start takes over (radiusd.store.accounting). Because every reserve for a client runs
under that client's lock, N radiusd processes sharing one PostgreSQL never admit more calls than
the capacity, nor spend the same balance twice.

- PostgreSQL: `SELECT ... FOR UPDATE` on the client row; the counts are read by a *new*
  statement afterwards, so under READ COMMITTED they see every reservation committed by whoever
  held the lock before us.
- SQLite: radiusd.db begins every transaction with BEGIN IMMEDIATE, which already serialises
  writers on the whole database (FOR UPDATE is ignored there).

Store errors (PostgreSQL down ...) propagate: the edge then sends no answer and the switch
retries or fails over, which is what a switch expects from an unreachable RADIUS server.
"""
from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from sqlalchemy import and_, func, or_, select, type_coerce, update
from sqlalchemy.orm import Session, sessionmaker

from radiusd.config import Settings
from radiusd.core.decision import Accept, CallPlan, Reject, Usage
from radiusd.models import ActiveCall, Client, Money


def reservation_key(nas_id: int, call_id: str) -> str:
    """leg_key of the reservation made at Access-Accept; a Start with the same call id takes it."""
    return f"auth:{nas_id}:{call_id}"


def open_legs_filter(now: dt.datetime, leg: str = "orig"):
    """Rows that count against capacity at `now`: started calls and unexpired reservations."""
    return and_(
        ActiveCall.leg == leg,
        or_(ActiveCall.state == "active", and_(ActiveCall.state == "reserved", ActiveCall.expires_at > now)),
    )


def read_usage(session: Session, client_id: int, account_id: int, now: dt.datetime,
               balance: Decimal, exclude_key: str | None = None) -> Usage:
    """The client's live numbers. Call with the client's row locked (see module docstring)."""
    conditions = [ActiveCall.client_id == client_id, open_legs_filter(now)]
    if exclude_key is not None:
        conditions.append(ActiveCall.leg_key != exclude_key)
    row = session.execute(
        select(
            func.count(ActiveCall.id),
            type_coerce(func.coalesce(func.sum(ActiveCall.max_cost), 0), Money()),
            func.count(ActiveCall.id).filter(ActiveCall.account_id == account_id),
        ).where(*conditions)
    ).one()
    client_calls, exposure, account_calls = row
    return Usage(balance=balance, account_calls=int(account_calls), client_calls=int(client_calls),
                 exposure=Decimal(exposure))


def terminator_usage(session: Session, account_ids, now: dt.datetime) -> dict[int, int]:
    """Open terminating legs per terminator account (for routing decisions and `calls list`)."""
    ids = list(account_ids)
    if not ids:
        return {}
    rows = session.execute(
        select(ActiveCall.account_id, func.count(ActiveCall.id))
        .where(ActiveCall.account_id.in_(ids), open_legs_filter(now, leg="term"))
        .group_by(ActiveCall.account_id)
    ).all()
    return {account_id: int(count) for account_id, count in rows}


def reserve_call(sessions: sessionmaker[Session], plan: CallPlan, now: dt.datetime,
                 settings: Settings) -> Accept | Reject:
    """Check capacity and money for `plan` and, on Accept, hold a reservation, atomically.

    A repeated Access-Request for the same call id on the same NAS (re-auth, retransmission
    after our reply was lost) refreshes its reservation instead of counting twice.
    """
    from radiusd.core.authorize import admit  # core helper; imported late to keep import order free

    from radiusd.store.accounting import fit_key

    call_id = fit_key(plan.call_id) if plan.call_id else f"noid-{uuid.uuid4().hex}"
    key = reservation_key(plan.nas_id, call_id)
    with sessions() as session, session.begin():
        balance = session.execute(
            select(Client.balance).where(Client.id == plan.client.id).with_for_update()
        ).scalar_one_or_none()
        if balance is None:  # client deleted since the snapshot was built
            from radiusd.core.reasons import RejectReason

            return Reject(RejectReason.UNKNOWN_ACCOUNT, plan.account.id, plan.client.id, "client not in store")
        usage = read_usage(session, plan.client.id, plan.account.id, now, balance, exclude_key=key)
        decision = admit(plan, usage, settings.max_call_duration)
        if not isinstance(decision, Accept):
            return decision
        values = dict(
            call_id=call_id,
            acct_session_id=None,
            nas_id=plan.nas_id,
            leg="orig",
            state="reserved",
            account_id=plan.account.id,
            client_id=plan.client.id,
            caller=(plan.calling_number or "")[:64],
            called=(plan.called_number or "")[:64],
            rate_table_id=plan.rate_table.id,
            prefix=plan.rate.prefix,
            max_cost=decision.max_cost,
            max_duration=decision.max_duration,
            created_at=now,
            expires_at=now + dt.timedelta(seconds=settings.reservation_ttl),
            started_at=None,
            last_seen_at=now,
            session_seconds=0,
        )
        refreshed = session.execute(update(ActiveCall).where(ActiveCall.leg_key == key).values(**values)).rowcount
        if not refreshed:
            session.add(ActiveCall(leg_key=key, **values))
        return decision
