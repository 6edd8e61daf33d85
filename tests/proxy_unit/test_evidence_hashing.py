"""proxy.evidence: hashes of what was sent, and UTF-8-safe capping of stored content."""

from __future__ import annotations

import hashlib

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.digests import PrefixDigests
from proxy.evidence import MAX_EVIDENCE_BYTES, capped, hash_request, system_prompt


def test_chat_system_prompt_is_the_system_and_developer_messages_in_order() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
            {"role": "developer", "content": "use tools"},
            {"role": "assistant", "content": "ok"},
        ]
    }
    assert system_prompt("chat_completions", body) == orjson.dumps(
        [{"role": "system", "content": "be brief"}, {"role": "developer", "content": "use tools"}]
    )


@pytest.mark.parametrize(
    "body",
    [
        {"messages": [{"role": "user", "content": "hi"}]},
        {"messages": "x"},
        {},
        {"messages": [1, None]},
    ],
)
def test_chat_without_system_messages_has_none(body: dict[str, object]) -> None:
    assert system_prompt("chat_completions", body) is None


@pytest.mark.parametrize("system", ["be brief", [{"type": "text", "text": "be brief"}]])
def test_messages_system_prompt_is_the_system_field(system: object) -> None:
    assert system_prompt("messages", {"system": system, "messages": []}) == orjson.dumps(system)


def test_responses_system_prompt_is_the_instructions() -> None:
    assert system_prompt("responses", {"instructions": "be brief"}) == b'"be brief"'


@pytest.mark.parametrize(("kind", "field"), [("messages", "system"), ("responses", "instructions")])
def test_absent_or_null_system_prompt_is_none(kind: str, field: str) -> None:
    assert system_prompt(kind, {}) is None
    assert system_prompt(kind, {field: None}) is None


def test_unknown_api_kind_has_no_system_prompt() -> None:
    assert system_prompt("embeddings", {"system": "x"}) is None


def test_hash_request_hashes_the_exact_bytes() -> None:
    sent = b'{"model":"acme","messages":[]}'
    system = b'"be brief"'
    assert hash_request(sent, system) == (
        hashlib.sha256(sent).hexdigest(),
        hashlib.sha256(system).hexdigest(),
        False,
        system,
    )


def test_hash_request_hands_back_the_system_prompt_its_digest_returns() -> None:
    held = b'"be brief"'
    digests = PrefixDigests(min_size=0)
    hash_request(b"{}", held, digest=digests.digest)
    again = hash_request(b"{}", bytes(bytearray(held)), digest=digests.digest)
    assert again.system is held


def test_hash_request_marks_an_absent_system_prompt() -> None:
    assert hash_request(b"{}", None)[1] == "__absent__"


def test_empty_system_prompt_is_hashed_not_absent() -> None:
    assert hash_request(b"{}", b"")[1] == hashlib.sha256(b"").hexdigest()


def test_bodies_over_four_mebibytes_are_flagged_truncated() -> None:
    assert hash_request(b"x" * MAX_EVIDENCE_BYTES, None)[2] is False
    over = b"x" * (MAX_EVIDENCE_BYTES + 1)
    body_hash, _, truncated, _ = hash_request(over, None)
    assert truncated is True
    assert body_hash == hashlib.sha256(over).hexdigest()


def test_capped_leaves_short_content_alone() -> None:
    assert capped(b"hello", 5) == (b"hello", False)


def test_capped_cuts_at_the_limit() -> None:
    assert capped(b"hello", 3) == (b"hel", True)


@pytest.mark.parametrize(
    ("limit", "expected"), [(1, b"a"), (2, b"a"), (3, b"a"), (4, b"a"), (5, "a😀".encode())]
)
def test_capped_never_splits_a_character(limit: int, expected: bytes) -> None:
    assert capped("a😀b".encode(), limit) == (expected, True)


def test_capped_default_limit_is_four_mebibytes() -> None:
    content = "é".encode() * (MAX_EVIDENCE_BYTES // 2) + b"xy"
    out, truncated = capped(content)
    assert truncated and len(out) == MAX_EVIDENCE_BYTES


def test_capped_on_invalid_utf8_backs_off_at_most_three_bytes() -> None:
    assert capped(b"\x80" * 10, 6) == (b"\x80" * 3, True)


def test_capped_rejects_a_negative_limit() -> None:
    with pytest.raises(ValueError, match="limit"):
        capped(b"x", -1)


@settings(deadline=None)  # CI machines are shared: no per-example timing
@given(st.text(), st.integers(0, 64))
def test_capped_text_is_a_decodable_prefix(text: str, limit: int) -> None:
    content = text.encode("utf-8")
    out, truncated = capped(content, limit)
    assert content.startswith(out)
    out.decode("utf-8")  # never splits a character
    assert truncated == (len(content) > limit)
    assert limit - 3 <= len(out) <= limit if truncated else out == content
