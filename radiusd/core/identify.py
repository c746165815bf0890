"""Which account sent this call: identification by login, IP address or ANI, never a guess.

Precedence of the methods for an Access-Request (`identify`):

1. **Login** — the request carries credentials (PAP, CHAP or SIP Digest) and its User-Name is
   the name of an `ident_by=name` account: that account. A login is the most specific proof of
   identity a switch can give, so it beats an IP match. The password is checked by
   `radiusd.core.authorize`, not here.
2. **IP** — the caller address (the one the NAS's `caller_address_source` points to) against the
   networks of `ident_by=ip` accounts.
3. **ANI** — the calling number (a leading '+' ignored on both sides) against `ident_by=ani`
   accounts.
4. **Login without credentials** — the User-Name names a login account but no credentials came
   with it: that account is returned so that authorization answers "invalid password" rather than
   "unknown account".

Within one method every candidate must be valid on the NAS that asks (an account with no
gateways is valid on every NAS) and its tech prefix must start the called number (an empty tech
prefix starts any number). Then, most specific first:

- **CIDR** (IP only): the longest network containing the caller address. When no account at that
  network survives the filters above, the next less specific covering network is tried, and so on.
- **Tech prefix**: the longest one wins; it is stripped from the called number that is returned.
- **Protocol/port**, when the request carries them: an account whose protocol or port is set and
  differs from the request's cannot be the sender and is dropped before ranking; one whose
  protocol/port match beats one that has none set ("several accounts may share the same IP if
  protocol/port differ").
- An inactive or originator-disabled account never shadows a usable one that is otherwise
  equally specific (a deactivated old account may keep its IP next to its replacement). When
  only unusable accounts are left, the one account found is still returned so that authorization
  names the reason (account inactive, originator disabled).

Two or more accounts left after all that: AMBIGUOUS_ACCOUNT. Nothing left: UNKNOWN_ACCOUNT.

Caller addresses that are not IP addresses simply match no network; IPv4-mapped IPv6
(``::ffff:10.1.2.3``) is looked up as the IPv4 address; other IPv6 addresses only in the IPv6
tree.

Accounting uses `identify_originator` (no credentials exist there: a User-Name that names a login
account wins, as the switch reports the login it authenticated with) and `find_terminator`.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

from radiusd.core.decision import Reject
from radiusd.core.facts import AuthFacts
from radiusd.core.reasons import RejectReason
from radiusd.core.snapshot import AccountInfo, Snapshot

def normalise_ani(number: str | None) -> str:
    """A calling number as accounts store it: no spaces, no leading '+'."""
    if not number:
        return ""
    return number.strip().lstrip("+")


def _caller_ip(address: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not address or not isinstance(address, str):
        return None
    text = address.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.scope_id:
            ip = ipaddress.IPv6Address(int(ip))  # a zone id is local to the switch, not a network
    return ip


@lru_cache(maxsize=65536)
def _caller_tree_key(address: str) -> tuple[int, str] | None:
    """(IP version, canonical text) of a caller address; cached: switches repeat their callers."""
    ip = _caller_ip(address)
    return None if ip is None else (ip.version, str(ip))


def _valid_on(account: AccountInfo, nas_id: int) -> bool:
    return not account.gateway_ids or nas_id in account.gateway_ids


def _proto_port_score(account: AccountInfo, protocol: str | None, port: int | None) -> int | None:
    """None when the account cannot have sent a request with this protocol/port, else how many matched."""
    score = 0
    if protocol and account.term_protocol:
        if account.term_protocol.lower() != protocol.lower():
            return None
        score += 1
    if port is not None and account.term_port is not None:
        if account.term_port != port:
            return None
        score += 1
    return score


def _usable_originator(account: AccountInfo, snapshot: Snapshot) -> bool:
    client = snapshot.clients.get(account.client_id)
    return account.active and account.orig_enabled and client is not None and client.active


def _unique(accounts: Iterable[AccountInfo]) -> list[AccountInfo]:
    seen: dict[int, AccountInfo] = {}
    for account in accounts:
        seen.setdefault(account.id, account)
    return list(seen.values())


def _keep_best(accounts: list[AccountInfo], key) -> list[AccountInfo]:
    if not accounts:
        return accounts
    best = max(key(a) for a in accounts)
    return [a for a in accounts if key(a) == best]


def _pick_originator(
    candidates: Iterable[AccountInfo],
    snapshot: Snapshot,
    nas_id: int,
    called: str,
    protocol: str | None,
    port: int | None,
) -> list[AccountInfo]:
    """The most specific originator candidates at one level (empty: none survives the filters)."""
    scored = []
    for account in _unique(candidates):
        if not _valid_on(account, nas_id) or not called.startswith(account.tech_prefix or ""):
            continue
        score = _proto_port_score(account, protocol, port)
        if score is None:
            continue
        scored.append((account, score))
    if not scored:
        return []
    best_prefix = max(len(a.tech_prefix or "") for a, _ in scored)
    scored = [(a, s) for a, s in scored if len(a.tech_prefix or "") == best_prefix]
    best_score = max(s for _, s in scored)
    left = [a for a, s in scored if s == best_score]
    if len(left) > 1:
        usable = [a for a in left if _usable_originator(a, snapshot)]
        if usable:
            left = usable
    return left


def _by_ip(snapshot: Snapshot, address: str | None, pick) -> list[AccountInfo]:
    found_ip = _caller_tree_key(address) if isinstance(address, str) else None
    if found_ip is None:
        return []
    version, text = found_ip
    tree = snapshot.ip_accounts_v4 if version == 4 else snapshot.ip_accounts_v6
    try:
        key = tree.get_key(text)
    except (ValueError, KeyError):
        return []
    while key is not None:
        found = pick(tree.get(key) or ())
        if found:
            return found
        key = tree.parent(key)
    return []


def _by_ani(snapshot: Snapshot, calling_number: str | None, pick) -> list[AccountInfo]:
    ani = normalise_ani(calling_number)
    if not ani:
        return []
    candidates = snapshot.ani_accounts.get(ani, ()) + snapshot.ani_accounts.get("+" + ani, ())
    return pick(candidates)


def _by_name(snapshot: Snapshot, user_name: str | None, pick) -> list[AccountInfo]:
    if not user_name:
        return []
    account = snapshot.name_accounts.get(user_name)
    return pick((account,)) if account is not None else []


def _resolve(
    snapshot: Snapshot,
    nas_id: int,
    caller_address: str | None,
    user_name: str | None,
    calling_number: str | None,
    called_number: str | None,
    protocol: str | None,
    port: int | None,
    login_first: bool,
) -> tuple[AccountInfo, str] | Reject:
    called = (called_number or "").strip()

    def pick(candidates):
        return _pick_originator(candidates, snapshot, nas_id, called, protocol, port)

    methods = [
        lambda: _by_ip(snapshot, caller_address, pick),
        lambda: _by_ani(snapshot, calling_number, pick),
        lambda: _by_name(snapshot, user_name, pick),
    ]
    if login_first:
        methods.insert(0, methods.pop())
    for method in methods:
        found = method()
        if len(found) == 1:
            account = found[0]
            return account, called[len(account.tech_prefix or ""):]
        if len(found) > 1:
            ids = ", ".join(str(a.id) for a in sorted(found, key=lambda a: a.id))
            return Reject(RejectReason.AMBIGUOUS_ACCOUNT, detail=f"equally specific accounts: {ids}")
    return Reject(RejectReason.UNKNOWN_ACCOUNT, detail="no account matches login, caller address or ANI")


def identify(facts: AuthFacts, snapshot: Snapshot) -> tuple[AccountInfo, str] | Reject:
    """The account that sent an Access-Request and the called number without its tech prefix."""
    return _resolve(
        snapshot,
        facts.nas_id,
        facts.caller_address,
        facts.user_name,
        facts.calling_number,
        facts.called_number,
        facts.protocol,
        facts.port,
        login_first=facts.credentials is not None,
    )


def identify_originator(
    snapshot: Snapshot,
    nas_id: int,
    caller_address: str | None,
    user_name: str | None,
    calling_number: str | None,
    called_number: str | None,
    protocol: str | None = None,
    port: int | None = None,
) -> tuple[AccountInfo, str] | None:
    """For accounting: the originating account and stripped called number, or None (unknown/ambiguous).

    No password is involved; a User-Name naming a login account wins, then IP, then ANI.
    """
    result = _resolve(
        snapshot, nas_id, caller_address, user_name, calling_number, called_number, protocol, port,
        login_first=True,
    )
    return None if isinstance(result, Reject) else result


def find_terminator(
    snapshot: Snapshot,
    nas_id: int,
    remote_address: str | None,
    protocol: str | None = None,
    port: int | None = None,
    called_number: str | None = None,
) -> AccountInfo | None:
    """For accounting of an outgoing leg: the terminator account at `remote_address`, or None.

    Among term-enabled accounts valid on the NAS: the most specific network (falling back to less
    specific ones), then protocol/port, then the longest tech prefix starting the called number
    (when it is known). None when nothing or more than one account matches equally.
    """
    called = (called_number or "").strip() if called_number is not None else None

    def pick(candidates):
        scored = []
        for account in _unique(candidates):
            if not account.term_enabled or not _valid_on(account, nas_id):
                continue
            if called is not None and not called.startswith(account.tech_prefix or ""):
                continue
            score = _proto_port_score(account, protocol, port)
            if score is not None:
                scored.append((account, score))
        if not scored:
            return []
        best = max(s for _, s in scored)
        left = [a for a, s in scored if s == best]
        if called is not None:
            left = _keep_best(left, lambda a: len(a.tech_prefix or ""))
        if len(left) > 1:
            usable = [a for a in left if a.active]
            if usable:
                left = usable
        return left

    found = _by_ip(snapshot, remote_address, pick)
    return found[0] if len(found) == 1 else None
