"""Parsing and checking of admin input: one clear `UserError` naming the field and the value.

Values may come from the CLI (strings) or from code (typed); every parser accepts both.
Errors read `<field>: <problem> (<value>)`.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import re
import unicodedata
from decimal import Decimal, InvalidOperation

from sqlalchemy import BigInteger, Integer

from radiusd.config import truth
from radiusd.errors import Conflict, UserError  # noqa: F401  (re-exported: F.UserError)
from radiusd.models import MONEY_SCALE, Money
from radiusd.plain import RATE_FIELDS, amount_text, rate_text  # noqa: F401  (F.amount_text for callers)

NONE_WORDS = ("", "none", "null", "-")
UNLIMITED_WORDS = ("unlimited",) + NONE_WORDS
TECH_PREFIX_RE = re.compile(r"^[0-9#*]*$")
DIGITS_RE = re.compile(r"^[0-9]*$")
ANI_RE = re.compile(r"^\+?[0-9#*]+$")
CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
WHOLE_RE = re.compile(r"^[+-]?[0-9]+$")  # ASCII digits only: int() would also take 1_000 and other scripts


def type_max(kind):
    """The largest value a column of this type holds on both stores: the one source of numeric bounds.

    Integer is 32-bit on PostgreSQL (64-bit on SQLite: the smaller wins); money is NUMERIC(p, s) on
    PostgreSQL and s-decimal micro-units in a 64-bit integer on SQLite, so it gets the whole digits
    that fit both.
    """
    if isinstance(kind, Money):
        numeric = kind.impl
        sqlite_digits = len(str((2 ** 63 - 1) // 10 ** numeric.scale)) - 1
        digits = min(numeric.precision - numeric.scale, sqlite_digits)
        return Decimal(10) ** digits - Decimal(1).scaleb(-numeric.scale)
    if isinstance(kind, BigInteger):
        return 2 ** 63 - 1
    if isinstance(kind, Integer):
        return 2 ** 31 - 1
    raise TypeError(f"no numeric bound for {kind!r}")


INTEGER_MAX = type_max(Integer())
MONEY_MAX = type_max(Money())
MONEY_DIGITS = len(str(int(MONEY_MAX)))
# Cc: control characters (tab and newline too); Cf: format characters (bidi overrides such as
# U+202E, zero-width joiners) that make one name look like another in a list or the audit log;
# Zl/Zp: line and paragraph separators
_HIDDEN = ("Cc", "Cf", "Zl", "Zp")


def shown(value: str) -> str:
    """A value as the error message shows it: as given, escaped when it holds hidden characters
    (so the message stays one line and a U+202E cannot turn it around)."""
    return ascii(value) if has_hidden_characters(value) else value


def fail(field: str, problem: str, value) -> UserError:
    return UserError(f"{field}: {problem} ({value})", field=field)


def conflict(field: str, problem: str, value) -> Conflict:
    """Like fail(), for a value another object already has (a name, an address, a prefix and date)."""
    return Conflict(f"{field}: {problem} ({value})", field=field)


def has_hidden_characters(value: str) -> bool:
    """Control, bidi-override, zero-width or line-separator characters: never in a name or identifier."""
    return any(unicodedata.category(ch) in _HIDDEN for ch in value)


def text(field: str, value, *, max_len: int = 200, required: bool = False, strip: bool = True,
         multiline: bool = False) -> str:
    """One line of text (a name, tag, description): no control or invisible formatting characters.

    multiline (notes): tabs and line breaks are allowed, other control characters are not.
    """
    value = "" if value is None else str(value)
    if strip:
        value = value.strip()
    if required and not value:
        raise fail(field, "must not be empty", repr(value))
    if len(value) > max_len:
        raise fail(field, f"longer than {max_len} characters", shown(value[:40]) + "...")
    if multiline:
        if any(unicodedata.category(c) == "Cc" and c not in "\t\r\n" for c in value):
            raise fail(field, "contains control characters", ascii(value))
    elif has_hidden_characters(value):
        raise fail(field, "contains control or invisible formatting characters", ascii(value))
    return value


def notes(field: str, value, max_len: int = 10000) -> str:
    """Free text kept as written (several lines allowed)."""
    return text(field, value, max_len=max_len, strip=False, multiline=True)


def name(field: str, value, max_len: int = 100, spaces: bool = True) -> str:
    value = text(field, value, max_len=max_len, required=True)
    if not spaces and any(c.isspace() for c in value):
        raise fail(field, "must not contain spaces", value)
    return value


def optional_text(field: str, value, max_len: int = 255) -> str | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in NONE_WORDS):
        return None
    return text(field, value, max_len=max_len)


def boolean(field: str, value) -> bool:
    found = truth(value)
    if found is None:
        raise fail(field, "expected yes or no", value)
    return found


def integer(field: str, value, *, minimum: int | None = None, maximum: int | None = INTEGER_MAX,
            nullable: bool = False) -> int | None:
    """A whole number; at most what an Integer column holds unless a smaller maximum is given."""
    if value is None or (isinstance(value, str) and value.strip().lower() in UNLIMITED_WORDS):
        if nullable:
            return None
        raise fail(field, "a whole number is required", value)
    if isinstance(value, bool):
        raise fail(field, "expected a whole number", value)
    if isinstance(value, int):
        number = value
    else:
        raw = str(value).strip()
        if not WHOLE_RE.match(raw):
            raise fail(field, "expected a whole number", shown(raw[:40]))
        try:
            number = int(raw)
        except ValueError:  # more digits than Python converts: far past any bound
            raise fail(field, "too many digits", raw[:40] + "...") from None
    if minimum is not None and number < minimum:
        raise fail(field, f"must be {minimum} or more", value)
    if maximum is not None and number > maximum:
        raise fail(field, f"must be {maximum} or less", value)
    return number


def capacity(field: str, value) -> int | None:
    """Simultaneous-call limit: a whole number >= 0, or none/unlimited for no limit."""
    return integer(field, value, minimum=0, nullable=True)


def max_call_duration(field: str, value) -> int | None:
    """Longest call, in whole seconds > 0 (at most a day), or none for no limit at this level."""
    return integer(field, value, minimum=1, maximum=86400, nullable=True)


def money(field: str, value, *, nullable: bool = False, minimum: Decimal | None = None) -> Decimal | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in UNLIMITED_WORDS):
        if nullable:
            return None
        raise fail(field, "an amount is required", value)
    if isinstance(value, (bool, float)):
        # floats are not exact; ask for a string or Decimal instead of guessing
        raise fail(field, "give the amount as text or Decimal, not a float", value)
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise fail(field, "expected an amount like 12.50", value) from None
    if not amount.is_finite():
        raise fail(field, "expected an amount like 12.50", value)
    if amount.as_tuple().exponent < -MONEY_SCALE and amount != amount.quantize(Decimal(1).scaleb(-MONEY_SCALE)):
        raise fail(field, f"more than {MONEY_SCALE} decimal places", value)
    if abs(amount) > MONEY_MAX:
        raise fail(field, f"more than {MONEY_DIGITS} digits before the decimal point", value)
    if minimum is not None and amount < minimum:
        raise fail(field, f"must be {minimum} or more", value)
    return amount


def currency(field: str, value) -> str:
    value = str(value or "").strip().upper()
    if not CURRENCY_RE.match(value):
        raise fail(field, "expected a 3-letter currency code", value)
    return value


def choice(field: str, value, allowed: tuple[str, ...], *, nullable: bool = False) -> str | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in NONE_WORDS):
        if nullable:
            return None
        raise fail(field, f"one of {', '.join(allowed)} is required", value)
    word = str(value).strip().lower()
    if word not in allowed:
        raise fail(field, f"expected one of {', '.join(allowed)}", value)
    return word


def tech_prefix(field: str, value) -> str:
    value = "" if value is None else str(value).strip()
    if not TECH_PREFIX_RE.match(value) or len(value) > 32:
        raise fail(field, "only digits, # and * are allowed (at most 32)", value)
    return value


def digits_prefix(field: str, value) -> str:
    value = "" if value is None else str(value).strip()
    if not DIGITS_RE.match(value) or len(value) > 32:
        raise fail(field, "only digits are allowed (at most 32)", value)
    return value


def ani(field: str, value) -> str | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in NONE_WORDS):
        return None
    value = str(value).strip()
    if not ANI_RE.match(value) or len(value) > 64:
        raise fail(field, "expected a phone number (digits, optional leading +)", value)
    return value


def secret(field: str, value, *, required: bool) -> str | None:
    """A password or shared secret. The error never echoes the value."""
    if value is None or value == "":
        if required:
            raise fail(field, "must not be empty", "empty")
        return None
    value = str(value)
    if len(value) > 256:
        raise fail(field, "longer than 256 characters", "value hidden")
    if any(unicodedata.category(c) == "Cc" for c in value):
        raise fail(field, "contains control characters", "value hidden")
    return value


def network(field: str, value) -> str:
    """One address or CIDR, normalised: `10.1.2.3` -> `10.1.2.3/32`, IPv6 lowercase compressed.

    A CIDR with host bits set (`10.1.2.7/24`) is rejected rather than silently widened or
    narrowed: the admin most likely mistyped either the address or the mask.
    """
    raw = str(value).strip()
    if not raw:
        raise fail(field, "empty address", repr(raw))
    if "%" in raw:  # an IPv6 zone (fe80::1%eth0) is local to one host, never a RADIUS source
        raise fail(field, "an address with a zone index is not allowed", raw)
    try:
        net = ipaddress.ip_network(raw, strict=False)
    except ValueError:
        raise fail(field, "not an IP address or CIDR", raw) from None
    host = raw.split("/")[0]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise fail(field, "not an IP address or CIDR", raw) from None
    if "/" in raw and net.network_address != ipaddress.ip_address(host):
        raise fail(field, f"host bits set, did you mean {net.with_prefixlen}?", raw)
    return net.with_prefixlen


def networks(field: str, value) -> list[str]:
    """A `;`-separated list (commas and spaces accepted too), normalised, duplicates dropped."""
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else re.split(r"[;,\s]+", str(value))
    result: list[str] = []
    for item in items:
        if str(item).strip():
            cidr = network(field, item)
            if cidr not in result:
                result.append(cidr)
    return result


def name_list(value) -> list[str]:
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else re.split(r"[;,]", str(value))
    return [str(i).strip() for i in items if str(i).strip()]


def timestamp(field: str, value, *, nullable: bool = False) -> dt.datetime | None:
    """ISO-8601 date or date-time; a date means midnight UTC, a time without offset means UTC."""
    if value is None or (isinstance(value, str) and value.strip().lower() in NONE_WORDS):
        if nullable:
            return None
        raise fail(field, "a date is required", value)
    if isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, dt.date):
        parsed = dt.datetime(value.year, value.month, value.day)
    else:
        raw = str(value).strip()
        try:
            if len(raw) == 10:
                parsed = dt.datetime.combine(dt.date.fromisoformat(raw), dt.time())
            else:
                parsed = dt.datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise fail(field, "expected an ISO-8601 date or date-time", raw) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.astimezone(dt.timezone.utc)


def money_out(value: Decimal | None) -> Decimal | None:
    """Money for display, the same from both stores: no trailing zeros beyond cents (100.00, 0.0125)."""
    if value is None:
        return None
    return Decimal(amount_text(value))


def read_text_file(path) -> str:
    """A seed or CSV file's text (UTF-8, BOM tolerated); unreadable files are a UserError naming the file."""
    import os

    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            return handle.read()
    except FileNotFoundError:
        raise fail("file", "not found", path) from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise fail("file", exc.strerror or "cannot read", path) from None
