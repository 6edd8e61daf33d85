"""proxy.errors: the proxy's own answers, in the OpenAI error shape."""

from __future__ import annotations

import orjson
import pytest

from proxy.errors import (
    BadRequest,
    DataCollectionRequired,
    ModelNotFound,
    PayloadTooLarge,
    ProxyError,
    Unauthorized,
    Unavailable,
    UnsupportedApi,
    UpstreamTimeout,
    UpstreamUnreachable,
    openai_error,
)


def test_openai_error_shape() -> None:
    assert orjson.loads(
        openai_error(404, "no such model", "invalid_request_error", "model_not_found")
    ) == {
        "error": {
            "message": "no such model",
            "type": "invalid_request_error",
            "code": "model_not_found",
        }
    }


@pytest.mark.parametrize("status", [200, 302, 399, 600])
def test_openai_error_needs_an_error_status(status: int) -> None:
    with pytest.raises(ValueError, match="error status"):
        openai_error(status, "m", "t", "c")


@pytest.mark.parametrize(
    ("error", "status", "type_", "code"),
    [
        (BadRequest, 400, "invalid_request_error", "invalid_request"),
        (ModelNotFound, 404, "invalid_request_error", "model_not_found"),
        (Unavailable, 503, "server_error", "temporarily_unavailable"),
        (DataCollectionRequired, 400, "invalid_request_error", "data_collection_required"),
        (UnsupportedApi, 400, "invalid_request_error", "unsupported_api"),
        (Unauthorized, 401, "authentication_error", "invalid_token"),
        (PayloadTooLarge, 413, "invalid_request_error", "request_too_large"),
        (UpstreamUnreachable, 502, "server_error", "upstream_unreachable"),
        (UpstreamTimeout, 504, "server_error", "upstream_timeout"),
    ],
)
def test_each_error_carries_its_status_type_and_code(
    error: type[ProxyError], status: int, type_: str, code: str
) -> None:
    exc = error()
    assert isinstance(exc, ProxyError)
    assert (exc.status, exc.type, exc.code) == (status, type_, code)
    body = orjson.loads(exc.body())["error"]
    assert body == {"message": exc.message, "type": type_, "code": code}
    assert body["message"]


ALL_ERRORS = [
    BadRequest,
    ModelNotFound,
    Unavailable,
    DataCollectionRequired,
    UnsupportedApi,
    Unauthorized,
    PayloadTooLarge,
    UpstreamUnreachable,
    UpstreamTimeout,
]


@pytest.mark.parametrize("error", ALL_ERRORS)
def test_default_messages_do_not_unblind(error: type[ProxyError]) -> None:
    message = error().message.lower()
    for word in ("upstream", "variant", "experiment", "internal", "checkpoint", "partner"):
        assert word not in message


def test_message_and_code_can_be_given() -> None:
    exc = Unauthorized("The API key is invalid.", code="invalid_api_key")
    assert orjson.loads(exc.body()) == {
        "error": {
            "message": "The API key is invalid.",
            "type": "authentication_error",
            "code": "invalid_api_key",
        }
    }
    assert str(exc) == "The API key is invalid."


def test_repr_shows_status_and_code_only() -> None:
    assert (
        repr(BadRequest("body mentions sk-secret"))
        == "BadRequest(status=400, code='invalid_request')"
    )
