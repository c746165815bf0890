"""Sealing account passwords and NAS shared secrets for the store (AES-256-GCM).

CHAP and SIP Digest need the clear password at authorization time, so a one-way hash (as for web
users) cannot work; instead every stored value is encrypted under a key the store never holds:

    rs1:<key id>:<base64 of 12-byte nonce + ciphertext + 16-byte tag>

The associated data binds a value to its place ("nas.secret/<NAS name>",
"accounts.password/<account name>"): a sealed value copied onto another row, or a row renamed
behind our back, does not open. The key file holds one or more keys, one per line
`<id> <64 hex digits>` (comments with #); the last one seals, the others only open (during a
rotation). This module is the foundation: no store, no settings, only bytes and files.
"""
from __future__ import annotations

import base64
import functools
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from radiusd.errors import UserError

PREFIX = "rs1:"
ENV_KEY_FILE = "RADIUSD_KEY_FILE"
KEY_BYTES = 32
NONCE_BYTES = 12
DEFAULT_KEY_FILE = "radiusd.key"


class KeyFileError(UserError):
    """The key file is missing, unreadable or malformed: the message names the file."""


class CannotOpen(Exception):
    """A stored value that does not open: not sealed, sealed for another row, or under a key we lack."""


# one cipher object per key: building it costs as much as opening one value (snapshot loads open 100,000s)
_cipher = functools.lru_cache(maxsize=32)(AESGCM)


def nas_secret_place(name: str) -> str:
    return f"nas.secret/{name}"


def account_password_place(name: str) -> str:
    return f"accounts.password/{name}"


@dataclass(frozen=True)
class KeyRing:
    keys: dict[str, bytes]   # key id -> 32-byte key, in file order
    current: str             # the id that seals

    @classmethod
    def generate(cls) -> "KeyRing":
        key_id = secrets.token_hex(4)
        return cls({key_id: secrets.token_bytes(KEY_BYTES)}, key_id)

    def with_new_key(self) -> "KeyRing":
        fresh = KeyRing.generate()
        return KeyRing({**self.keys, **fresh.keys}, fresh.current)

    def only_current(self) -> "KeyRing":
        return KeyRing({self.current: self.keys[self.current]}, self.current)


def is_sealed(value: str | None) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def key_id_of(value: str) -> str | None:
    return value.split(":", 2)[1] if is_sealed(value) and value.count(":") >= 2 else None


def seal(plaintext: str, place: str, ring: KeyRing) -> str:
    """`plaintext` encrypted under the ring's current key, bound to `place`."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    sealed = _cipher(ring.keys[ring.current]).encrypt(nonce, plaintext.encode("utf-8"), place.encode("utf-8"))
    return f"{PREFIX}{ring.current}:{base64.b64encode(nonce + sealed).decode('ascii')}"


def open_sealed(value: str, place: str, ring: KeyRing) -> str:
    """The clear text of a sealed value, or CannotOpen saying why (never the value)."""
    if not is_sealed(value):
        raise CannotOpen("stored in clear, not sealed")
    try:
        _, key_id, body = value.split(":", 2)
    except ValueError:
        raise CannotOpen("malformed sealed value") from None
    key = ring.keys.get(key_id)
    if key is None:
        raise CannotOpen(f"sealed under key {key_id}, which the key file does not hold")
    try:
        raw = base64.b64decode(body, validate=True)
        if len(raw) < NONCE_BYTES + 16:
            raise ValueError
        clear = _cipher(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], place.encode("utf-8"))
    except (ValueError, InvalidTag):
        raise CannotOpen(f"does not open under key {key_id} for this row (copied from another row, "
                         "renamed outside radiusd, or altered)") from None
    return clear.decode("utf-8")


# --- the key file -------------------------------------------------------------------------------

def key_file_path(configured: str = "", database_url: str | None = None) -> Path:
    """Where the key lives: $RADIUSD_KEY_FILE, else [secrets] key_file, else next to an SQLite store
    (`<store file>.key`), else ./radiusd.key."""
    if os.environ.get(ENV_KEY_FILE):
        return Path(os.environ[ENV_KEY_FILE])
    if configured:
        return Path(configured)
    if database_url:
        from sqlalchemy.engine import make_url

        url = make_url(str(database_url))
        if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
            return Path(url.database).with_name(Path(url.database).name + ".key")
    return Path(DEFAULT_KEY_FILE)


def read_key_file(path: Path) -> KeyRing:
    """The keys in `path`; KeyFileError naming the file and line when it is missing or malformed."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise KeyFileError(f"secrets key_file: {path} does not exist (it seals account passwords and NAS "
                           f"secrets; restore it from backup, or point RADIUSD_KEY_FILE / [secrets] key_file "
                           f"at it)") from None
    except OSError as exc:
        raise KeyFileError(f"secrets key_file: cannot read {path}: {exc.strerror}") from None
    keys: dict[str, bytes] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        try:
            if len(parts) != 2 or not parts[0].isalnum():
                raise ValueError
            key = bytes.fromhex(parts[1])
            if len(key) != KEY_BYTES:
                raise ValueError
        except ValueError:
            raise KeyFileError(f"secrets key_file: {path}:{number}: expected `<key id> <64 hex digits>`") from None
        keys[parts[0]] = key
    if not keys:
        raise KeyFileError(f"secrets key_file: {path} holds no key")
    return KeyRing(keys, list(keys)[-1])


def write_key_file(path: Path, ring: KeyRing) -> None:
    """Replace `path` atomically (mode 0600, fsync'ed, directory fsync'ed): the current key last."""
    path = Path(path)
    lines = ["# radiusd secrets key file: keep it secret, back it up apart from the store.",
             "# <key id> <key, hex>; the last key seals, the others only open."]
    lines += [f"{key_id} {key.hex()}" for key_id, key in ring.keys.items() if key_id != ring.current]
    lines.append(f"{ring.current} {ring.keys[ring.current].hex()}")
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("\n".join(lines) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise KeyFileError(f"secrets key_file: cannot write {path}: {exc.strerror}") from None


def create_key_file(path: Path) -> KeyRing:
    """A new key file with one fresh key; an existing file is kept and read instead."""
    path = Path(path)
    if path.exists():
        return read_key_file(path)
    ring = KeyRing.generate()
    write_key_file(path, ring)
    return ring


_cache: dict[Path, tuple[tuple[int, int, int], KeyRing]] = {}


def load_key_file(path: Path) -> KeyRing:
    """read_key_file, cached until the file changes (a rotation replaces it: servers see the new key
    at their next snapshot load)."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        return read_key_file(path)  # raises the clear error
    stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
    hit = _cache.get(path)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    ring = read_key_file(path)
    _cache[path] = (stamp, ring)
    return ring
