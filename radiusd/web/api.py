"""The JSON API under /api/v1 (work in progress: the resources come in the next commits).

The web application includes `router`; the API finds the store through `request.app.state.sessions`
(a SQLAlchemy sessionmaker the application sets at start-up).
"""
from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/api/v1", tags=["api"])
