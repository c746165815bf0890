"""Keys of call legs in the store, as pure functions (the store, the accounting and the admin
layers all build them here, never in SQL)."""
from __future__ import annotations

import hashlib

KEY_SIZE = 255  # leg_key / call_id / acct_session_id column size


def fit_key(key: str) -> str:
    """A key that fits the 255-character columns and stays unique (long ids end in a digest)."""
    if len(key) <= KEY_SIZE:
        return key
    return key[:KEY_SIZE - 41] + ":" + hashlib.sha1(key.encode("utf-8", "surrogatepass")).hexdigest()


def reservation_key(nas_id: int, call_id: str) -> str:
    """leg_key of the reservation made at Access-Accept; a Start with the same call id on the same
    NAS takes it over (`call_id` already fitted by `fit_key`)."""
    return f"auth:{nas_id}:{call_id}"
