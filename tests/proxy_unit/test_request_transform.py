"""proxy.transform: the body the partner receives, pseudonyms and request validation."""

from __future__ import annotations

import copy
import hashlib
import hmac
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from abgate.config import EncryptionKey
from abgate.crypto import NoEncryptionKeyError
from abgate.upstream import Upstream, parse_upstream
from proxy.errors import BadRequest
from proxy.transform import (
    PreparedRequest,
    data_collection_denied,
    parse_json_object,
    prepare_upstream_body,
    pseudonym,
    pseudonym_secret,
)

PSEUDONYM = "abg-0123456789abcdef0123456789abcdef"


def upstream(kind: str = "chat_completions", **fields: Any) -> Upstream:
    return parse_upstream(
        {"internal_id": "acme-ckpt-7", "base_url": "https://api.acme.ai/v1", "api_kind": kind}
        | fields,
        allow_insecure=False,
    )


def prepare(
    kind: str, body: dict[str, Any], up: Upstream | None = None
) -> tuple[dict[str, Any], PreparedRequest]:
    prepared = prepare_upstream_body(kind, body, up or upstream(kind), PSEUDONYM)
    return orjson.loads(prepared.body), prepared


CHAT = {"model": "partner/preview", "messages": [{"role": "user", "content": "hi"}]}


# --- body -------------------------------------------------------------------


def test_model_becomes_the_internal_id() -> None:
    sent, _ = prepare("chat_completions", CHAT)
    assert sent["model"] == "acme-ckpt-7"


def test_body_is_compact_orjson_bytes() -> None:
    _, prepared = prepare("chat_completions", CHAT)
    assert prepared.body == orjson.dumps(orjson.loads(prepared.body))


def test_remove_from_body_drops_top_level_keys() -> None:
    body = CHAT | {"temperature": 0.3, "seed": 1}
    sent, _ = prepare("chat_completions", body, upstream(remove_from_body=["temperature", "nope"]))
    assert "temperature" not in sent
    assert sent["seed"] == 1


def test_extra_body_overrides_top_level_keys_shallowly() -> None:
    body = CHAT | {"reasoning": {"effort": "low", "summary": "auto"}, "top_p": 0.5}
    sent, _ = prepare(
        "chat_completions", body, upstream(extra_body={"reasoning": {"effort": "high"}})
    )
    assert sent["reasoning"] == {"effort": "high"}
    assert sent["top_p"] == 0.5


def test_extra_body_wins_over_remove_from_body() -> None:
    up = upstream(remove_from_body=["top_k"], extra_body={"top_k": 5})
    sent, _ = prepare("chat_completions", CHAT | {"top_k": 50}, up)
    assert sent["top_k"] == 5


def test_provider_routing_hints_are_not_forwarded() -> None:
    sent, _ = prepare("chat_completions", CHAT | {"provider": {"order": ["x"]}})
    assert "provider" not in sent


def test_client_body_and_upstream_config_are_not_mutated() -> None:
    body = CHAT | {
        "stream": True,
        "stream_options": {"foo": 1},
        "metadata": {"k": "v"},
        "user": "real-user",
        "provider": {"zdr": False},
    }
    body_before = copy.deepcopy(body)
    up = upstream(extra_body={"stream_options": {"bar": 2}, "metadata": {"x": 1}})
    config_before = up.to_json()
    prepare("chat_completions", body, up)
    prepare_upstream_body(
        "messages", body, upstream("messages", extra_body={"metadata": {"x": 1}}), PSEUDONYM
    )
    assert body == body_before
    assert up.to_json() == config_before


# --- identity ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["chat_completions", "responses"])
def test_user_is_always_the_pseudonym(kind: str) -> None:
    sent, _ = prepare(kind, {"model": "p", "input": "x"})
    assert sent["user"] == PSEUDONYM
    assert "safety_identifier" not in sent


@pytest.mark.parametrize("kind", ["chat_completions", "responses"])
def test_client_identity_fields_are_replaced(kind: str) -> None:
    sent, _ = prepare(kind, {"model": "p", "user": "alice@corp", "safety_identifier": "alice"})
    assert (sent["user"], sent["safety_identifier"]) == (PSEUDONYM, PSEUDONYM)
    assert (
        b"alice"
        not in prepare_upstream_body(
            kind, {"model": "p", "user": "alice@corp"}, upstream(kind), PSEUDONYM
        ).body
    )


def test_messages_metadata_user_id_is_the_pseudonym() -> None:
    body = {"model": "p", "messages": [], "metadata": {"user_id": "alice", "trace": "t1"}}
    sent, _ = prepare("messages", body)
    assert sent["metadata"] == {"user_id": PSEUDONYM, "trace": "t1"}
    assert "user" not in sent


def test_messages_metadata_is_created_when_absent_or_garbage() -> None:
    assert prepare("messages", {"model": "p"})[0]["metadata"] == {"user_id": PSEUDONYM}
    assert prepare("messages", {"model": "p", "metadata": "x"})[0]["metadata"] == {
        "user_id": PSEUDONYM
    }


def test_removed_identity_field_is_not_added_back() -> None:
    sent, _ = prepare(
        "chat_completions", CHAT | {"user": "alice"}, upstream(remove_from_body=["user"])
    )
    assert "user" not in sent


def test_removed_metadata_is_not_added_back_for_messages() -> None:
    up = upstream("messages", remove_from_body=["metadata"])
    sent, _ = prepare("messages", {"model": "p", "metadata": {"user_id": "alice"}}, up)
    assert "metadata" not in sent


# --- streaming usage ------------------------------------------------------------


def test_chat_stream_forces_include_usage() -> None:
    sent, prepared = prepare("chat_completions", CHAT | {"stream": True})
    assert sent["stream_options"] == {"include_usage": True}
    assert (prepared.stream, prepared.client_wants_usage, prepared.forced_usage) == (
        True,
        False,
        True,
    )


def test_forcing_keeps_other_stream_options() -> None:
    sent, _ = prepare("chat_completions", CHAT | {"stream": True, "stream_options": {"x": 1}})
    assert sent["stream_options"] == {"x": 1, "include_usage": True}


def test_client_that_asked_for_usage_gets_it_unforced() -> None:
    body = CHAT | {"stream": True, "stream_options": {"include_usage": True}}
    sent, prepared = prepare("chat_completions", body)
    assert sent["stream_options"] == {"include_usage": True}
    assert (prepared.client_wants_usage, prepared.forced_usage) == (True, False)


def test_usage_enabled_by_extra_body_only_is_still_dropped_for_the_client() -> None:
    up = upstream(extra_body={"stream_options": {"include_usage": True}})
    _, prepared = prepare("chat_completions", CHAT | {"stream": True}, up)
    assert (prepared.client_wants_usage, prepared.forced_usage) == (False, True)


def test_removed_stream_options_are_not_forced() -> None:
    up = upstream(remove_from_body=["stream_options"])
    sent, prepared = prepare("chat_completions", CHAT | {"stream": True}, up)
    assert "stream_options" not in sent
    assert prepared.forced_usage is False


def test_non_streaming_chat_is_not_forced() -> None:
    sent, prepared = prepare("chat_completions", CHAT)
    assert "stream_options" not in sent
    assert (prepared.stream, prepared.client_wants_usage, prepared.forced_usage) == (
        False,
        True,
        False,
    )


@pytest.mark.parametrize("kind", ["responses", "messages"])
def test_other_streams_report_usage_without_forcing(kind: str) -> None:
    sent, prepared = prepare(kind, {"model": "p", "stream": True})
    assert "stream_options" not in sent
    assert (prepared.stream, prepared.client_wants_usage, prepared.forced_usage) == (
        True,
        True,
        False,
    )


def test_only_a_true_stream_flag_streams() -> None:
    assert prepare("chat_completions", CHAT | {"stream": "true"})[1].stream is False


# --- pseudonyms -----------------------------------------------------------------

SECRET = b"s" * 32


def test_pseudonym_is_keyed_hmac_of_partner_host_and_subject() -> None:
    expected = hmac.new(SECRET, b"api.acme.ai\x00user\x00alice", hashlib.sha256).hexdigest()[:32]
    assert pseudonym(SECRET, upstream(), "user", "alice") == "abg-" + expected


def test_pseudonym_is_stable_across_a_hot_swap_within_a_partner() -> None:
    swapped = parse_upstream(
        {
            "internal_id": "acme-ckpt-8",
            "base_url": "https://API.acme.ai/v2",
            "api_kind": "responses",
        },
        allow_insecure=False,
    )
    assert pseudonym(SECRET, upstream(), "user", "alice") == pseudonym(
        SECRET, swapped, "user", "alice"
    )


def test_pseudonym_differs_per_partner_subject_kind_and_secret() -> None:
    other_partner = parse_upstream(
        {
            "internal_id": "acme-ckpt-7",
            "base_url": "https://api.other.ai/v1",
            "api_kind": "responses",
        },
        allow_insecure=False,
    )
    base = pseudonym(SECRET, upstream(), "user", "alice")
    assert base != pseudonym(SECRET, other_partner, "user", "alice")
    assert base != pseudonym(SECRET, upstream(), "machine", "alice")
    assert base != pseudonym(SECRET, upstream(), "user", "alice2")
    assert base != pseudonym(b"t" * 32, upstream(), "user", "alice")


def test_pseudonym_fits_api_limits_and_hides_the_subject() -> None:
    value = pseudonym(SECRET, upstream(), "user", "alice@example.com")
    assert len(value) == 36
    assert "alice" not in value


def test_pseudonym_secret_is_hkdf_of_the_last_key() -> None:
    old = EncryptionKey("old", bytes(range(32)))
    expected = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"abgate-pseudonym-v1"
    ).derive(old.key)
    assert pseudonym_secret([old]) == expected


def test_prepending_a_new_key_keeps_pseudonyms() -> None:
    old = EncryptionKey("old", bytes(range(32)))
    new = EncryptionKey("new", bytes(range(1, 33)))
    assert pseudonym_secret([new, old]) == pseudonym_secret([old])
    assert pseudonym_secret([new]) != pseudonym_secret([old])


def test_pseudonym_secret_needs_a_key() -> None:
    with pytest.raises(NoEncryptionKeyError):
        pseudonym_secret([])


# --- request checks ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "denied"),
    [
        ({"data_collection": "deny"}, True),
        ({"zdr": True}, True),
        ({"data_collection": "allow", "zdr": False}, False),
        ({"zdr": "true"}, False),
        ("deny", False),
        (None, False),
    ],
)
def test_data_collection_denied(provider: Any, denied: bool) -> None:
    assert data_collection_denied({"model": "p", "provider": provider}) is denied


def test_data_collection_without_provider_is_allowed() -> None:
    assert data_collection_denied({"model": "p"}) is False


def test_parse_json_object_returns_the_object() -> None:
    assert parse_json_object(b'{"model": "p", "x": [1]}') == {"model": "p", "x": [1]}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "not valid JSON"),
        (b'{"model": "secret-prompt"', "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b'[{"model": "p"}]', "JSON object"),
        (b'"p"', "JSON object"),
        (b"{}", "string `model`"),
        (b'{"model": 3}', "string `model`"),
        (b'{"model": null}', "string `model`"),
    ],
)
def test_parse_json_object_rejects_bad_bodies(raw: bytes, message: str) -> None:
    with pytest.raises(BadRequest, match=message) as caught:
        parse_json_object(raw)
    assert caught.value.status == 400
    assert b"secret-prompt" not in caught.value.body()
