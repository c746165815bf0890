"""Sessions, CSRF tokens and the login rate limit of the web admin.

The session lives in a cookie signed with HMAC-SHA256 under a key generated once and kept in a
file (0600), so sessions survive a restart and nobody can forge one without the key. The cookie
holds the user, role, a CSRF token and the time of the last request; a session idle for longer
than `idle_timeout` is over. Logout forgets the session id on the server too, so a copied cookie
stops working at logout, not only at the idle timeout.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from collections import deque
from pathlib import Path

from sqlalchemy.engine import make_url

from radiusd.errors import UserError

COOKIE = "radiusd_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


def key_file_for(settings) -> Path:
    """Where the signing key is kept: the configured file, else next to the SQLite store, else ./"""
    if settings.web_secret_key_file:
        return Path(settings.web_secret_key_file)
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database).with_name(Path(url.database).name + ".web-key")
    return Path("radiusd-web.key")


def load_or_create_key(path: Path) -> bytes:
    """The signing key in `path`; made (32 random bytes, hex, mode 0600) when the file is new."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        text = ""
    except OSError as exc:
        raise UserError(f"web secret_key_file: cannot read {path}: {exc.strerror}") from None
    if text:
        try:
            key = bytes.fromhex(text)
        except ValueError:
            raise UserError(f"web secret_key_file: {path} does not hold a hex key") from None
        if len(key) < 16:
            raise UserError(f"web secret_key_file: {path} holds a key shorter than 16 bytes")
        return key
    key = secrets.token_bytes(32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return load_or_create_key(path)
    except OSError as exc:
        raise UserError(f"web secret_key_file: cannot create {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w") as handle:
        handle.write(key.hex() + "\n")
    return key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionCodec:
    """Signed session cookies with an idle timeout and server-side logout."""

    def __init__(self, key: bytes, idle_timeout: int):
        self.key = key
        self.idle_timeout = idle_timeout
        self._ended: dict[str, float] = {}  # sid -> when it would have expired anyway
        self._lock = threading.Lock()

    def new(self, now: float, user: str | None = None, role: str | None = None) -> dict:
        return {"sid": secrets.token_urlsafe(18), "csrf": secrets.token_urlsafe(24), "user": user, "role": role,
                "seen": now}

    def dumps(self, session: dict) -> str:
        body = _b64(json.dumps(session, separators=(",", ":"), sort_keys=True).encode())
        mac = _b64(hmac.new(self.key, body.encode(), hashlib.sha256).digest())
        return f"{body}.{mac}"

    def loads(self, cookie: str | None, now: float) -> tuple[dict | None, bool]:
        """(session, expired): None when missing, forged or ended; expired when it idled out logged in."""
        if not cookie or "." not in cookie or len(cookie) > 4096:
            return None, False
        body, mac = cookie.rsplit(".", 1)
        good = _b64(hmac.new(self.key, body.encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(good, mac):
            return None, False
        try:
            session = json.loads(_unb64(body))
            seen = float(session["seen"])
            sid = str(session["sid"])
        except (ValueError, KeyError, TypeError):
            return None, False
        with self._lock:
            if sid in self._ended:
                return None, False
        if now - seen > self.idle_timeout:
            return None, bool(session.get("user"))
        return session, False

    def end(self, session: dict, now: float) -> None:
        with self._lock:
            self._ended = {s: t for s, t in self._ended.items() if t > now}  # drop those expired anyway
            self._ended[session["sid"]] = now + self.idle_timeout


class LoginLimiter:
    """At most `attempts` failed logins per user name and per client address within `window` seconds."""

    def __init__(self, attempts: int = 5, window: float = 300.0):
        self.attempts = attempts
        self.window = window
        self._failures: dict[str, deque] = {}
        self._lock = threading.Lock()

    def _keys(self, name: str, address: str) -> list[str]:
        return [f"user:{name.strip().lower()}", f"addr:{address}"]

    def retry_after(self, name: str, address: str, now: float) -> int:
        """Seconds until another attempt is allowed (0 = allowed now)."""
        wait = 0.0
        with self._lock:
            for key in self._keys(name, address):
                times = self._failures.get(key)
                if not times:
                    continue
                while times and now - times[0] > self.window:
                    times.popleft()
                if len(times) >= self.attempts:
                    wait = max(wait, times[0] + self.window - now)
        return int(wait) + 1 if wait > 0 else 0

    def failed(self, name: str, address: str, now: float) -> None:
        with self._lock:
            if len(self._failures) > 100_000:  # bounded memory under a spray of names
                self._failures.clear()
            for key in self._keys(name, address):
                self._failures.setdefault(key, deque(maxlen=self.attempts * 4)).append(now)

    def succeeded(self, name: str, address: str) -> None:
        with self._lock:
            self._failures.pop(f"user:{name.strip().lower()}", None)


def now() -> float:
    return time.time()
