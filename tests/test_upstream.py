"""abgate.upstream: strict validation of the ``upstream`` object."""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.provisional import urls

from abgate.upstream import (
    API_KINDS,
    DEFAULT_TIMEOUT_S,
    EXTRA_BODY_RESERVED_KEYS,
    REMOVE_PROTECTED_KEYS,
    Upstream,
    UpstreamError,
    forbidden_address_reason,
    is_forbidden_address,
    parse_upstream,
)

BASE = {
    "internal_id": "partner/ckpt-2025-01-31",
    "base_url": "https://api.partner.example/v1",
    "api_kind": "chat_completions",
}


def parse(allow_insecure: bool = False, **fields: Any) -> Upstream:
    return parse_upstream({**BASE, **fields}, allow_insecure=allow_insecure)


def error(value: Any, allow_insecure: bool = False) -> UpstreamError:
    with pytest.raises(UpstreamError) as info:
        parse_upstream(value, allow_insecure=allow_insecure)
    err = info.value
    assert str(err).startswith(err.field + ": ")
    return err


def field_error(allow_insecure: bool = False, **fields: Any) -> UpstreamError:
    return error({**BASE, **fields}, allow_insecure)


def url_error(url: str, allow_insecure: bool = False) -> UpstreamError:
    err = field_error(allow_insecure, base_url=url)
    assert err.field == "upstream.base_url"
    return err


# --------------------------------------------------------------------------
# valid input and canonical form
# --------------------------------------------------------------------------


def test_minimal_upstream_gets_defaults() -> None:
    up = parse()
    assert up == Upstream(
        internal_id="partner/ckpt-2025-01-31",
        base_url="https://api.partner.example/v1",
        api_kind="chat_completions",
    )
    assert up.extra_body == {}
    assert up.remove_from_body == ()
    assert up.timeout_s == DEFAULT_TIMEOUT_S == 600.0


def test_full_upstream_is_parsed() -> None:
    up = parse(
        api_kind="messages",
        extra_body={"temperature": 0.2, "thinking": {"type": "enabled", "budget_tokens": 1024}},
        remove_from_body=["logprobs", "top_logprobs"],
        timeout_s=120,
    )
    assert up.api_kind == "messages"
    assert up.extra_body == {
        "temperature": 0.2,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }
    assert up.remove_from_body == ("logprobs", "top_logprobs")
    assert up.timeout_s == 120.0
    assert isinstance(up.timeout_s, float)


def test_null_optional_fields_mean_defaults() -> None:
    up = parse(extra_body=None, remove_from_body=None, timeout_s=None)
    assert (up.extra_body, up.remove_from_body, up.timeout_s) == ({}, (), 600.0)


@pytest.mark.parametrize(
    ("kind", "suffix"),
    [
        ("chat_completions", "/chat/completions"),
        ("responses", "/responses"),
        ("messages", "/messages"),
    ],
)
def test_endpoint_url_appends_the_api_kind_path(kind: str, suffix: str) -> None:
    assert parse(api_kind=kind).endpoint_url == "https://api.partner.example/v1" + suffix


def test_api_kinds_are_the_three_contract_kinds() -> None:
    assert API_KINDS == ("chat_completions", "responses", "messages")


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("https://api.partner.example/v1/", "https://api.partner.example/v1"),
        ("https://api.partner.example//", "https://api.partner.example"),
        ("https://api.partner.example", "https://api.partner.example"),
        ("HTTPS://API.Partner.Example/V1", "https://api.partner.example/V1"),
        ("https://api.partner.example:443/v1", "https://api.partner.example/v1"),
        ("https://api.partner.example:8443/v1", "https://api.partner.example:8443/v1"),
        ("https://[2606:4700:0:0::1111]/v1", "https://[2606:4700::1111]/v1"),
        ("https://api.partner.example./v1", "https://api.partner.example./v1"),
    ],
)
def test_base_url_is_normalised(raw: str, normalised: str) -> None:
    assert parse(base_url=raw).base_url == normalised


def test_http_default_port_is_dropped_when_insecure_allowed() -> None:
    up = parse(True, base_url="http://api.partner.example:80/v1")
    assert up.base_url == "http://api.partner.example/v1"


def test_to_json_is_the_canonical_form_with_every_field() -> None:
    up = parse(base_url="https://API.partner.example/v1/", remove_from_body=["a", "a"])
    assert up.to_json() == {
        "internal_id": "partner/ckpt-2025-01-31",
        "base_url": "https://api.partner.example/v1",
        "api_kind": "chat_completions",
        "extra_body": {},
        "remove_from_body": ["a"],
        "timeout_s": 600.0,
    }


def test_to_json_parses_back_to_an_equal_upstream() -> None:
    up = parse(extra_body={"a": [1, {"b": None}]}, remove_from_body=["x"], timeout_s=3)
    assert parse_upstream(up.to_json(), allow_insecure=False) == up


def test_to_json_returns_an_independent_copy() -> None:
    up = parse(extra_body={"a": {"b": 1}})
    up.to_json()["extra_body"]["a"]["b"] = 2
    assert up.extra_body == {"a": {"b": 1}}


def test_parsed_extra_body_is_independent_of_the_input() -> None:
    raw = {"a": {"b": [1]}}
    up = parse(extra_body=raw)
    raw["a"]["b"].append(2)
    assert up.extra_body == {"a": {"b": [1]}}


def test_upstream_is_frozen_and_hashable() -> None:
    up = parse(extra_body={"a": 1})
    with pytest.raises(dataclasses.FrozenInstanceError):
        up.base_url = "https://elsewhere.example"  # type: ignore[misc]
    assert hash(up) == hash(parse(extra_body={"a": 1}))


def test_upstream_error_is_a_value_error_with_field_and_problem() -> None:
    err = field_error(api_kind="nope")
    assert isinstance(err, ValueError)
    assert err.field == "upstream.api_kind"
    assert str(err) == f"upstream.api_kind: {err.problem}"


# --------------------------------------------------------------------------
# object shape
# --------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "https://x.example", [BASE], 1, True])
def test_non_object_is_rejected(value: Any) -> None:
    err = error(value)
    assert err.field == "upstream"
    assert "must be an object" in str(err)


@pytest.mark.parametrize("name", ["api_key", "extra_headers", "headers", "Model", "apiKey"])
def test_unknown_field_is_rejected_naming_it(name: str) -> None:
    err = error({**BASE, name: "x"})
    assert err.field == f"upstream.{name}"
    assert "unknown field" in str(err)


def test_unknown_api_key_field_points_to_the_api_key_parameter() -> None:
    err = field_error(api_key="sk-do-not-echo")
    assert "api_key" in err.problem
    assert "sk-do-not-echo" not in str(err)


def test_unknown_field_with_an_odd_name_is_not_echoed() -> None:
    err = error({**BASE, "a.b c": 1})
    assert err.field == "upstream.<unrecognised name>"


def test_a_secret_pasted_as_a_field_name_is_not_echoed() -> None:
    secret = "sk-live-8f3a9c2e7b1d4f6a0e5c3b9d7a1f2e4c"
    err = error({**BASE, secret: 1})
    assert secret not in str(err)
    assert "unknown field" in str(err)


def test_non_string_field_name_is_rejected() -> None:
    assert error({**BASE, 1: "x"}).field == "upstream"


@pytest.mark.parametrize("name", ["internal_id", "base_url", "api_kind"])
def test_missing_required_field_is_named(name: str) -> None:
    value = {k: v for k, v in BASE.items() if k != name}
    err = error(value)
    assert err.field == f"upstream.{name}"
    assert "is required" in str(err)


# --------------------------------------------------------------------------
# internal_id
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (None, "must be a string"),
        (12, "must be a string"),
        ("", "must not be empty"),
        ("x" * 201, "at most 200"),
        ("model\nx", "control characters"),
        ("model\x00", "control characters"),
        ("model\x85", "control characters"),
        (" model", "whitespace"),
        ("model ", "whitespace"),
        ("\ud800", "control characters"),
    ],
)
def test_invalid_internal_id_is_rejected(value: Any, problem: str) -> None:
    err = field_error(internal_id=value)
    assert err.field == "upstream.internal_id"
    assert problem in str(err)


def test_internal_id_of_200_characters_is_accepted() -> None:
    assert parse(internal_id="m" * 200).internal_id == "m" * 200


# --------------------------------------------------------------------------
# api_kind
# --------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["chat", "", "Chat_Completions", "completions", None, 1])
def test_invalid_api_kind_is_rejected(value: Any) -> None:
    err = field_error(api_kind=value)
    assert err.field == "upstream.api_kind"
    assert "chat_completions, responses, messages" in str(err)


# --------------------------------------------------------------------------
# extra_body
# --------------------------------------------------------------------------


@pytest.mark.parametrize("value", [[], "x", 1, True])
def test_extra_body_must_be_an_object(value: Any) -> None:
    err = field_error(extra_body=value)
    assert err.field == "upstream.extra_body"
    assert "must be an object" in str(err)


@pytest.mark.parametrize("key", sorted(EXTRA_BODY_RESERVED_KEYS))
def test_extra_body_cannot_set_proxy_owned_keys(key: str) -> None:
    err = field_error(extra_body={key: "x"})
    assert err.field == f"upstream.extra_body.{key}"
    assert "set by the proxy" in str(err)


def test_reserved_keys_include_model_and_stream() -> None:
    assert {"model", "stream"} <= EXTRA_BODY_RESERVED_KEYS


@pytest.mark.parametrize("key", ["api_key", "apiKey", "Authorization", "x-api-key", "password"])
def test_extra_body_rejects_credential_like_keys(key: str) -> None:
    err = field_error(extra_body={key: "sk-do-not-echo"})
    assert err.field.startswith("upstream.extra_body")
    assert "credential" in str(err)
    assert "sk-do-not-echo" not in str(err)


def test_extra_body_accepts_nested_json_values() -> None:
    body: dict[str, Any] = {
        "n": None,
        "b": False,
        "i": -3,
        "f": 1.5,
        "s": "é",
        "l": [1, [2]],
        "o": {"p": {}},
    }
    assert parse(extra_body=body).extra_body == body


@pytest.mark.parametrize(
    ("body", "where", "problem"),
    [
        ({"t": float("nan")}, "upstream.extra_body.t", "finite"),
        ({"t": float("inf")}, "upstream.extra_body.t", "finite"),
        ({"t": 2**64}, "upstream.extra_body.t", "64 bits"),
        ({"t": -(2**63) - 1}, "upstream.extra_body.t", "64 bits"),
        ({"t": ["ok", "a\x00b"]}, "upstream.extra_body.t[1]", "NUL"),
        ({"t": "\udc00"}, "upstream.extra_body.t", "Unicode"),
        ({"t": {1: "x"}}, "upstream.extra_body.t", "keys must be strings"),
        ({"t": {"k\x00": "x"}}, "upstream.extra_body.t", "NUL"),
        ({"t": (1, 2)}, "upstream.extra_body.t", "JSON values"),
        ({"t": b"x"}, "upstream.extra_body.t", "JSON values"),
    ],
)
def test_extra_body_rejects_non_json_values(body: Any, where: str, problem: str) -> None:
    err = field_error(extra_body=body)
    assert err.field == where
    assert problem in str(err)


def test_extra_body_accepts_64_bit_integers() -> None:
    body = {"lo": -(2**63), "hi": 2**64 - 1}
    assert parse(extra_body=body).extra_body == body


def test_extra_body_nesting_depth_is_limited() -> None:
    deep: Any = "x"
    for _ in range(40):
        deep = [deep]
    err = field_error(extra_body={"d": deep})
    assert err.field.startswith("upstream.extra_body.d")
    assert "nests deeper" in str(err)


def test_extra_body_size_is_limited() -> None:
    err = field_error(extra_body={"big": "x" * (70 * 1024)})
    assert err.field == "upstream.extra_body"
    assert "at most" in str(err)


# --------------------------------------------------------------------------
# remove_from_body
# --------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["logprobs", {"a": 1}, 1, True])
def test_remove_from_body_must_be_a_list(value: Any) -> None:
    err = field_error(remove_from_body=value)
    assert err.field == "upstream.remove_from_body"


def test_remove_from_body_allows_64_entries() -> None:
    names = [f"k{i}" for i in range(64)]
    assert parse(remove_from_body=names).remove_from_body == tuple(names)


def test_remove_from_body_rejects_65_entries() -> None:
    err = field_error(remove_from_body=[f"k{i}" for i in range(65)])
    assert err.field == "upstream.remove_from_body"
    assert "at most 64" in str(err)


@pytest.mark.parametrize(
    ("item", "problem"),
    [(1, "must be a string"), (None, "must be a string"), ("", "must not be empty")],
)
def test_remove_from_body_item_is_a_non_empty_string(item: Any, problem: str) -> None:
    err = field_error(remove_from_body=["ok", item])
    assert err.field == "upstream.remove_from_body[1]"
    assert problem in str(err)


@pytest.mark.parametrize("item", sorted(REMOVE_PROTECTED_KEYS))
def test_remove_from_body_cannot_remove_protected_keys(item: str) -> None:
    err = field_error(remove_from_body=[item])
    assert err.field == "upstream.remove_from_body[0]"
    assert "cannot be removed" in str(err)


def test_protected_keys_include_model_messages_and_input() -> None:
    assert {"model", "messages", "input"} <= REMOVE_PROTECTED_KEYS


def test_remove_from_body_drops_duplicates_keeping_order() -> None:
    assert parse(remove_from_body=["b", "a", "b"]).remove_from_body == ("b", "a")


# --------------------------------------------------------------------------
# timeout_s
# --------------------------------------------------------------------------


@pytest.mark.parametrize("value", [1, 0.001, 3600, 3600.0, 42.5])
def test_timeout_in_range_is_accepted(value: float) -> None:
    assert parse(timeout_s=value).timeout_s == float(value)


@pytest.mark.parametrize(
    "value", [0, 0.0, -1, 3600.001, 3601, 10**400, float("nan"), float("inf"), -float("inf")]
)
def test_timeout_out_of_range_is_rejected(value: float) -> None:
    err = field_error(timeout_s=value)
    assert err.field == "upstream.timeout_s"


@pytest.mark.parametrize("value", [True, False, "30", [30], {"s": 30}])
def test_timeout_must_be_a_number_not_a_bool(value: Any) -> None:
    err = field_error(timeout_s=value)
    assert err.field == "upstream.timeout_s"
    assert "must be a number" in str(err)


# --------------------------------------------------------------------------
# base_url: syntax
# --------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, 1, ["https://x.example"]])
def test_base_url_must_be_a_string(value: Any) -> None:
    assert "must be a string" in str(url_error(value))


def test_base_url_must_not_be_empty() -> None:
    assert "must not be empty" in str(url_error(""))


def test_base_url_length_is_limited() -> None:
    assert "at most" in str(url_error("https://x.example/" + "a" * 3000))


@pytest.mark.parametrize(
    "url",
    [
        "ftp://x.example",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "//x.example/v1",
        "x.example/v1",
        "https:x.example",
        "https:/x.example",
        "ws://x.example",
    ],
)
def test_base_url_must_be_absolute_http_or_https(url: str) -> None:
    assert "http" in str(url_error(url, allow_insecure=True))


@pytest.mark.parametrize(
    "url",
    [
        "https://user@x.example/v1",
        "https://user:s3cr3t@x.example/v1",
        "https://:s3cr3t@x.example",
        "https://x.example@169.254.169.254/",
    ],
)
def test_base_url_with_credentials_is_rejected_without_echoing_them(url: str) -> None:
    err = url_error(url, allow_insecure=True)
    assert "credentials" in str(err)
    assert "s3cr3t" not in str(err)


@pytest.mark.parametrize("url", ["https://x.example/v1?key=1", "https://x.example/v1?"])
def test_base_url_with_query_is_rejected(url: str) -> None:
    assert "query" in str(url_error(url))


@pytest.mark.parametrize("url", ["https://x.example/v1#frag", "https://x.example#"])
def test_base_url_with_fragment_is_rejected(url: str) -> None:
    assert "fragment" in str(url_error(url))


@pytest.mark.parametrize(
    "url",
    [
        " https://x.example",
        "https://x.example/v1 ",
        "https://x.exa\tmple",
        "https://x.example/v\n1",
        "https://x.example/\x00",
        "https://exämple.com",
        "https://x.example/\u2028",
    ],
)
def test_base_url_with_whitespace_control_or_non_ascii_is_rejected(url: str) -> None:
    assert "whitespace, control or non-ASCII" in str(url_error(url))


@pytest.mark.parametrize("url", ["https://x.example\\@evil.example", "https:\\\\x.example"])
def test_base_url_with_backslash_is_rejected(url: str) -> None:
    assert "backslash" in str(url_error(url))


def test_http_is_rejected_unless_insecure_allowed() -> None:
    err = url_error("http://api.partner.example/v1")
    assert "ABGATE_ALLOW_INSECURE_UPSTREAM" in str(err)
    up = parse(True, base_url="http://api.partner.example/v1")
    assert up.base_url == "http://api.partner.example/v1"


@pytest.mark.parametrize(
    "url",
    [
        "https://x.example:0",
        "https://x.example:65536",
        "https://x.example:abc",
        "https://x.example:",
        "https://x.example:-1",
        "https://x.example:123456",
        "https://[2606:4700::1111]x",
    ],
)
def test_base_url_with_invalid_port_is_rejected(url: str) -> None:
    err = url_error(url)
    assert "port" in str(err) or "not a valid URL" in str(err)


@pytest.mark.parametrize(
    "url",
    ["https://x.example/v1/../admin", "https://x.example/./v1", "https://x.example/%2e%2E/v1"],
)
def test_base_url_with_dot_segments_is_rejected(url: str) -> None:
    assert "path segments" in str(url_error(url))


@pytest.mark.parametrize(
    "url", ["https://x.example/v1/<script>", "https://x.example/%zz", "https://x.example/a|b"]
)
def test_base_url_with_bad_path_characters_is_rejected(url: str) -> None:
    assert "path" in str(url_error(url))


@pytest.mark.parametrize(
    "url",
    [
        "https://x.example/v1/chat/completions",
        "https://x.example/v1/chat/completions/",
        "https://x.example/v1/Responses",
        "https://x.example/v1/messages",
    ],
)
def test_base_url_must_not_include_the_endpoint_path(url: str) -> None:
    assert "endpoint path" in str(url_error(url))


@pytest.mark.parametrize(
    "url",
    [
        "https://",
        "https:///v1",
        "https://:443",
        "https://-x.example",
        "https://x-.example",
        "https://x..example",
        "https://" + "a" * 64 + ".example",
        "https://x.example..",
        "https://x%2eexample",
        "https://x.ex*ample",
        "https://.",
    ],
)
def test_base_url_with_invalid_host_is_rejected(url: str) -> None:
    err = url_error(url)
    assert "host" in str(err)


def test_host_name_longer_than_253_characters_is_rejected() -> None:
    host = ".".join(["a" * 60] * 5)
    assert "invalid host name" in str(url_error(f"https://{host}"))


@pytest.mark.parametrize(
    "url",
    [
        "https://[::1",
        "https://[not-an-ip]",
        "https://[v1.fe80::a+en1]",
        "https://[fe80::1%25eth0]",
        "https://[2606:4700::1111%25eth0]",
    ],
)
def test_malformed_or_zoned_ipv6_host_is_rejected(url: str) -> None:
    url_error(url, allow_insecure=True)


def test_unbracketed_ipv6_host_is_rejected() -> None:
    assert "brackets" in str(url_error("https://2606:4700::1111/v1"))


@pytest.mark.parametrize(
    "url",
    [
        "https://api.openai.com/v1",
        "https://api.anthropic.com/v1",
        "https://8.8.8.8/v1",
        "https://[2606:4700::1111]/v1",
        "https://my_host.partner.example",
        "https://1e100.net",
        "https://x.example/v1/~user/a%20b/:@!$&'()*+,;=",
        "https://x.example:8443",
    ],
)
def test_public_base_url_is_accepted(url: str) -> None:
    assert parse(base_url=url).base_url.startswith("https://")


# --------------------------------------------------------------------------
# base_url: forbidden hosts
# --------------------------------------------------------------------------

ALWAYS_REFUSED = [
    # link-local and metadata, plain
    "169.254.169.254",
    "169.254.0.1",
    "169.254.170.2",
    "100.100.100.200",
    "168.63.129.16",
    "192.0.0.192",
    # decimal, hex, octal and short dotted forms of 169.254.169.254
    "2852039166",
    "0xA9FEA9FE",
    "0xa9fea9fe",
    "0XA9FEA9FE",
    "025177524776",
    "0251.0376.0251.0376",
    "0xa9.0xfe.0xa9.0xfe",
    "169.254.43518",
    "169.16689662",
    "0xa9.16689662",
    "169.254.169.254.",
    "0251.254.169.254",
    # decimal of 169.254.0.1 and hex of 100.100.100.200
    "2851995649",
    "0x646464c8",
    # IPv6 embeddings of 169.254.169.254
    "[::ffff:169.254.169.254]",
    "[::ffff:a9fe:a9fe]",
    "[0:0:0:0:0:ffff:a9fe:a9fe]",
    "[::169.254.169.254]",
    "[::ffff:0:a9fe:a9fe]",
    "[64:ff9b::169.254.169.254]",
    "[64:ff9b::a9fe:a9fe]",
    "[64:ff9b:1::a9fe:a9fe]",
    "[64:ff9b:1:a9fe:a9:fe00::]",
    "[2002:a9fe:a9fe::]",
    "[2002:a9fe:a9fe:1::1]",
    "[2001:0:4136:e378:8000:63bf:5601:5601]",
    # IPv6 link-local, metadata and multicast
    "[fe80::1]",
    "[FE80::a9fe:a9fe]",
    "[febf::1]",
    "[fd00:ec2::254]",
    "[ff02::1]",
    "[::ffff:224.0.0.1]",
    # IPv4 multicast, reserved, broadcast
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "4294967295",
    # metadata names
    "metadata",
    "metadata.google.internal",
    "METADATA.Google.Internal",
    "metadata.google.internal.",
    "x.metadata.google.internal",
    "metadata.goog",
    "metadata.azure.com",
    "instance-data",
    "instance-data.ec2.internal",
    "metadata.tencentyun.com",
]


@pytest.mark.parametrize("allow_insecure", [False, True])
@pytest.mark.parametrize("host", ALWAYS_REFUSED)
def test_link_local_and_metadata_hosts_are_always_refused(host: str, allow_insecure: bool) -> None:
    for scheme in ("https", "http"):
        err = url_error(f"{scheme}://{host}/v1", allow_insecure=allow_insecure)
        assert "never allowed" in str(err)


@pytest.mark.parametrize(
    "host",
    [
        "10.0.0.1",
        "10.255.255.255",
        "172.16.0.1",
        "172.31.255.254",
        "192.168.1.10",
        "127.0.0.1",
        "127.1.2.3",
        "0.0.0.0",
        "100.64.0.1",
        "100.127.255.254",
        "localhost",
        "LOCALHOST",
        "localhost.",
        "foo.localhost",
        "a.b.localhost",
        "localhost.localdomain",
        "ip6-localhost",
        "[::1]",
        "[::]",
        "[0:0:0:0:0:0:0:1]",
        "[fc00::1]",
        "[fd12:3456::1]",
        "[fec0::1]",
        "[::ffff:127.0.0.1]",
        "[::ffff:10.0.0.1]",
        "[64:ff9b::10.0.0.1]",
        "[2002:c0a8:0101::1]",
    ],
)
def test_private_loopback_unspecified_and_cgnat_hosts_need_allow_insecure(host: str) -> None:
    err = url_error(f"https://{host}:8443/v1")
    assert "ABGATE_ALLOW_INSECURE_UPSTREAM" in str(err)
    assert parse(True, base_url=f"http://{host}:8443/v1").base_url.startswith("http://")


@pytest.mark.parametrize(
    "host",
    [
        "0x08080808",
        "134744072",
        "8.8.2056",
        "8.526344",
        "010.8.8.8",
        "0x8.0x8.0x8.0x8",
        "2130706433",
        "0x7f000001",
        "0177.0.0.1",
        "127.1",
        "0",
    ],
)
def test_non_dotted_decimal_ip_forms_are_refused_even_when_insecure(host: str) -> None:
    err = url_error(f"http://{host}/v1", allow_insecure=True)
    assert "dotted-decimal" in str(err)


@pytest.mark.parametrize(
    "host",
    [
        "1.2.3.4.5",
        "256.1.1.1",
        "1.2.3.256",
        "1.2.65536",
        "4294967296",
        "1.2.3.09",
        "08.8.8.8",
        "x.example.123",
    ],
)
def test_invalid_numeric_host_is_refused(host: str) -> None:
    err = url_error(f"http://{host}/v1", allow_insecure=True)
    assert "host" in str(err)


def test_forbidden_host_errors_do_not_echo_the_url() -> None:
    err = url_error("https://169.254.169.254/latest/meta-data/secret-path")
    assert "secret-path" not in str(err)


# --------------------------------------------------------------------------
# is_forbidden_address
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "strict", "insecure"),
    [
        ("8.8.8.8", False, False),
        ("2606:4700::1111", False, False),
        ("::ffff:8.8.8.8", False, False),
        ("169.254.169.254", True, True),
        ("169.254.1.1", True, True),
        ("100.100.100.200", True, True),
        ("fe80::1", True, True),
        ("fd00:ec2::254", True, True),
        ("::ffff:169.254.169.254", True, True),
        ("64:ff9b::a9fe:a9fe", True, True),
        ("2002:a9fe:a9fe::", True, True),
        ("224.0.0.251", True, True),
        ("ff02::fb", True, True),
        ("10.1.2.3", True, False),
        ("127.0.0.1", True, False),
        ("0.0.0.0", True, False),
        ("100.64.0.1", True, False),
        ("::1", True, False),
        ("::", True, False),
        ("fd00::1", True, False),
        ("::ffff:192.168.0.1", True, False),
    ],
)
def test_is_forbidden_address(ip: str, strict: bool, insecure: bool) -> None:
    address = ipaddress.ip_address(ip)
    assert is_forbidden_address(address, allow_insecure=False) is strict
    assert is_forbidden_address(address, allow_insecure=True) is insecure


def test_is_forbidden_address_ignores_ipv6_scope_ids() -> None:
    assert is_forbidden_address(ipaddress.IPv6Address("fe80::1%eth0"), allow_insecure=True)


@pytest.mark.parametrize(
    ("ip", "reason"),
    [
        ("169.254.169.254", "cloud metadata"),
        ("169.254.1.1", "link-local"),
        ("127.0.0.1", "loopback"),
        ("10.0.0.1", "private"),
        ("100.64.0.1", "shared (CGNAT)"),
        ("::ffff:169.254.1.1", "link-local (IPv4-mapped 169.254.1.1)"),
        ("8.8.8.8", None),
    ],
)
def test_forbidden_address_reason_names_the_range(ip: str, reason: str | None) -> None:
    assert forbidden_address_reason(ipaddress.ip_address(ip), allow_insecure=False) == reason


def test_forbidden_address_reason_is_none_for_private_when_insecure() -> None:
    assert forbidden_address_reason(ipaddress.ip_address("10.0.0.1"), allow_insecure=True) is None


# --------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)

url_like = st.one_of(
    urls(),
    st.text(max_size=80),
    st.builds(
        lambda scheme, host, port, path: f"{scheme}://{host}{port}{path}",
        st.sampled_from(["http", "https", "HTTPS", "ftp", ""]),
        st.one_of(
            st.ip_addresses().map(lambda ip: f"[{ip}]" if ip.version == 6 else str(ip)),
            st.ip_addresses().map(str),
            st.integers(min_value=0, max_value=2**33).map(str),
            st.integers(min_value=0, max_value=2**33).map(hex),
            st.from_regex(r"[0-9a-zA-Z.\-_%\[\]:@]{0,30}", fullmatch=True),
        ),
        st.sampled_from(["", ":", ":0", ":443", ":8080", ":99999"]),
        st.from_regex(r"(/[a-zA-Z0-9.%~@:]{0,8}){0,3}/?", fullmatch=True),
    ),
)

upstream_like = st.fixed_dictionaries(
    {},
    optional={
        "internal_id": json_values | st.text(),
        "base_url": url_like | json_values,
        "api_kind": st.sampled_from([*API_KINDS, "x"]) | json_values,
        "extra_body": json_values,
        "remove_from_body": st.lists(st.text(max_size=8) | json_values, max_size=4) | json_values,
        "timeout_s": st.floats() | st.integers() | json_values,
        "api_key": st.text(),
    },
)


def _parse_or_none(value: Any, allow_insecure: bool) -> Upstream | None:
    try:
        return parse_upstream(value, allow_insecure=allow_insecure)
    except UpstreamError as err:
        assert err.field.startswith("upstream")
        return None


@settings(max_examples=300)
@given(json_values, st.booleans())
def test_property_arbitrary_json_raises_only_upstream_error(value: Any, insecure: bool) -> None:
    _parse_or_none(value, insecure)


@settings(max_examples=500)
@given(upstream_like, st.booleans())
def test_property_upstream_like_input_raises_only_upstream_error_and_round_trips(
    value: dict[str, Any], insecure: bool
) -> None:
    up = _parse_or_none(value, insecure)
    if up is not None:
        assert parse_upstream(up.to_json(), allow_insecure=insecure) == up
        assert up.endpoint_url.startswith(up.base_url + "/")


@settings(max_examples=500)
@given(url_like, st.booleans())
def test_property_base_url_raises_only_upstream_error_and_is_idempotent(
    url: str, insecure: bool
) -> None:
    up = _parse_or_none({**BASE, "base_url": url}, insecure)
    if up is not None:
        assert not up.base_url.endswith("/")
        assert parse(insecure, base_url=up.base_url).base_url == up.base_url


@settings(max_examples=500)
@given(st.ip_addresses(), st.booleans())
def test_property_literal_ip_host_accepted_iff_address_allowed(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address, insecure: bool
) -> None:
    host = f"[{ip}]" if ip.version == 6 else str(ip)
    up = _parse_or_none({**BASE, "base_url": f"https://{host}/v1"}, insecure)
    assert (up is None) is is_forbidden_address(ip, allow_insecure=insecure)


@settings(max_examples=300)
@given(st.ip_addresses(v=4), st.booleans())
def test_property_integer_ipv4_forms_are_never_accepted(
    ip: ipaddress.IPv4Address, insecure: bool
) -> None:
    for host in (str(int(ip)), hex(int(ip)), oct(int(ip)).replace("0o", "0")):
        assert _parse_or_none({**BASE, "base_url": f"http://{host}"}, insecure) is None
