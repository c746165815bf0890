"""`radiusd secrets status|rotate|seal-existing`: the key that seals account passwords and NAS secrets.

rotate: a new key is added to the key file (the old ones stay, so servers keep opening what they
have), every value is re-sealed under it in one transaction (audited, store version bumped so the
servers reload), and only then are the old keys dropped from the file. If anything fails before
the commit, the store is unchanged and the file still opens it.
"""
from __future__ import annotations

from sqlalchemy import select

from radiusd.admin import audit
from radiusd.cli_output import actor_from_args, common_options, emit, store_from_args
from radiusd.db import bump_store_version
from radiusd.secrets_at_rest import PREFIX, key_id_of, load_key_file, write_key_file
from radiusd.store.sealing import SEALED_COLUMNS, key_path, reseal_all, sealing_ring


def register(subparsers) -> None:
    common = common_options()
    group = subparsers.add_parser("secrets", help="the key file sealing account passwords and NAS secrets")
    sub = group.add_subparsers(dest="secrets_command", metavar="ACTION", required=True)
    sub.add_parser("status", parents=[common], help="key file, key ids, and how many values each seals"
                   ).set_defaults(func=secrets_status)
    sub.add_parser("rotate", parents=[common],
                   help="new key; re-seal every password and secret in one transaction; drop the old key (audited)"
                   ).set_defaults(func=secrets_rotate)
    sub.add_parser("seal-existing", parents=[common],
                   help="seal the clear passwords and secrets of a store made before sealing (audited)"
                   ).set_defaults(func=secrets_seal_existing)


def _counts(session) -> dict[str, dict[str, int]]:
    """{table.column: {key id or "clear": values}}"""
    out: dict[str, dict[str, int]] = {}
    for table, column, _place in SEALED_COLUMNS:
        col = table.c[column]
        per: dict[str, int] = {}
        for value, in session.execute(select(col).where(col.is_not(None), col != "")):
            kind = key_id_of(value) or ("malformed" if value.startswith(PREFIX) else "clear")
            per[kind] = per.get(kind, 0) + 1
        out[f"{table.name}.{column}"] = per
    return out


def secrets_status(args) -> int:
    with store_from_args(args) as (_settings, _engine, sessions), sessions() as session:
        path = key_path(session)
        ring = load_key_file(path) if path.exists() else None
        result = {"key_file": str(path), "keys": list(ring.keys) if ring else [],
                  "sealing_key": ring.current if ring else None, "values": _counts(session)}
    emit(result, getattr(args, "json", False))
    return 0


def _reseal(args, *, rotate: bool) -> int:
    with store_from_args(args) as (_settings, _engine, sessions):
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
                             action="rotate" if rotate else "seal-existing", actor=actor_from_args(args),
                             context="cli", changes={name: [None, n] for name, n in counts.items()}
                             | ({"key": [list(old.keys), new.current]} if rotate else {}))
        if rotate:
            write_key_file(path, new.only_current())
    result = {"key_file": str(path), "sealing_key": new.current, "resealed": counts}
    if getattr(args, "json", False):
        emit(result, True)
    else:
        done = ", ".join(f"{n} {name}" for name, n in counts.items())
        print(f"{'rotated to key ' + new.current if rotate else 'sealed under key ' + new.current}: {done} "
              f"({path}; back up this file — backups made before need the key they were made with)")
    return 0


def secrets_rotate(args) -> int:
    return _reseal(args, rotate=True)


def secrets_seal_existing(args) -> int:
    return _reseal(args, rotate=False)

