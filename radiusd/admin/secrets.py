"""The key that seals account passwords and NAS secrets: its status, rotating it, sealing the clear
values of a store made before sealing (radiusd.store.sealing does the store's part).

rotate: a new key is added to the key file (the old ones stay, so servers keep opening what they
have), every value is re-sealed under it in one transaction (audited, store version bumped so the
servers reload), and only then are the old keys dropped from the file. If anything fails before
the commit, the store is unchanged and the file still opens it.
"""
from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from radiusd.admin import audit
from radiusd.db import bump_store_version
from radiusd.secrets_at_rest import load_key_file, write_key_file
from radiusd.store.sealing import key_path, reseal_all, sealed_counts, sealing_ring


def status(session: Session) -> dict:
    """The key file, its key ids, the one that seals, and how many values each key seals."""
    path = key_path(session)
    ring = load_key_file(path) if path.exists() else None
    return {"key_file": str(path), "keys": list(ring.keys) if ring else [],
            "sealing_key": ring.current if ring else None, "values": sealed_counts(session)}


def reseal(sessions: sessionmaker[Session], *, rotate: bool, actor: str, context: str) -> dict:
    """rotate=True: `radiusd secrets rotate` (see the module); False: seal the clear values under
    the current key (a key file is made if the store has none). Audited when anything changed."""
    with sessions() as session:
        path = key_path(session)
        old = sealing_ring(session)  # an existing store's key, or a new one for a store never sealed
    new = old.with_new_key() if rotate else old
    if rotate:
        write_key_file(path, new)  # old keys kept until the store is re-sealed
    with sessions.begin() as session:
        counts = reseal_all(session, old, new, only_clear=not rotate)
        if rotate or any(counts.values()):
            bump_store_version(session)
            audit.record(session, object_type="secrets", object_id=None, object_name=path.name,
                         action="rotate" if rotate else "seal-existing", actor=actor, context=context,
                         changes={name: [None, n] for name, n in counts.items()}
                         | ({"key": [list(old.keys), new.current]} if rotate else {}))
    if rotate:
        write_key_file(path, new.only_current())
    return {"key_file": str(path), "sealing_key": new.current, "resealed": counts}
