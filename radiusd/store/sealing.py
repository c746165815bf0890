"""Secrets at rest in the store (the crypto is radiusd.secrets_at_rest): where the key file is,
sealing on write (admin: `seal_column`, seeds: `seal_values`), opening on snapshot load (`Opener`:
clear values live only in RAM), re-sealing every value (`radiusd secrets rotate|seal-existing`).
"""
from __future__ import annotations

from pathlib import Path

from sqlalchemy import bindparam, inspect, select, update
from sqlalchemy.orm import Session, sessionmaker

from radiusd.errors import UserError
from radiusd.logging_setup import get_logger
from radiusd.models import Account, Nas
from radiusd.secrets_at_rest import (
    PREFIX,
    CannotOpen,
    KeyFileError,
    KeyRing,
    account_password_place,
    create_key_file,
    is_sealed,
    key_file_path,
    key_id_of,
    load_key_file,
    nas_secret_place,
    open_sealed,
    seal,
)

INFO_KEY = "radiusd.key_file"
# (table, column, place) of every sealed value
SEALED_COLUMNS = (
    (Nas.__table__, "secret", nas_secret_place),
    (Account.__table__, "password", account_password_place),
)
log = get_logger("radiusd.secrets")


def attach_key_file(sessions: sessionmaker, configured: str, database_url: str) -> None:
    """Tell every session of `sessions` where the key file is ($RADIUSD_KEY_FILE wins over `configured`)."""
    sessions.configure(info={INFO_KEY: str(key_file_path(configured, database_url))})


def key_path(session: Session) -> Path:
    """The key file of this session: as attached to its sessionmaker, else the default for its store."""
    attached = session.info.get(INFO_KEY)
    if attached:
        return Path(attached)
    return key_file_path("", session.get_bind().url.render_as_string(hide_password=True))


def sealing_ring(session: Session) -> KeyRing:
    """The key ring to seal with. A missing key file is made (0600) only while the store holds no sealed
    value; otherwise it is an error naming the file, never a second key that the server lacks."""
    path = key_path(session)
    if path.exists() or any(session.execute(select(t.c.id).where(t.c[column].like(PREFIX + "%")).limit(1)).first()
                            for t, column, _place in SEALED_COLUMNS):
        return load_key_file(path)  # missing, it raises: the store's values need that file
    return create_key_file(path)


def ensure_key_file(sessions: sessionmaker) -> None:
    """`db init` and the demo: make the key file now if this store may use a new one."""
    with sessions() as session:
        sealing_ring(session)


def seal_column(session: Session, obj, column: str) -> None:
    """Seal `obj.<column>` (an Account's password, a NAS's secret) after an admin change, before the flush.

    A value set in this change is clear text from the admin: sealed. A rename re-seals the stored value
    for the new name (the name is part of what the seal binds). Call once per change."""
    place = nas_secret_place if isinstance(obj, Nas) else account_password_place
    value = getattr(obj, column)
    if value in (None, ""):
        return
    state = inspect(obj)
    old_names = state.attrs.name.history.deleted
    if state.attrs[column].history.added or not is_sealed(value):
        setattr(obj, column, seal(value, place(obj.name), sealing_ring(session)))
    elif old_names and old_names[0] != obj.name:
        ring = sealing_ring(session)
        try:
            clear = open_sealed(value, place(old_names[0]), ring)
        except CannotOpen as exc:
            raise UserError(f"{column}: the stored value {exc}; set a new one with this change",
                            field=column) from None
        setattr(obj, column, seal(clear, place(obj.name), ring))


def seal_values(session: Session, table_name: str, values: dict) -> dict:
    """A seed row with its clear password/secret sealed (a value already sealed, from a dump, is kept)."""
    for table, column, place in SEALED_COLUMNS:
        if table.name == table_name:
            value = values.get(column)
            if value and not is_sealed(value) and values.get("name"):
                values[column] = seal(value, place(values["name"]), sealing_ring(session))
    return values


class Opener:
    """Opens the sealed values of one snapshot load. The key file is read only if a sealed value is met."""

    def __init__(self, session: Session):
        self.session = session
        self.ring: KeyRing | None = None

    def open(self, what: str, name: str, value: str) -> str | None:
        """The clear value of a "nas" secret or an "account" password, or None (logged, naming the
        row) when it does not open for this row."""
        place = (nas_secret_place if what == "nas" else account_password_place)(name)
        ring = self.ring = self.ring or load_key_file(key_path(self.session))
        key_id = key_id_of(value)
        if key_id is not None and key_id not in ring.keys:
            # not one row's problem: the whole key file is the wrong one
            raise KeyFileError(f"secrets key_file: {key_path(self.session)} does not hold key {key_id}, which "
                               f"seals {what} {name!r}: wrong or outdated key file")
        try:
            return open_sealed(value, place, ring)
        except CannotOpen as exc:
            log.error("secrets.refused", row=f"{what} {name!r}", reason=str(exc),
                      detail="row left out of the snapshot" if what == "nas" else "account cannot log in",
                      fix="set it again (radiusd nas|account update), or `radiusd secrets seal-existing` "
                          "for a store made before sealing")
            return None


def sealed_counts(session: Session) -> dict[str, dict[str, int]]:
    """{table.column: {key id, "clear" or "malformed": values}}"""
    out: dict[str, dict[str, int]] = {}
    for table, column, _place in SEALED_COLUMNS:
        col = table.c[column]
        per: dict[str, int] = {}
        for value, in session.execute(select(col).where(col.is_not(None), col != "")):
            kind = key_id_of(value) or ("malformed" if value.startswith(PREFIX) else "clear")
            per[kind] = per.get(kind, 0) + 1
        out[f"{table.name}.{column}"] = per
    return out


# --- re-sealing everything ----------------------------------------------------------------------

def reseal_all(session: Session, old: KeyRing, new: KeyRing, *, only_clear: bool) -> dict[str, int]:
    """Seal every stored value under `new`'s current key, in the caller's transaction (rows locked).

    only_clear: leave sealed values alone (stores made before sealing). A value that does not open is
    an error naming the row: nothing is written."""
    counts: dict[str, int] = {}
    for table, column, place in SEALED_COLUMNS:
        col = table.c[column]
        rows = session.execute(select(table.c.id, table.c.name, col)
                               .where(col.is_not(None), col != "").order_by(table.c.id).with_for_update()).all()
        changes = []
        for id_, name, value in rows:
            if is_sealed(value) and only_clear:
                continue
            try:
                clear = open_sealed(value, place(name), old) if is_sealed(value) else value
            except CannotOpen as exc:
                raise UserError(f"{table.name} {name!r}: {column} {exc}; set it again first") from None
            changes.append({"_id": id_, "_value": seal(clear, place(name), new)})
        if changes:
            session.execute(update(table).where(table.c.id == bindparam("_id")).values({column: bindparam("_value")}),
                            changes)
        counts[f"{table.name}.{column}"] = len(changes)
    return counts
