"""`radiusd secrets status|rotate|seal-existing`: the key that seals account passwords and NAS
secrets (radiusd.admin.secrets)."""
from __future__ import annotations

from radiusd.admin import secrets
from radiusd.cli_output import actor_from_args, common_options, emit, store_from_args


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


def secrets_status(args) -> int:
    with store_from_args(args) as (_settings, _engine, sessions), sessions() as session:
        result = secrets.status(session)
    emit(result, getattr(args, "json", False))
    return 0


def _reseal(args, *, rotate: bool) -> int:
    with store_from_args(args) as (_settings, _engine, sessions):
        result = secrets.reseal(sessions, rotate=rotate, actor=actor_from_args(args), context="cli")
    if getattr(args, "json", False):
        emit(result, True)
    else:
        done = ", ".join(f"{n} {name}" for name, n in result["resealed"].items())
        key = result["sealing_key"]
        print(f"{'rotated to key ' + key if rotate else 'sealed under key ' + key}: {done} "
              f"({result['key_file']}; back up this file — backups made before need the key they were made with)")
    return 0


def secrets_rotate(args) -> int:
    return _reseal(args, rotate=True)


def secrets_seal_existing(args) -> int:
    return _reseal(args, rotate=False)

