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
_REQUEST_DROP: frozenset[str] = HOP_BY_HOP | {"host", "expect"}
_REQUEST_DROP_LENGTH: frozenset[str] = _REQUEST_DROP | {"content-length"}

#: Upstream response headers an experimented response may carry.
EXPERIMENT_RESPONSE_HEADERS: frozenset[str] = frozenset(
    {"content-type", "cache-control", "retry-after"}
)
_EXPERIMENT_RESPONSE_ORDER = tuple(sorted(EXPERIMENT_RESPONSE_HEADERS))


def _dropped(headers: MultiMapping[str], always: frozenset[str]) -> frozenset[str]:
    """``always`` plus the header names listed in ``Connection`` (hop-by-hop too)."""
    listed = headers.getall("connection", ())
    if not listed:
        return always
    named = {token.strip().lower() for value in listed for token in value.split(",")}
    named.discard("")
    return always | named


def forward_request_headers(
    headers: MultiMapping[str], *, peer: str | None, keep_content_length: bool
) -> CIMultiDict[str]:
    """Client request headers for the gateway (all of them, minus hop-by-hop).

    ``X-Forwarded-For`` gets the peer address appended, as every reverse proxy
    does. ``Content-Length`` is kept only when the body is forwarded with the
    same length it was announced with (streamed as received).
    """
    dropped = _dropped(headers, _REQUEST_DROP if keep_content_length else _REQUEST_DROP_LENGTH)
    out: CIMultiDict[str] = CIMultiDict()
    forwarded_for: list[str] = []
    for name, value in headers.items():
        lowered = name.lower()
        if lowered in dropped or lowered.startswith("proxy-"):
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
    dropped = _dropped(headers, HOP_BY_HOP)
    return CIMultiDict([
        (name, value) for name, value in headers.items()
        if (lowered := name.lower()) not in dropped and not lowered.startswith("proxy-")
    ])


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
