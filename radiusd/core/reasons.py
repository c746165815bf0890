"""The one catalogue of reject reasons, mapped to Cisco `h323-return-code` and `Reply-Message`.

Codes follow the Cisco IVR convention as published by PortaOne (see
shared/reference/voip-radius.md §2.4); GnuGK and Welltech read them the same way.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True, slots=True)
class _Reason:
    return_code: int
    message: str


class RejectReason(Enum):
    UNKNOWN_ACCOUNT = _Reason(1, "unknown account")
    AMBIGUOUS_ACCOUNT = _Reason(1, "ambiguous account: several accounts match equally")
    BAD_PASSWORD = _Reason(2, "invalid password")
    CAPACITY_ACCOUNT = _Reason(3, "account capacity reached")
    CAPACITY_CLIENT = _Reason(3, "client capacity reached")
    BALANCE_EXHAUSTED = _Reason(4, "zero balance")
    CLIENT_INACTIVE = _Reason(7, "client inactive")
    ACCOUNT_INACTIVE = _Reason(7, "account inactive")
    ORIGINATOR_DISABLED = _Reason(7, "originator disabled")
    SERVICE_UNAVAILABLE = _Reason(8, "service not available")
    NO_RATE = _Reason(9, "no rate for destination")
    INVALID_REQUEST = _Reason(11, "invalid request: no called number")
    INSUFFICIENT_BALANCE = _Reason(12, "insufficient balance for another simultaneous call")

    @property
    def return_code(self) -> int:
        return self.value.return_code

    @property
    def message(self) -> str:
        return self.value.message
