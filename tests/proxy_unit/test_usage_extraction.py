"""proxy.usage: disjoint token counters from each API's usage object, never raising."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.usage import Usage, merge_messages_delta, usage_from_body, usage_from_object


def test_chat_input_excludes_cached_tokens() -> None:
    body = {
        "usage": {
            "prompt_tokens": 100,
            "completion_tokens": 20,
            "prompt_tokens_details": {"cached_tokens": 30},
        }
    }
    assert usage_from_body("chat_completions", body) == Usage(70, 20, 30, 0)


def test_chat_cache_write_extension_is_counted_apart() -> None:
    usage = {
        "prompt_tokens": 100,
        "completion_tokens": 5,
        "prompt_tokens_details": {"cached_tokens": 10, "cache_write_tokens": 40},
    }
    assert usage_from_object("chat_completions", usage) == Usage(50, 5, 10, 40)


def test_chat_without_details() -> None:
    usage = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
    assert usage_from_object("chat_completions", usage) == Usage(12, 3, 0, 0)


def test_messages_fields_map_one_to_one() -> None:
    body = {
        "usage": {
            "input_tokens": 11,
            "output_tokens": 22,
            "cache_read_input_tokens": 33,
            "cache_creation_input_tokens": 44,
        }
    }
    assert usage_from_body("messages", body) == Usage(11, 22, 33, 44)


def test_responses_input_excludes_cached_tokens() -> None:
    body = {
        "usage": {
            "input_tokens": 50,
            "input_tokens_details": {"cached_tokens": 20},
            "output_tokens": 9,
            "output_tokens_details": {"reasoning_tokens": 4},
        }
    }
    assert usage_from_body("responses", body) == Usage(30, 9, 20, 0)


def test_cached_tokens_above_prompt_tokens_never_go_negative() -> None:
    usage = {"prompt_tokens": 5, "prompt_tokens_details": {"cached_tokens": 9}}
    assert usage_from_object("chat_completions", usage).input_tokens == 0


@pytest.mark.parametrize(
    "body",
    [None, [], "x", {}, {"usage": None}, {"usage": []}, {"usage": "lots"}],
)
def test_missing_usage_is_all_zeros(body: Any) -> None:
    assert usage_from_body("chat_completions", body) == Usage()


@pytest.mark.parametrize(
    "value", [None, "12", True, -3, 1.5, float("nan"), float("inf"), 2**70, {}]
)
def test_garbage_counts_are_zero(value: Any) -> None:
    assert usage_from_object("messages", {"input_tokens": value, "output_tokens": 4}) == Usage(
        0, 4, 0, 0
    )


def test_integral_floats_are_accepted() -> None:
    assert usage_from_object("messages", {"output_tokens": 7.0}).output_tokens == 7


def test_unknown_api_kind_is_all_zeros() -> None:
    assert usage_from_object("embeddings", {"prompt_tokens": 3}) == Usage()


def test_total_sums_the_disjoint_counters() -> None:
    assert Usage(1, 2, 3, 4).total == 10


def test_message_delta_replaces_only_the_counters_it_reports() -> None:
    usage = Usage(input_tokens=10, output_tokens=1, cache_read_tokens=5, cache_write_tokens=2)
    merge_messages_delta(usage, {"output_tokens": 42, "input_tokens": None})
    assert usage == Usage(10, 42, 5, 2)


def test_message_delta_with_cumulative_input_and_cache() -> None:
    usage = Usage(input_tokens=10, output_tokens=1)
    merge_messages_delta(
        usage,
        {
            "input_tokens": 12,
            "output_tokens": 30,
            "cache_read_input_tokens": 7,
            "cache_creation_input_tokens": 3,
        },
    )
    assert usage == Usage(12, 30, 7, 3)


@pytest.mark.parametrize("delta", [None, "x", [], {"output_tokens": "many"}])
def test_message_delta_garbage_changes_nothing(delta: Any) -> None:
    usage = Usage(1, 2, 3, 4)
    merge_messages_delta(usage, delta)
    assert usage == Usage(1, 2, 3, 4)


_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=3)
_JSON = _SCALARS | st.lists(_SCALARS, max_size=2)
_USAGE_KEYS = st.sampled_from(
    [
        "prompt_tokens",
        "completion_tokens",
        "prompt_tokens_details",
        "cached_tokens",
        "input_tokens",
        "output_tokens",
        "input_tokens_details",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
    ]
)


@settings(deadline=None)  # CI machines are shared: no per-example timing
@given(
    st.sampled_from(["chat_completions", "messages", "responses"]),
    st.dictionaries(_USAGE_KEYS, _JSON | st.dictionaries(_USAGE_KEYS, _JSON), max_size=6),
)
def test_never_raises_and_never_negative(kind: str, usage: dict[str, Any]) -> None:
    result = usage_from_body(kind, {"usage": usage})
    assert min(result.input_tokens, result.output_tokens) >= 0
    assert min(result.cache_read_tokens, result.cache_write_tokens) >= 0
