"""proxy.blinding: the client sees the public id and nothing about the upstream."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.blinding import Blinder, _shared_part

PUBLIC = "partner/preview-foo"
INTERNAL = "acme-ckpt-7"
BASE_URL = "https://api.acme-labs.ai/v1"
HOST = "api.acme-labs.ai"


@pytest.fixture
def blinder() -> Blinder:
    return Blinder(PUBLIC, INTERNAL, BASE_URL)


def blind_json(blinder: Blinder, doc: Any) -> Any:
    return orjson.loads(blinder.blind(orjson.dumps(doc)))


def test_top_level_model_is_the_public_id(blinder: Blinder) -> None:
    assert blind_json(blinder, {"model": "anything-else", "x": 1}) == {"model": PUBLIC, "x": 1}


def test_nested_model_fields_are_rewritten(blinder: Blinder) -> None:
    doc = {"response": {"model": "r"}, "message": {"model": "m"}, "list": [{"model": "l"}]}
    assert blind_json(blinder, doc) == {
        "response": {"model": PUBLIC},
        "message": {"model": PUBLIC},
        "list": [{"model": PUBLIC}],
    }


def test_whitespace_around_the_colon_is_allowed(blinder: Blinder) -> None:
    out = blinder.blind(b'{\n  "model" :\n  "gpt-x"\n}')
    assert orjson.loads(out) == {"model": PUBLIC}


def test_model_value_with_escaped_quotes_is_replaced_whole(blinder: Blinder) -> None:
    raw = orjson.dumps({"model": 'we\\ird "quoted" \\', "after": 1})
    assert blind_json(blinder, orjson.loads(raw)) == {"model": PUBLIC, "after": 1}


def test_user_content_quoting_a_model_member_is_untouched(blinder: Blinder) -> None:
    content = 'Here is JSON: {"model": "x"} and "model":"y"'
    doc = {"model": "m", "choices": [{"delta": {"content": content}}]}
    raw = orjson.dumps(doc)
    assert b'\\"model\\": \\"x\\"' in raw  # what the upstream sends on the wire
    assert blind_json(blinder, doc)["choices"][0]["delta"]["content"] == content


def test_non_string_model_values_are_left_alone(blinder: Blinder) -> None:
    assert blind_json(blinder, {"model": None, "m": {"model": 3}}) == {
        "model": None,
        "m": {"model": 3},
    }


def test_other_keys_named_like_model_are_left_alone(blinder: Blinder) -> None:
    doc = {"models": "a", "Model": "b", "model_id": "c", "type": "model"}
    assert blind_json(blinder, doc) == doc


def test_internal_id_anywhere_becomes_the_public_id(blinder: Blinder) -> None:
    doc = {"id": f"chatcmpl-{INTERNAL}-1", "system_fingerprint": INTERNAL, INTERNAL: 1}
    assert blind_json(blinder, doc) == {
        "id": f"chatcmpl-{PUBLIC}-1",
        "system_fingerprint": PUBLIC,
        PUBLIC: 1,
    }


def test_internal_id_is_matched_case_insensitively(blinder: Blinder) -> None:
    out = blinder.blind(b"I am ACME-Ckpt-7.")
    assert out == f"I am {PUBLIC}.".encode()


def test_base_url_and_host_become_a_neutral_token(blinder: Blinder) -> None:
    out = blinder.blind(f"see {BASE_URL}/chat/completions or https://{HOST}/v2".encode())
    assert out == b"see upstream/chat/completions or https://upstream/v2"


def test_json_escaped_slashes_are_scrubbed(blinder: Blinder) -> None:
    out = blinder.blind(b'{"url": "https:\\/\\/api.acme-labs.ai\\/v1\\/x"}')
    assert orjson.loads(out) == {"url": "upstream/x"}


def test_json_unicode_escaped_internal_id_is_scrubbed() -> None:
    blinder = Blinder(PUBLIC, "modèle-7", BASE_URL)
    out = blinder.blind(b'{"note": "served by mod\\u00e8le-7 and MOD\\u00E8LE-7"}')
    assert orjson.loads(out) == {"note": f"served by {PUBLIC} and {PUBLIC}"}


def test_host_with_port_is_scrubbed() -> None:
    blinder = Blinder(PUBLIC, INTERNAL, "http://10.1.2.3:8000/v1")
    assert blinder.blind(b"connect 10.1.2.3:8000 failed (10.1.2.3)") == (
        b"connect upstream failed (upstream)"
    )


def test_single_label_host_is_not_scrubbed_but_the_base_url_is() -> None:
    blinder = Blinder(PUBLIC, INTERNAL, "http://model:8000/v1")
    out = blinder.blind(b'{"model": "x", "e": "http://model:8000/v1 down"}')
    assert orjson.loads(out) == {"model": PUBLIC, "e": "upstream down"}


def test_html_error_page_is_scrubbed(blinder: Blinder) -> None:
    page = f"<html><h1>502</h1><p>{HOST} could not load {INTERNAL}</p></html>".encode()
    assert (
        blinder.blind(page)
        == f"<html><h1>502</h1><p>upstream could not load {PUBLIC}</p></html>".encode()
    )


def test_internal_id_inside_the_public_id_leaves_the_public_id_whole() -> None:
    blinder = Blinder("partner/preview-foo", "preview-foo", BASE_URL)
    out = blinder.blind(b'{"model": "preview-foo", "a": "preview-foo", "b": "partner/preview-foo"}')
    assert orjson.loads(out) == {"model": PUBLIC, "a": PUBLIC, "b": PUBLIC}
    assert blinder.blind(out) == out


def test_public_id_inside_the_internal_id_does_not_shield_it() -> None:
    blinder = Blinder("preview", "preview-ckpt-7", BASE_URL)
    assert blinder.blind(b"by preview-ckpt-7") == b"by preview"


def test_escape_sequences_are_never_cut() -> None:
    # b"\\nope-1" is a newline followed by "ope-1", not the id "nope-1": replacing
    # from the "n" would leave an invalid escape "\\p...".
    blinder = Blinder(PUBLIC, "nope-1", BASE_URL)
    raw = orjson.dumps({"c": "\nope-1", "d": "\\nope-1"})
    assert orjson.loads(blinder.blind(raw)) == {"c": "\nope-1", "d": f"\\{PUBLIC}"}


def test_occurrence_right_after_a_rejected_one_is_still_found() -> None:
    # b"\\nnn": an escaped newline, then "nn" - which is the id.
    blinder = Blinder(PUBLIC, "nn", BASE_URL)
    assert orjson.loads(blinder.blind(orjson.dumps({"c": "\nnn"}))) == {"c": f"\n{PUBLIC}"}


def test_unicode_escape_is_never_cut() -> None:
    blinder = Blinder(PUBLIC, "01fx", BASE_URL)
    raw = orjson.dumps({"c": "\x01fx"})  # b"\\u0001fx"
    assert orjson.loads(blinder.blind(raw)) == {"c": "\x01fx"}


def test_id_ending_in_a_backslash_never_swallows_an_escape() -> None:
    blinder = Blinder(PUBLIC, "ab\\", BASE_URL)
    raw = orjson.dumps({"c": "ab\\", "d": "ab\n"})
    assert orjson.loads(blinder.blind(raw)) == {"c": PUBLIC, "d": "ab\n"}


def test_internal_id_equal_to_public_id_changes_nothing_else() -> None:
    blinder = Blinder(PUBLIC, PUBLIC, BASE_URL)
    assert blinder.blind(f"hello {PUBLIC}".encode()) == f"hello {PUBLIC}".encode()


def test_bytes_without_anything_to_blind_are_returned_unchanged(blinder: Blinder) -> None:
    data = b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'
    assert blinder.blind(data) == data


def test_sse_events_are_blinded_in_one_pass(blinder: Blinder) -> None:
    data = (
        b'event: message_start\ndata: {"message":{"model":"acme-ckpt-7","id":"m"}}\n\n'
        b'data: {"model":"acme-ckpt-7"}\n\n'
    )
    assert blinder.blind(data) == (
        b'event: message_start\ndata: {"message":{"model":"partner/preview-foo","id":"m"}}\n\n'
        b'data: {"model":"partner/preview-foo"}\n\n'
    )


# --- fuzzing -----------------------------------------------------------------

CONFIGS = [
    (PUBLIC, INTERNAL, BASE_URL),
    ("partner/preview-foo", "preview-foo", "https://llm.example.com/api/v1"),
    ("p/x", "org/Modèle-ß.7", "http://192.0.2.10:9000"),
]


def needles(internal: str, base_url: str) -> list[str]:
    host = base_url.split("://", 1)[1].split("/", 1)[0]
    return [internal, base_url, host, host.split(":")[0]]


def with_needles(found: list[str]) -> st.SearchStrategy[str]:
    plain = st.text(max_size=12)
    needle = st.sampled_from(found).flatmap(
        lambda n: st.sampled_from([n, n.upper()] if n.isascii() else [n])
    )
    return plain | st.builds(lambda a, n, b: a + n + b, plain, needle, plain)


def json_docs(found: list[str]) -> st.SearchStrategy[Any]:
    text = with_needles(found)
    scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | text
    keys = st.just("model") | text
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
        max_leaves=15,
    )


def strings_in(doc: Any) -> list[str]:
    if isinstance(doc, str):
        return [doc]
    if isinstance(doc, list):
        return [s for item in doc for s in strings_in(item)]
    if isinstance(doc, dict):
        return [s for k, v in doc.items() for s in [k, *strings_in(v)]]
    return []


def model_values(doc: Any) -> list[Any]:
    if isinstance(doc, list):
        return [v for item in doc for v in model_values(item)]
    if isinstance(doc, dict):
        own = [doc["model"]] if "model" in doc else []
        return own + [v for value in doc.values() for v in model_values(value)]
    return []


def leaks(text: str, public: str, found: list[str]) -> list[str]:
    """Needles still in ``text``, ignoring the inside of public-id occurrences."""
    folded = text.lower().replace(public.lower(), "\x00")
    return [n for n in found if n.lower() in folded]


@st.composite
def config_and_doc(draw: st.DrawFn) -> tuple[tuple[str, str, str], Any]:
    config = draw(st.sampled_from(CONFIGS))
    return config, draw(json_docs(needles(config[1], config[2])))


@settings(deadline=None)  # CI machines are shared: no per-example timing
@given(config_and_doc())
def test_blinded_json_is_valid_idempotent_leak_free_and_says_the_public_id(
    case: tuple[tuple[str, str, str], Any],
) -> None:
    (public, internal, base_url), doc = case
    blinder = Blinder(public, internal, base_url)
    blinded = blinder.blind(orjson.dumps(doc))
    assert blinder.blind(blinded) == blinded  # idempotent
    out = orjson.loads(blinded)
    for text in strings_in(out):
        assert leaks(text, public, needles(internal, base_url)) == []
    for value in model_values(out):
        if isinstance(value, str):
            assert value == public


@st.composite
def config_and_text(draw: st.DrawFn) -> tuple[tuple[str, str, str], str]:
    config = draw(st.sampled_from(CONFIGS))
    parts = draw(st.lists(with_needles(needles(config[1], config[2])), max_size=5))
    return config, "".join(parts).replace("\\", "/")


@settings(deadline=None)  # CI machines are shared: no per-example timing
@given(config_and_text())
def test_blinded_text_contains_no_internal_id_url_or_host(
    case: tuple[tuple[str, str, str], str],
) -> None:
    (public, internal, base_url), text = case
    out = Blinder(public, internal, base_url).blind(text.encode("utf-8", "surrogatepass"))
    assert leaks(out.decode("utf-8", "surrogatepass"), public, needles(internal, base_url)) == []


def test_the_forms_of_one_text_share_one_probe_that_prefers_non_letters() -> None:
    assert _shared_part([b"partner/ckpt-a", b"partner\\/ckpt-a"]) == b"/ckpt-a"
    assert _shared_part([b"only-form"]) == b"only-form"
    assert _shared_part([b"mod\xc3\xa8le", b"mod\\u00e8le"]) is None  # under 4 bytes shared
