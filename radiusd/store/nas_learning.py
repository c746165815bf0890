"""What the server learns about a NAS at run time: today, that it sends Message-Authenticator.

Written once per NAS (the first valid Message-Authenticator under policy `auto`), off the event
loop; the record survives restarts. The write does not move the store version: a snapshot roll
would replace every worker for one flag (and, under load, cost the datagrams queued in the old
workers' sockets). Every worker and server reads the learned set instead with its store poll
(`learned_message_authenticator`, once per `snapshot_poll_seconds`). Setting the NAS's policy
again (`radiusd nas update --message-authenticator ...`) clears it.
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from radiusd.models import Nas


def record_message_authenticator_seen(sessions: sessionmaker[Session], nas_id: int, now: dt.datetime) -> None:
    """Record that NAS `nas_id` sent a valid Message-Authenticator (once: no-op if recorded already
    or the NAS is no longer auto)."""
    with sessions.begin() as session:
        session.execute(
            update(Nas)
            .where(Nas.id == nas_id, Nas.message_authenticator == "auto", Nas.message_authenticator_seen_at.is_(None))
            .values(message_authenticator_seen_at=now)
        )


def learned_message_authenticator(session: Session) -> set[int]:
    """Ids of the `auto` NAS that have sent a valid Message-Authenticator (so now require it)."""
    return set(session.scalars(select(Nas.id).where(Nas.message_authenticator == "auto",
                                                    Nas.message_authenticator_seen_at.is_not(None))))
