"""Which "source" a peer's address counts as, for every per-source limit of every role.

An IPv4 address is one source; an IPv6 address counts as its /64 network, since one host
usually owns a whole /64 and per-address counting would not cap it. IPv4-mapped IPv6 addresses
count as the IPv4 address. Anything else (no address, a name) is its own text.
"""

from __future__ import annotations

import ipaddress

UNKNOWN_SOURCE = "unknown"


def source_key(address: str | None) -> str:
    """The bucket ``address`` counts in for per-source limits."""
    if not address:
        return UNKNOWN_SOURCE
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)
