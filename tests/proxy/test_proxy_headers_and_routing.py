"""Sans-I/O pieces of the proxy's I/O layer: header policies and the routing decision."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from proxy.errors import BadRequest, UpstreamTimeout
from proxy.experiment import stream_error_event, upstream_headers
from proxy.headers import (
    experiment_response_headers,
    forward_request_headers,
    forward_response_headers,
)
from proxy.routing import MemberIndex, candidate_api_kind

MEMBER = "partner/preview-foo"


# -- headers -----------------------------------------------------------------------


def test_request_headers_lose_hop_by_hop_host_and_expect_and_keep_the_rest() -> None:
    headers = CIMultiDict(
        [
            ("Host", "proxy.local"),
            ("Connection", "keep-alive, X-Private-Hop"),
            ("X-Private-Hop", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Transfer-Encoding", "chunked"),
            ("Upgrade", "h2c"),
            ("Proxy-Authorization", "Basic x"),
            ("Proxy-Anything", "x"),
            ("TE", "trailers"),
            ("Trailer", "X-Sum"),
            ("Expect", "100-continue"),
            ("Authorization", "Bearer t"),
            ("Accept", "a"),
            ("Accept", "b"),
        ]
    )
    out = forward_request_headers(headers, peer=None, keep_content_length=True)
    assert list(out.items()) == [("Authorization", "Bearer t"), ("Accept", "a"), ("Accept", "b")]


def test_request_content_length_is_kept_only_when_the_body_is_streamed_as_announced() -> None:
    headers = CIMultiDict([("Content-Length", "12")])
    assert (
        forward_request_headers(headers, peer=None, keep_content_length=True)["Content-Length"]
        == "12"
    )
    assert "Content-Length" not in forward_request_headers(
        headers, peer=None, keep_content_length=False
    )


def test_x_forwarded_for_values_are_joined_and_the_peer_appended() -> None:
    headers = CIMultiDict([("X-Forwarded-For", "1.1.1.1"), ("X-Forwarded-For", "2.2.2.2")])
    out = forward_request_headers(headers, peer="10.0.0.1", keep_content_length=True)
    assert out.getall("X-Forwarded-For") == ["1.1.1.1, 2.2.2.2, 10.0.0.1"]


def test_response_headers_keep_length_and_cookies_and_drop_hop_by_hop() -> None:
    headers = CIMultiDict(
        [
            ("Content-Length", "5"),
            ("Set-Cookie", "a=1"),
            ("Set-Cookie", "b=2"),
            ("Transfer-Encoding", "chunked"),
            ("Connection", "close"),
        ]
    )
    out = forward_response_headers(headers)
    assert list(out.items()) == [
        ("Content-Length", "5"),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
    ]


def test_experiment_responses_carry_only_allowlisted_headers() -> None:
    upstream = CIMultiDict(
        [
            ("Content-Type", "application/json"),
            ("Cache-Control", "no-cache"),
            ("Retry-After", "3"),
            ("Server", "partner-edge"),
            ("X-Request-Id", "req_1"),
            ("OpenAI-Organization", "org"),
            ("Anthropic-Organization-Id", "org"),
            ("Via", "1.1 partner"),
            ("Set-Cookie", "x=1"),
            ("Content-Encoding", "gzip"),
            ("X-Ratelimit-Remaining-Requests", "9"),
        ]
    )
    out = experiment_response_headers(upstream)
    assert dict(out) == {
        "cache-control": "no-cache",
        "content-type": "application/json",
        "retry-after": "3",
    }


# -- upstream request headers and stream errors ------------------------------------------


def test_chat_and_responses_send_the_partner_key_as_a_bearer_token_only() -> None:
    client = CIMultiDict([("Authorization", "Bearer client"), ("Cookie", "c=1")])
    for kind in ("chat_completions", "responses"):
        assert upstream_headers(kind, "sk-p", client, stream=False) == {
            "content-type": "application/json",
            "accept": "application/json",
            "authorization": "Bearer sk-p",
        }


def test_messages_send_x_api_key_and_a_default_anthropic_version() -> None:
    headers = upstream_headers("messages", "sk-p", CIMultiDict(), stream=True)
    assert headers == {
        "content-type": "application/json",
        "accept": "text/event-stream",
        "x-api-key": "sk-p",
        "anthropic-version": "2023-06-01",
    }


@pytest.mark.parametrize("kind", ["chat_completions", "responses", "messages"])
def test_stream_error_events_parse_in_each_api_format(kind: str) -> None:
    event = stream_error_event(kind, UpstreamTimeout())
    assert event.endswith(b"\n\n")
    data = next(line for line in event.split(b"\n") if line.startswith(b"data: "))
    payload = orjson.loads(data.removeprefix(b"data: "))
    if kind == "chat_completions":
        assert payload["error"]["code"] == "upstream_timeout"
    else:
        assert event.startswith(b"event: error\n")
        assert payload["type"] == "error"


# -- routing -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "kind"),
    [
        ("POST", "/v1/chat/completions", "chat_completions"),
        ("POST", "/chat/completions", "chat_completions"),
        ("POST", "/api/openai/v1/responses", "responses"),
        ("POST", "/v1/messages", "messages"),
        ("GET", "/v1/chat/completions", None),
        ("POST", "/v1/responses/resp_1/cancel", None),
        ("POST", "/v1/chat/completions/", None),
        ("POST", "/v1/embeddings", None),
    ],
)
def test_only_posts_to_llm_endpoints_are_candidates(
    method: str, path: str, kind: str | None
) -> None:
    assert candidate_api_kind(method, path) == kind


def _index(*members: str) -> MemberIndex:
    index = MemberIndex()
    index.refresh(frozenset(members))
    return index


def test_a_body_naming_a_member_as_model_is_a_candidate() -> None:
    match = _index(MEMBER).match(orjson.dumps({"model": MEMBER, "messages": []}))
    assert match is not None
    assert match.public_model_id == MEMBER


def test_a_member_mentioned_outside_model_is_not_a_candidate() -> None:
    body = orjson.dumps({"model": "gpt-prod", "messages": [{"content": MEMBER}]})
    assert _index(MEMBER).match(body) is None


def test_malformed_json_is_refused_only_when_it_names_a_member() -> None:
    with pytest.raises(BadRequest):
        _index(MEMBER).match(b'{"model": "partner/preview-foo"')
    assert _index(MEMBER).match(b'{"model": "gpt-prod"') is None


def test_an_escaped_member_id_is_recognised() -> None:
    match = _index(MEMBER).match(b'{"model": "partner\\/preview-\\u0066oo"}')
    assert match is not None and match.public_model_id == MEMBER


def test_refresh_re_encodes_only_when_the_member_set_changes() -> None:
    index = _index(MEMBER)
    body = orjson.dumps({"model": "other"})
    assert index.match(body) is None
    index.refresh(frozenset({"other"}))
    assert index.match(body) is not None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(
    model=st.one_of(st.sampled_from([MEMBER, "gpt-prod", "partner/preview"]), st.text(max_size=30)),
    rest=st.dictionaries(
        st.text(max_size=8).filter(lambda k: k != "model"), json_values, max_size=4
    ),
    ascii_only=st.booleans(),
)
def test_match_agrees_with_parsing_the_model_field(
    model: str, rest: dict[str, object], ascii_only: bool
) -> None:
    import json

    body = json.dumps({"model": model, **rest}, ensure_ascii=ascii_only).encode()
    match = _index(MEMBER, "partner/preview-bar").match(body)
    expected = model if model in {MEMBER, "partner/preview-bar"} else None
    assert (match.public_model_id if match else None) == expected


@given(st.binary(max_size=200))
def test_match_never_raises_anything_but_bad_request(body: bytes) -> None:
    try:
        _index(MEMBER).match(body)
    except BadRequest:
        assert MEMBER.encode() in body
