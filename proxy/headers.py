"""Which HTTP headers cross the proxy, in each direction. Sans-I/O.

Passthrough forwards everything except hop-by-hop headers (RFC 9110 7.6.1):
those describe one connection, not the message. Experimented responses are
the opposite: only an allowlist survives, because any upstream header
(``server``, ``x-request-id``, ``openai-*``, ``anthropic-*``, rate limits,
cookies...) could reveal which checkpoint or provider served the request.
"""

from __future__ import annotations

from multidict import CIMultiDict, MultiMapping, istr

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
_EXPERIMENT_RESPONSE_ORDER = tuple(sorted(EXPERIMENT_RESPONSE_HEADERS))


def _connection_named(headers: MultiMapping[str]) -> set[str]:
    """Header names listed in ``Connection`` (they are hop-by-hop too)."""
    named: set[str] = set()
    for value in headers.getall("connection", ()):
        named.update(token.strip().lower() for token in value.split(",") if token.strip())
    return named


def _is_hop_by_hop(name: str, named: set[str]) -> bool:
    lowered = name.lower()
    return lowered in HOP_BY_HOP or lowered.startswith("proxy-") or lowered in named


def forward_request_headers(
    headers: MultiMapping[str], *, peer: str | None, keep_content_length: bool
) -> CIMultiDict[str]:
    """Client request headers for the gateway (all of them, minus hop-by-hop).

    ``X-Forwarded-For`` gets the peer address appended, as every reverse proxy
    does. ``Content-Length`` is kept only when the body is forwarded with the
    same length it was announced with (streamed as received).
    """
    named = _connection_named(headers)
    out: CIMultiDict[str] = CIMultiDict()
    forwarded_for: list[str] = []
    for name, value in headers.items():
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


def forward_response_headers(headers: MultiMapping[str]) -> CIMultiDict[str]:
    """Gateway response headers for the client, minus hop-by-hop ones.

    Content-Length stays: the body is relayed unchanged (never decompressed),
    and aiohttp's server keeps it for HEAD and 304 answers without a body.
    """
    named = _connection_named(headers)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        if _is_hop_by_hop(name, named):
            continue
        out.add(name, value)
    return out


def experiment_response_headers(
    upstream: MultiMapping[str], *, content_type: str | None = None
) -> CIMultiDict[str]:
    """The allowlisted subset of an upstream response's headers.

    ``content_type`` overrides the upstream's (streams are always
    ``text/event-stream``). Content-Encoding is never copied: the experiment
    client decompresses, so the bytes we send are identity-encoded.
    """
    out: CIMultiDict[str] = CIMultiDict()
    for name in _EXPERIMENT_RESPONSE_ORDER:
        value = upstream.get(name)
        if value is not None:
            out[name] = value
    if content_type is not None:
        out["content-type"] = content_type
    return out
