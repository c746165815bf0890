"""Server settings: defaults, overridden by a TOML file, overridden by the environment.

`DATABASE_URL` picks the store (default: SQLite file `radiusd.sqlite3` in the working directory).
The TOML file (`--config FILE` or `RADIUSD_CONFIG`) holds the server settings, one table per concern:

    [server]   bind = ["0.0.0.0", "::"], auth_port = 1812, acct_port = 1813, workers = 0 (= CPUs)
    [limits]   max_call_duration = 7200, reservation_ttl = 30, stale_call_after = 7200
    [backpressure]
               store_timeout = 1.5 (seconds: PostgreSQL lock_timeout/statement_timeout of every
               accounting, admission and sweeper transaction; keep it below the switches'
               retransmit timeout), answer_deadline = 3.0 (seconds: a request older than this
               when its decision is ready is dropped, not answered late), accounting_queue = 20000
               and reservation_queue = 4096 (records / Access-Requests waiting for the store per
               process; past that new ones are refused and counted), degraded_after = 2.0 (seconds
               of accounting lag, or of an admission batch stuck in the store, before /health
               says 503 "degraded")
    [fairness] rate = 5000, burst = 10000 (datagrams/s and at once, per NAS per worker; rate 0 = no
               limit), queue_depth = 1024 (datagrams waiting per NAS), in_flight = 256 (Access-Requests
               of one NAS waiting for the store); NAS are served round robin; adaptive = true (while NAS
               contend and a worker is busy, a ceiling per NAS below the busiest one's rate; false: off)
    [accounting] max_clock_skew_seconds = 86400 (a switch time later than now + this, or before
               2000, is treated as absent and the CDR flagged), duration_slack_seconds = 60 (a
               CDR bills at most the duration granted at authorization plus this)
    [metrics]  port = 9812 (0 = off), bind = "127.0.0.1"
    [spool]    path = "spool"
    [log]      level = "info"
    [web]      bind = "127.0.0.1", port = 8080, idle_timeout = 1800 (seconds),
               secure_cookies = "auto" (Secure when served over TLS; true/false to force),
               secret_key_file = "" (session signing key; default: next to the SQLite store,
               else ./radiusd-web.key; generated on first start)
    [database] url, cdr_partitions_ahead = 2 (PostgreSQL: months of CDR partitions kept ahead)
    [secrets]  key_file = "" (seals account passwords and NAS secrets in the store; default: next to
               the SQLite store as <file>.key, else ./radiusd.key; $RADIUSD_KEY_FILE overrides)
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path

from radiusd.core.sanity import Limits

DEFAULT_DATABASE_URL = "sqlite:///radiusd.sqlite3"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ConfigError(ValueError):
    """A setting has a bad value; the message names the setting."""


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    bind: tuple[str, ...] = ("0.0.0.0", "::")
    auth_port: int = 1812
    acct_port: int = 1813
    workers: int = 0
    dictionary_dir: str = str(PROJECT_ROOT / "dictionaries")
    max_call_duration: int = 7200        # seconds; also the answer for unlimited credit
    reservation_ttl: int = 30            # seconds an Access-Accept holds capacity without a Start
    stale_call_after: int = 7200         # seconds without Interim/Stop before a call is closed
    duplicate_cache_seconds: int = 10    # RFC 5080 reply cache lifetime
    snapshot_poll_seconds: float = 1.0   # how often the store version counter is read
    billing_model: str | None = None     # h323-billing-model to send; None = don't send
    fairness_rate: float = 5000.0        # datagrams/s one NAS may have processed (per worker); 0 = no limit
    fairness_burst: float = 10000.0      # datagrams one NAS may send at once above the rate
    fairness_queue_depth: int = 1024     # datagrams of one NAS waiting to be processed
    fairness_in_flight: int = 256        # Access-Requests of one NAS waiting for the store
    fairness_adaptive: bool = True       # a ceiling per NAS that follows how busy the worker is (README)
    metrics_bind: str = "127.0.0.1"
    metrics_port: int = 9812             # 0 = no metrics/health endpoint
    spool_path: str = "spool"
    log_level: str = "info"
    web_bind: str = "127.0.0.1"
    web_port: int = 8080
    web_idle_timeout: int = 1800         # seconds without a request before a web session ends
    web_secure_cookies: str = "auto"     # auto = Secure when the request came over https
    web_secret_key_file: str = ""        # "" = next to the SQLite store, else ./radiusd-web.key
    cdr_partitions_ahead: int = 2        # months after the current one whose CDR partitions the sweeper keeps
    secrets_key_file: str = ""           # "" = next to the SQLite store, else ./radiusd.key
    store_timeout: float = 1.5           # seconds a store statement or lock wait may take (accounting, admission, sweeper)
    answer_deadline: float = 3.0         # seconds after which a decision is dropped instead of answered late
    accounting_queue: int = 20000        # accounting records waiting for the writer, per process
    reservation_queue: int = 4096        # Access-Requests waiting for the reservation batcher, per process
    degraded_after: float = 2.0          # seconds of writer lag / admission stall before /health is 503 degraded
    max_clock_skew_seconds: int = 86400  # a switch time later than now + this is treated as absent
    duration_slack_seconds: int = 60     # seconds a CDR may bill past the duration granted at authorization

    @property
    def accounting_limits(self):
        """The sanity bounds of accounting data (radiusd.core.sanity.Limits)."""
        return Limits(self.max_clock_skew_seconds, self.duration_slack_seconds, self.max_call_duration)

    @property
    def store_timeout_ms(self) -> int:
        """`store_timeout` in milliseconds, at least 1 (PostgreSQL reads 0 as no limit)."""
        return max(1, int(self.store_timeout * 1000))


_TOML_KEYS = {
    ("server", "bind"): "bind",
    ("server", "auth_port"): "auth_port",
    ("server", "acct_port"): "acct_port",
    ("server", "workers"): "workers",
    ("server", "dictionary_dir"): "dictionary_dir",
    ("server", "duplicate_cache_seconds"): "duplicate_cache_seconds",
    ("server", "snapshot_poll_seconds"): "snapshot_poll_seconds",
    ("database", "url"): "database_url",
    ("database", "cdr_partitions_ahead"): "cdr_partitions_ahead",
    ("limits", "max_call_duration"): "max_call_duration",
    ("limits", "reservation_ttl"): "reservation_ttl",
    ("limits", "stale_call_after"): "stale_call_after",
    ("reply", "billing_model"): "billing_model",
    ("fairness", "rate"): "fairness_rate",
    ("fairness", "burst"): "fairness_burst",
    ("fairness", "queue_depth"): "fairness_queue_depth",
    ("fairness", "in_flight"): "fairness_in_flight",
    ("fairness", "adaptive"): "fairness_adaptive",
    ("accounting", "max_clock_skew_seconds"): "max_clock_skew_seconds",
    ("accounting", "duration_slack_seconds"): "duration_slack_seconds",
    ("metrics", "bind"): "metrics_bind",
    ("metrics", "port"): "metrics_port",
    ("spool", "path"): "spool_path",
    ("log", "level"): "log_level",
    ("backpressure", "store_timeout"): "store_timeout",
    ("backpressure", "answer_deadline"): "answer_deadline",
    ("backpressure", "accounting_queue"): "accounting_queue",
    ("backpressure", "reservation_queue"): "reservation_queue",
    ("backpressure", "degraded_after"): "degraded_after",
    ("web", "bind"): "web_bind",
    ("web", "port"): "web_port",
    ("web", "idle_timeout"): "web_idle_timeout",
    ("web", "secure_cookies"): "web_secure_cookies",
    ("web", "secret_key_file"): "web_secret_key_file",
    ("secrets", "key_file"): "secrets_key_file",
}


TRUE_WORDS = ("1", "true", "yes", "on", "y", "t")
FALSE_WORDS = ("0", "false", "no", "off", "n", "f")


def truth(value) -> bool | None:
    """A yes/no as settings, the CLI and seeds write it (true, yes, on, 1 ... false, no, off, 0;
    any case); None when it is neither."""
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    return True if word in TRUE_WORDS else False if word in FALSE_WORDS else None


def _coerce(name: str, value, kind):
    origin = getattr(kind, "__origin__", None)
    if kind in (int, "int"):
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected a whole number, got {value!r}") from None
    if kind in (bool, "bool"):
        found = truth(value)
        if found is None:
            raise ConfigError(f"{name}: expected true or false, got {value!r}")
        return found
    if kind in (float, "float"):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected a number, got {value!r}") from None
    if origin is tuple or kind == "tuple[str, ...]":
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        return tuple(str(v) for v in value)
    if kind in (str, "str") and isinstance(value, bool):
        return "true" if value else "false"  # TOML `secure_cookies = true`
    return None if value is None else str(value)


def load_settings(config_file: str | os.PathLike | None = None, **overrides) -> Settings:
    """Build Settings from defaults, then the TOML file, then environment, then overrides."""
    values: dict = {}
    config_file = config_file or os.environ.get("RADIUSD_CONFIG")
    if config_file:
        try:
            data = tomllib.loads(Path(config_file).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {config_file}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config_file}: {exc}") from None
        for (section, key), attr in _TOML_KEYS.items():
            if key in data.get(section, {}):
                values[attr] = data[section][key]
    if os.environ.get("DATABASE_URL"):
        values["database_url"] = os.environ["DATABASE_URL"]
    values.update({k: v for k, v in overrides.items() if v is not None})
    types = {f.name: f.type for f in fields(Settings)}
    for name in list(values):
        if name not in types:
            raise ConfigError(f"unknown setting {name}")
        values[name] = _coerce(name, values[name], types[name])
    settings = replace(Settings(), **values)
    for name in ("auth_port", "acct_port", "metrics_port", "web_port"):
        port = getattr(settings, name)
        if not 0 <= port <= 65535:
            raise ConfigError(f"{name}: {port} is not a UDP/TCP port")
    if settings.web_idle_timeout <= 0:
        raise ConfigError("web idle_timeout must be positive (seconds)")
    if settings.web_secure_cookies not in ("auto", "true", "false"):
        raise ConfigError(f"web secure_cookies: expected auto, true or false, got {settings.web_secure_cookies!r}")
    if not 1 <= settings.cdr_partitions_ahead <= 120:
        raise ConfigError(f"cdr_partitions_ahead: {settings.cdr_partitions_ahead} must be 1 to 120 (months)")
    for name in ("store_timeout", "answer_deadline", "degraded_after"):
        if not 0.05 <= getattr(settings, name) <= 3600:
            raise ConfigError(f"{name}: {getattr(settings, name)} must be 0.05 to 3600 seconds")
    for name in ("accounting_queue", "reservation_queue"):
        if not 1 <= getattr(settings, name) <= 10_000_000:
            raise ConfigError(f"{name}: {getattr(settings, name)} must be 1 to 10000000")
    if settings.fairness_rate < 0 or settings.fairness_burst < 0:
        raise ConfigError("fairness rate and burst must be 0 or more (datagrams/s, datagrams)")
    if settings.fairness_rate and settings.fairness_burst and settings.fairness_burst < 1:
        raise ConfigError("fairness burst must be at least 1 datagram (or 0 = one second of rate)")
    if not 1 <= settings.fairness_queue_depth <= 1_000_000:
        raise ConfigError(f"fairness queue_depth: {settings.fairness_queue_depth} must be 1 to 1000000 (datagrams)")
    if settings.fairness_in_flight < 1:
        raise ConfigError(f"fairness in_flight: {settings.fairness_in_flight} must be at least 1 (Access-Requests)")
    if settings.max_call_duration <= 0:
        raise ConfigError("max_call_duration must be positive")
    if not 0 <= settings.max_clock_skew_seconds <= 366 * 86400:
        raise ConfigError(f"accounting max_clock_skew_seconds: {settings.max_clock_skew_seconds} must be 0 to 31622400")
    if not 0 <= settings.duration_slack_seconds <= 86400:
        raise ConfigError(f"accounting duration_slack_seconds: {settings.duration_slack_seconds} must be 0 to 86400")
    return settings
