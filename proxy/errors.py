"""Errors the proxy answers itself, in the OpenAI shape ``{"error": {message, type, code}}``.

Every :class:`ProxyError` carries the HTTP status and renders its own body, so a
handler only does ``except ProxyError as e: return Response(status=e.status,
body=e.body())``. Default messages are generic on purpose: an error a client
sees must never name the upstream, its host, the internal model id, the variant
or the experiment (that would unblind the test). Callers that pass their own
message own that rule for it.
"""

from __future__ import annotations

from typing import ClassVar

import orjson

__all__ = [
    "BadRequest",
    "DataCollectionRequired",
    "ModelNotFound",
    "PayloadTooLarge",
    "ProxyError",
    "Unauthorized",
    "Unavailable",
    "UnsupportedApi",
    "UpstreamTimeout",
    "UpstreamUnreachable",
    "openai_error",
]


def openai_error(status: int, message: str, type_: str, code: str) -> bytes:
    """The JSON body of an OpenAI-style error.

    ``status`` is not part of the OpenAI body; it is taken so call sites read
    like the response they build, and is checked to be an error status.
    """
    if not 400 <= status <= 599:
        raise ValueError(f"not an error status: {status}")
    return orjson.dumps({"error": {"message": message, "type": type_, "code": code}})


class ProxyError(Exception):
    """Base of the errors the proxy answers with instead of an upstream response."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    default_code: ClassVar[str] = "internal_error"
    default_message: ClassVar[str] = "The server had an error while processing the request."

    def __init__(self, message: str | None = None, *, code: str | None = None) -> None:
        self.message = message if message is not None else self.default_message
        self.code = code if code is not None else self.default_code
        super().__init__(self.message)

    def body(self) -> bytes:
        return openai_error(self.status, self.message, self.type, self.code)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, code={self.code!r})"


class BadRequest(ProxyError):
    status = 400
    type = "invalid_request_error"
    default_code = "invalid_request"
    default_message = "The request body is invalid."


class ModelNotFound(ProxyError):
    status = 404
    type = "invalid_request_error"
    default_code = "model_not_found"
    default_message = "The model does not exist or you do not have access to it."


class DataCollectionRequired(ProxyError):
    status = 400
    type = "invalid_request_error"
    default_code = "data_collection_required"
    default_message = (
        "This preview model requires data collection; requests that deny data collection "
        "or require zero data retention cannot be served."
    )


class UnsupportedApi(ProxyError):
    status = 400
    type = "invalid_request_error"
    default_code = "unsupported_api"
    default_message = "This model is not available on this API endpoint."


class Unauthorized(ProxyError):
    """401. ``code`` is ``invalid_token`` (a bad bearer JWT) or ``invalid_api_key``."""

    status = 401
    type = "authentication_error"
    default_code = "invalid_token"
    default_message = "The bearer token is invalid or expired."


class PayloadTooLarge(ProxyError):
    status = 413
    type = "invalid_request_error"
    default_code = "request_too_large"
    default_message = "The request body is too large."


class Unavailable(ProxyError):
    status = 503
    type = "server_error"
    default_code = "temporarily_unavailable"
    default_message = "The model is temporarily unavailable. Please retry later."


class UpstreamUnreachable(ProxyError):
    status = 502
    type = "server_error"
    default_code = "upstream_unreachable"
    default_message = "The model backend could not be reached."


class UpstreamTimeout(ProxyError):
    status = 504
    type = "server_error"
    default_code = "upstream_timeout"
    default_message = "The model backend did not answer in time."
