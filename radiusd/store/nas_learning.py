"""What the server learns about a NAS at run time: today, that it sends Message-Authenticator.

Written once per NAS (the first valid Message-Authenticator under policy `auto`), off the event
loop. The write bumps the store version so that every worker and server reloads its snapshot
and requires Message-Authenticator from that NAS too; the record survives restarts. Setting the
NAS's policy again (`radiusd nas update --message-authenticator ...`) clears it.
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from radiusd.db import bump_store_version
from radiusd.models import Nas


def record_message_authenticator_seen(sessions: sessionmaker[Session], nas_id: int, now: dt.datetime) -> bool:
    """Record that NAS `nas_id` sent a valid Message-Authenticator. True if this call recorded it,
    False if it was already recorded (by another worker or server) or the NAS is no longer auto."""
    with sessions.begin() as session:
        changed = session.execute(
            update(Nas)
            .where(Nas.id == nas_id, Nas.message_authenticator == "auto", Nas.message_authenticator_seen_at.is_(None))
            .values(message_authenticator_seen_at=now)
        ).rowcount
        if changed:
            bump_store_version(session)
        return bool(changed)
