"""SQL fragments both dialects use word for word (placeholders differ: formatted in)."""
from __future__ import annotations

from sqlalchemy import Integer, bindparam

# An open leg (radiusd.core.admission): counts against capacity and money at {now}.
OPEN_LEG = "leg = 'orig' AND (state = 'active' OR (state = 'reserved' AND expires_at > {now}))"


def ids(name: str):
    """An expanding bound parameter `name` of integer ids (`IN :name`)."""
    return bindparam(name, expanding=True, type_=Integer())


def constant(value) -> str:
    """A SQL literal for one of our own constants (radiusd.core.admission.RESERVED), never user data."""
    if value is None:
        return "NULL"
    return str(value) if isinstance(value, int) else f"'{value}'"
