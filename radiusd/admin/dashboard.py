"""Traffic figures for the dashboard: calls in progress, calls per second, ASR and ACD, top clients.

Counted over originating legs (the calls clients send us), from the CDRs and the open calls.
The time is passed in, so the same store gives the same figures whenever they are asked for.
ASR = answered / attempted (%), ACD = the answered calls' average duration (seconds).
"""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from radiusd.admin import fields as F
from radiusd.models import ActiveCall, Cdr, Client

ORIG = "orig"


def asr_acd(attempts: int, answered: int, answered_seconds: int) -> tuple[float | None, float | None]:
    """(ASR in %, ACD in seconds); None where there is nothing to divide."""
    asr = 100.0 * answered / attempts if attempts else None
    acd = answered_seconds / answered if answered else None
    return asr, acd


def traffic(session: Session, now: dt.datetime, *, window: int = 3600, buckets: int = 12,
            top_window: int = 86400, top: int = 5) -> dict:
    """Figures over the last `window` seconds, a per-bucket series for a chart, top clients over `top_window`."""
    since = now - dt.timedelta(seconds=window)
    open_calls = dict(session.execute(
        select(ActiveCall.state, func.count()).where(ActiveCall.leg == ORIG).group_by(ActiveCall.state)).all())
    minute_ago = now - dt.timedelta(seconds=60)
    started_cdrs = session.scalar(select(func.count()).select_from(Cdr).where(
        Cdr.leg == ORIG, Cdr.disconnect_time >= minute_ago,
        func.coalesce(Cdr.setup_time, Cdr.connect_time, Cdr.disconnect_time) >= minute_ago)) or 0
    started_open = session.scalar(select(func.count()).select_from(ActiveCall).where(
        ActiveCall.leg == ORIG, ActiveCall.created_at >= minute_ago)) or 0

    answered = Cdr.result == "success"
    step = window / buckets
    edges = [since + dt.timedelta(seconds=step * i) for i in range(buckets + 1)]
    columns = [func.count(), func.sum(case((answered, 1), else_=0)),
               func.sum(case((answered, Cdr.duration), else_=0))]
    for i in range(buckets):
        inside = (Cdr.disconnect_time >= edges[i]) & (Cdr.disconnect_time < edges[i + 1])
        columns.append(func.sum(case((inside & answered, 1), else_=0)))
        columns.append(func.sum(case((inside & ~answered, 1), else_=0)))
    row = session.execute(select(*columns).where(Cdr.leg == ORIG, Cdr.disconnect_time >= since,
                                                 Cdr.disconnect_time < now)).one()
    attempts, ok, ok_seconds = int(row[0] or 0), int(row[1] or 0), int(row[2] or 0)
    asr, acd = asr_acd(attempts, ok, ok_seconds)
    series = [{"start": edges[i], "answered": int(row[3 + 2 * i] or 0), "failed": int(row[4 + 2 * i] or 0)}
              for i in range(buckets)]

    top_since = now - dt.timedelta(seconds=top_window)
    seconds = func.sum(Cdr.billed_seconds)
    top_rows = session.execute(
        select(Client.id, Client.name, Client.currency, func.count(), seconds, func.sum(Cdr.cost))
        .join(Client, Client.id == Cdr.client_id)
        .where(Cdr.leg == ORIG, Cdr.disconnect_time >= top_since, Cdr.disconnect_time < now)
        .group_by(Client.id, Client.name, Client.currency).order_by(seconds.desc()).limit(top)).all()
    top_clients = [{"id": cid, "name": name, "currency": currency, "calls": calls,
                    "minutes": round((secs or 0) / 60, 1), "cost": F.money_out(Decimal(cost or 0))}
                   for cid, name, currency, calls, secs, cost in top_rows]
    return {
        "now": now, "window": window, "active_calls": open_calls.get("active", 0),
        "reserved": open_calls.get("reserved", 0), "calls_per_second": round((started_cdrs + started_open) / 60, 2),
        "attempts": attempts, "answered": ok, "asr": asr, "acd": acd, "series": series,
        "top_window": top_window, "top_clients": top_clients,
    }
