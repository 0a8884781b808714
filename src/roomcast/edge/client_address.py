"""Who a request comes from: the TCP peer, or the client a trusted proxy names.

``X-Forwarded-For`` is honoured only when the TCP peer is one of the configured
``trusted_proxies`` (addresses or networks): anyone else could write any address there. Its
entries are read right to left, skipping trusted proxies; the first other entry is the client
(the address the outermost trusted proxy saw). Limits keyed by client use ``limit_key``, which
groups an IPv6 client by its /64: one host usually holds a whole /64 and could otherwise rotate
through its addresses to get a fresh budget each time.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from aiohttp import web

MAX_KEY_LENGTH = 64  # an unparseable forwarded entry is kept as text, this long at most

_IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

CLIENT_ADDRESS = web.RequestKey("client_address", str)


def _parse(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]:443"
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "192.0.2.1:443"
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


class ClientAddresses:
    def __init__(self, trusted_proxies: Iterable[str] = ()) -> None:
        self._trusted: list[_IPNetwork] = [
            ipaddress.ip_network(proxy, strict=False) for proxy in trusted_proxies
        ]

    def is_trusted(self, address: str) -> bool:
        ip = _parse(address)
        return ip is not None and any(ip in network for network in self._trusted)

    def client_of(self, peer: str, forwarded_for: Iterable[str] = ()) -> str:
        """The client's address, given the TCP peer and the X-Forwarded-For header values."""
        if not self._trusted or not self.is_trusted(peer):
            return peer
        entries = [entry.strip() for value in forwarded_for for entry in value.split(",")]
        for entry in reversed([e for e in entries if e]):
            ip = _parse(entry)
            if ip is None:
                return entry[:MAX_KEY_LENGTH]
            if not any(ip in network for network in self._trusted):
                return str(ip)
        return peer  # only proxies in the chain: the request comes from one of them

    def of(self, request: web.Request) -> str:
        return self.client_of(request.remote or "", request.headers.getall("X-Forwarded-For", ()))


def client_address(request: web.Request) -> str:
    """The client address the edge's middleware resolved (the TCP peer without it)."""
    return request.get(CLIENT_ADDRESS) or request.remote or ""


def limit_key(address: str) -> str:
    """The key a per-client limit counts ``address`` under: IPv4 as is, IPv6 by its /64."""
    ip = _parse(address)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip) if ip is not None else address[:MAX_KEY_LENGTH]
