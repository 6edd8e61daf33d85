"""Which HTTP headers cross the proxy, in each direction. Sans-I/O.

Passthrough forwards everything except hop-by-hop headers (RFC 9110 7.6.1):
those describe one connection, not the message. Experimented responses are
the opposite: only an allowlist survives, because any upstream header
(``server``, ``x-request-id``, ``openai-*``, ``anthropic-*``, rate limits,
cookies...) could reveal which checkpoint or provider served the request.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from multidict import CIMultiDict, istr

__all__ = [
    "EXPERIMENT_RESPONSE_HEADERS",
    "HOP_BY_HOP",
    "experiment_response_headers",
    "forward_request_headers",
    "forward_response_headers",
]

HOP_BY_HOP: frozenset[str] = frozenset(
    {
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
    }
)
# Request headers we never forward besides hop-by-hop ones: Host is rewritten
# for the gateway by the client library; Expect is answered by our own server
# (aiohttp sends "100 Continue" when the body is read), so repeating it would
# make the gateway wait for a second handshake.
_REQUEST_ONLY_DROP: frozenset[str] = frozenset({"host", "expect"})

#: Upstream response headers an experimented response may carry.
EXPERIMENT_RESPONSE_HEADERS: frozenset[str] = frozenset(
    {"content-type", "cache-control", "retry-after"}
)


def _connection_named(headers: Mapping[str, str] | CIMultiDict[str]) -> set[str]:
    """Header names listed in ``Connection`` (they are hop-by-hop too)."""
    named: set[str] = set()
    getall = getattr(headers, "getall", None)
    values: Iterable[str] = (
        getall("connection", ()) if getall else [headers.get("connection", "")]
    )
    for value in values:
        named.update(token.strip().lower() for token in value.split(",") if token.strip())
    return named


def _is_hop_by_hop(name: str, named: set[str]) -> bool:
    lowered = name.lower()
    return lowered in HOP_BY_HOP or lowered.startswith("proxy-") or lowered in named


def forward_request_headers(
    headers: Iterable[tuple[str, str]] | CIMultiDict[str],
    *,
    peer: str | None,
    keep_content_length: bool,
) -> CIMultiDict[str]:
    """Client request headers for the gateway (all of them, minus hop-by-hop).

    ``X-Forwarded-For`` gets the peer address appended, as every reverse proxy
    does. ``Content-Length`` is kept only when the body is forwarded with the
    same length it was announced with (streamed as received).
    """
    source = CIMultiDict(headers) if not isinstance(headers, CIMultiDict) else headers
    named = _connection_named(source)
    out: CIMultiDict[str] = CIMultiDict()
    forwarded_for: list[str] = []
    for name, value in source.items():
        lowered = name.lower()
        if _is_hop_by_hop(lowered, named) or lowered in _REQUEST_ONLY_DROP:
            continue
        if lowered == "content-length" and not keep_content_length:
            continue
        if lowered == "x-forwarded-for":
            forwarded_for.append(value)
            continue
        out.add(name, value)
    if peer:
        forwarded_for.append(peer)
    if forwarded_for:
        out[istr("X-Forwarded-For")] = ", ".join(forwarded_for)
    return out


def forward_response_headers(headers: CIMultiDict[str] | Iterable[tuple[str, str]]) -> CIMultiDict[str]:
    """Gateway response headers for the client, minus hop-by-hop and Content-Length.

    Content-Length is set by the caller from the response itself (so that a
    HEAD or 304 answer keeps it while the body framing stays correct).
    """
    source = CIMultiDict(headers) if not isinstance(headers, CIMultiDict) else headers
    named = _connection_named(source)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in source.items():
        if _is_hop_by_hop(name, named) or name.lower() == "content-length":
            continue
        out.add(name, value)
    return out


def experiment_response_headers(
    upstream: Mapping[str, str] | CIMultiDict[str], *, content_type: str | None = None
) -> CIMultiDict[str]:
    """The allowlisted subset of an upstream response's headers.

    ``content_type`` overrides the upstream's (streams are always
    ``text/event-stream``). Content-Encoding is never copied: the experiment
    client decompresses, so the bytes we send are identity-encoded.
    """
    out: CIMultiDict[str] = CIMultiDict()
    for name in sorted(EXPERIMENT_RESPONSE_HEADERS):
        value = upstream.get(name)
        if value is not None:
            out[name] = value
    if content_type is not None:
        out["content-type"] = content_type
    return out
