"""Which NAS sent a packet: source address -> NasInfo, most specific CIDR wins (pytricia).

Separate IPv4 and IPv6 trees; an IPv4-mapped IPv6 source (::ffff:192.0.2.1, what a dual-stack
socket reports) is looked up as the IPv4 address. Built once per snapshot, never mutated.
"""
from __future__ import annotations

import ipaddress
from functools import lru_cache

import pytricia

from radiusd.core.snapshot import NasInfo, Snapshot


@lru_cache(maxsize=4096)   # a server hears from few addresses: parse each once, not per packet
def canonical_source(ip: str) -> str:
    """The source address as we look it up and log it (IPv4-mapped IPv6 -> IPv4, no scope)."""
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return str(address.ipv4_mapped)
    return str(address)


class NasTable:
    def __init__(self, nas: list[NasInfo] | tuple[NasInfo, ...] = ()):
        self._v4 = pytricia.PyTricia(32)
        self._v6 = pytricia.PyTricia(128)
        for info in nas:
            network = ipaddress.ip_network(info.address, strict=False)
            tree = self._v6 if network.version == 6 else self._v4
            tree[str(network)] = info
        self._v4.freeze()
        self._v6.freeze()
        self._found: dict[str, NasInfo | None] = {}   # source -> NAS, filled as packets arrive

    @classmethod
    def from_snapshot(cls, snapshot: Snapshot) -> "NasTable":
        return cls(list(snapshot.nas.values()))

    def lookup(self, source_ip: str) -> NasInfo | None:
        """The NAS whose address/CIDR most specifically covers source_ip (active or not)."""
        try:
            return self._found[source_ip]
        except KeyError:
            pass
        ip = canonical_source(source_ip)
        tree = self._v6 if ":" in ip else self._v4
        try:
            found = tree.get(ip)
        except (KeyError, ValueError):
            found = None
        if len(self._found) >= 4096:   # bounded: a flood from random sources must not grow it
            self._found.clear()
        self._found[source_ip] = found
        return found
