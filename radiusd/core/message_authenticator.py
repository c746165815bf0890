"""The per-NAS Message-Authenticator policy for Access-Requests (BlastRADIUS, CVE-2024-3596).

Policies, as FreeRADIUS 3.2.5-3.2.8 ship them (`require_message_authenticator`,
`limit_proxy_state`):

- `yes`:  every Access-Request must carry a valid Message-Authenticator.
- `no`:   it is verified when present, never required.
- `auto`: (the default) like `no` until the NAS sends one valid Message-Authenticator; from then
  on like `yes` (the NAS has shown it can, so a request without one is forged). The learned
  state is stored, so it survives restarts and is shared by workers and servers.

Whatever the policy, an Access-Request carrying Proxy-State without Message-Authenticator is
dropped: that is the signature of the published attack, and a switch talking to us directly sends
no Proxy-State. A Message-Authenticator that is present is always verified.

`check` is the whole rule, a pure function; the edge verifies the HMAC, calls it, and stores what
it says to learn.
"""
from __future__ import annotations

from dataclasses import dataclass

POLICIES = ("yes", "no", "auto")
DEFAULT_POLICY = "auto"

# drop reasons, as counted in radiusd_packets_dropped_total{reason}
BAD = "bad_message_authenticator"
MISSING = "missing_message_authenticator"
PROXY_STATE = "proxy_state_without_message_authenticator"


@dataclass(frozen=True, slots=True)
class Verdict:
    accept: bool
    drop_reason: str | None = None
    learn: bool = False          # auto: first valid Message-Authenticator from this NAS: remember it


ACCEPT = Verdict(True)
LEARN = Verdict(True, learn=True)


def required(policy: str, learned: bool) -> bool:
    """Whether an Access-Request from this NAS must carry Message-Authenticator right now."""
    return policy == "yes" or (policy == "auto" and learned)


def check(policy: str, learned: bool, has_ma: bool, ma_valid: bool, has_proxy_state: bool) -> Verdict:
    """Accept, drop (with the reason) or accept-and-learn one Access-Request."""
    if has_ma:
        if not ma_valid:
            return Verdict(False, BAD)
        return LEARN if policy == "auto" and not learned else ACCEPT
    if required(policy, learned):
        return Verdict(False, MISSING)
    if has_proxy_state:
        return Verdict(False, PROXY_STATE)
    return ACCEPT


def describe(policy: str, learned: bool) -> str:
    """One phrase for `nas show` and the log: what this NAS is held to now."""
    if policy == "yes":
        return "required"
    if policy == "no":
        return "not required (verified when present; Proxy-State without it dropped)"
    if learned:
        return "required (learned: the NAS sends it)"
    return "not required until the NAS sends one (Proxy-State without it dropped)"
