"""Why a call leg ended, and what that means for the CDR's `result` (pure).

Switches report the end of a leg two ways:
- Cisco `h323-disconnect-cause`: a Q.850 cause in **hex** (`10` = 16 normal clearing, `11` = 17
  busy, `22` = 34 no circuit available ...), with or without the `h323-disconnect-cause=` prefix
  (the edge strips it; we tolerate it here too).
- RFC 2866 `Acct-Terminate-Cause` (Kamailio, Yate and most others).

`result` is what a carrier's statistics (ASR) count:
- `success`: the leg was connected (duration > 0), whatever cleared it; the cause column keeps
  the detail. A zero-length leg is never a success, even with cause 16: nobody talked.
- otherwise, from the Q.850 cause: 17 (user busy) -> `busy`; 34, 38, 41, 42, 44 (no circuit,
  network out of order, temporary failure, congestion, requested channel unavailable) ->
  `no_channel`; anything else (no answer, rejected, invalid number, normal clearing at zero
  seconds, no cause at all) -> `error`.
- with only Acct-Terminate-Cause: 15 Service-Unavailable -> `no_channel`; others -> `error`.
"""
from __future__ import annotations

BUSY = frozenset({17})
NO_CHANNEL = frozenset({34, 38, 41, 42, 44})

# RFC 2866 §5.10 Acct-Terminate-Cause names (FreeRADIUS spells them the same way).
TERMINATE_CAUSES = {
    1: "User-Request", 2: "Lost-Carrier", 3: "Lost-Service", 4: "Idle-Timeout", 5: "Session-Timeout",
    6: "Admin-Reset", 7: "Admin-Reboot", 8: "Port-Error", 9: "NAS-Error", 10: "NAS-Request",
    11: "NAS-Reboot", 12: "Port-Unneeded", 13: "Port-Preempted", 14: "Port-Suspended",
    15: "Service-Unavailable", 16: "Callback", 17: "User-Error", 18: "Host-Request",
}


def parse_q850(value: str | int | None) -> int | None:
    """The Q.850 cause number from a Cisco hex value ('10' -> 16, '2A' -> 42); None if unusable."""
    if value is None:
        return None
    if isinstance(value, int):
        return value if 0 <= value <= 127 else None
    text = str(value).strip()
    if "=" in text:
        text = text.split("=", 1)[1].strip()
    if text.lower().startswith("0x"):
        text = text[2:]
    try:
        number = int(text, 16)
    except ValueError:
        return None
    return number if 0 <= number <= 127 else None


def cause_text(q850: int | None, terminate_cause: int | None) -> str:
    """What the CDR's disconnect_cause column shows: 'q850:16', 'User-Request', 'acct:42' or ''."""
    if q850 is not None:
        return f"q850:{q850}"
    if terminate_cause is not None:
        return TERMINATE_CAUSES.get(terminate_cause, f"acct:{terminate_cause}")
    return ""


def classify(duration: int, q850: int | None, terminate_cause: int | None) -> str:
    """The CDR result: success | busy | no_channel | error (rules in the module docstring)."""
    if duration > 0:
        return "success"
    if q850 is not None:
        if q850 in BUSY:
            return "busy"
        if q850 in NO_CHANNEL:
            return "no_channel"
        return "error"
    if terminate_cause == 15:
        return "no_channel"
    return "error"


def describe(duration: int, disconnect_cause: str | int | None, terminate_cause: int | None) -> tuple[str, str]:
    """(disconnect_cause column, result) for a leg that ended after `duration` seconds."""
    q850 = parse_q850(disconnect_cause)
    return cause_text(q850, terminate_cause), classify(duration, q850, terminate_cause)
