"""The proxy's outbound HTTP clients: one pooled session per destination class.

* ``gateway``: passthrough traffic to the operator's gateway. Bodies are
  forwarded byte for byte, so responses are not decompressed
  (``auto_decompress=False``) and aiohttp adds no headers of its own.
* ``partner``: experimented requests to partner upstreams. Responses are
  decompressed (they are rewritten before the client sees them), and every
  connection is checked against :func:`abgate.upstream.is_forbidden_address`
  *after* DNS resolution, on the exact address being connected to, so a host
  name that resolves to a metadata or link-local address (DNS rebinding) is
  refused even though its ``base_url`` passed validation.

Neither session keeps cookies: a shared cookie jar would hand one client's
cookies to the next.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from abgate.upstream import is_forbidden_address

__all__ = [
    "ForbiddenAddressError",
    "UpstreamClients",
    "UpstreamTimer",
    "guarded_socket_factory",
]

# aiohttp adds these when absent; passthrough must not invent headers.
_NO_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
_DNS_TTL_S = 10
_KEEPALIVE_S = 30.0
_CONNECT_TIMEOUT_S = 10.0


class ForbiddenAddressError(OSError):
    """The upstream host resolved to an address the proxy must not connect to."""

    def __init__(self) -> None:
        # No address in the message: it would name the partner's infrastructure.
        super().__init__("refused to connect: upstream resolved to a forbidden address")


def guarded_socket_factory(*, allow_insecure: bool) -> Any:
    """A TCPConnector ``socket_factory`` that refuses forbidden destination addresses.

    aiohttp calls it with the resolved address it is about to connect to (also
    for literal IP hosts, which skip the resolver), so the check and the
    connection use the same address.
    """

    def factory(addr_info: tuple[Any, ...]) -> socket.socket:
        family, type_, proto, _canonname, sockaddr = addr_info
        host = sockaddr[0]
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            raise ForbiddenAddressError() from None
        if is_forbidden_address(address, allow_insecure=allow_insecure):
            raise ForbiddenAddressError()
        return socket.socket(family=family, type=type_, proto=proto)

    return factory


@dataclass
class UpstreamClients:
    """The two sessions; create inside a running loop, ``close()`` on shutdown."""

    gateway: aiohttp.ClientSession
    partner: aiohttp.ClientSession

    @classmethod
    def create(cls, *, allow_insecure_upstream: bool) -> UpstreamClients:
        gateway = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=0, ttl_dns_cache=_DNS_TTL_S, keepalive_timeout=_KEEPALIVE_S
            ),
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=_CONNECT_TIMEOUT_S, sock_read=None
            ),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=_NO_AUTO_HEADERS,
            trust_env=False,
        )
        partner = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=0,
                ttl_dns_cache=_DNS_TTL_S,
                keepalive_timeout=_KEEPALIVE_S,
                socket_factory=guarded_socket_factory(allow_insecure=allow_insecure_upstream),
            ),
            auto_decompress=True,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent",),
            trust_env=False,
        )
        return cls(gateway=gateway, partner=partner)

    async def close(self) -> None:
        await self.gateway.close()
        await self.partner.close()


class UpstreamTimer:
    """Wall time of one request split into "waiting for the upstream" and the rest.

    ``abgate_overhead_seconds`` is the rest: what the proxy itself adds.
    """

    __slots__ = ("started", "upstream_wait")

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.upstream_wait = 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def overhead(self, elapsed: float) -> float:
        """The proxy's own share of ``elapsed`` (one clock read serves both metrics)."""
        return max(0.0, elapsed - self.upstream_wait)
