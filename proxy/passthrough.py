"""Passthrough: relay a request to the gateway unchanged, streaming both ways.

Everything that is not an experimented call ends here. The method, the raw
path and query, the headers (minus hop-by-hop ones) and the body bytes go to
``ABGATE_GATEWAY_URL``; the gateway's status, headers and body bytes come back
as they arrive. Nothing is parsed, decompressed or buffered: a request body
that was not read for routing is streamed straight from the client socket.
"""

from __future__ import annotations

import logging
import time

import aiohttp
from aiohttp import web
from yarl import URL

from proxy.errors import UpstreamUnreachable
from proxy.headers import forward_request_headers, forward_response_headers
from proxy.upstream_client import UpstreamTimer

__all__ = ["forward"]

log = logging.getLogger("abgate.proxy.passthrough")


def _target(request: web.BaseRequest) -> str:
    """The request target exactly as the client sent it (path + raw query)."""
    raw = request.raw_path
    return raw if raw.startswith("/") else request.rel_url.raw_path_qs


async def forward(
    request: web.BaseRequest,
    *,
    session: aiohttp.ClientSession,
    gateway_url: str | None,
    body: bytes | None,
    timer: UpstreamTimer,
) -> web.StreamResponse:
    """Relay ``request`` to the gateway and its answer back to the client.

    ``body`` is the request body when the router already read it; otherwise
    the body is streamed from the client as it arrives. Raises
    :class:`~proxy.errors.UpstreamUnreachable` (502) when no answer could be
    obtained; once the answer has started, a gateway failure drops the client
    connection so the client sees a truncated response, never a complete one.
    """
    if gateway_url is None:
        raise UpstreamUnreachable("no gateway is configured (ABGATE_GATEWAY_URL is not set)")
    data: bytes | aiohttp.StreamReader | None
    if body is not None:
        data = body
    elif request.body_exists:
        data = request.content
    else:
        data = None
    headers = forward_request_headers(
        request.headers, peer=request.remote, keep_content_length=body is None
    )
    url = URL(gateway_url + _target(request), encoded=True)
    started = time.perf_counter()
    try:
        upstream = await session.request(
            request.method, url, headers=headers, data=data, allow_redirects=False
        )
    except aiohttp.ClientError as exc:
        log.warning("gateway request failed: %s", type(exc).__name__)
        raise UpstreamUnreachable("the gateway could not be reached") from None
    finally:
        timer.upstream_wait += time.perf_counter() - started
    try:
        return await _relay(request, upstream, timer)
    finally:
        # Returns the connection to the pool when fully read, else closes it.
        upstream.release()


async def _relay(
    request: web.BaseRequest, upstream: aiohttp.ClientResponse, timer: UpstreamTimer
) -> web.StreamResponse:
    response = web.StreamResponse(
        status=upstream.status,
        reason=upstream.reason,
        headers=forward_response_headers(upstream.headers),
    )
    await response.prepare(request)
    content = upstream.content
    while True:
        started = time.perf_counter()
        try:
            # Everything received so far in one write; wait only when there is nothing.
            chunk = content.read_nowait()
            if not chunk and not content.at_eof():
                chunk = await content.readany()
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("gateway response failed mid-body: %s", type(exc).__name__)
            _abort(request)
            return response
        finally:
            timer.upstream_wait += time.perf_counter() - started
        if not chunk:
            break
        await response.write(chunk)
    await response.write_eof()
    return response


def _abort(request: web.BaseRequest) -> None:
    """Drop the client connection so a truncated body cannot look complete."""
    transport = request.transport
    if transport is not None:
        transport.close()
