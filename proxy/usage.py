"""Token usage of one upstream answer, read from the three APIs' ``usage`` objects.

The four counters are disjoint, so cost is a plain weighted sum:

* ``input_tokens``: prompt tokens billed at the normal input price, i.e. with
  cache reads and cache writes *excluded*;
* ``cache_read_tokens`` / ``cache_write_tokens``: prompt tokens served from /
  written to the prompt cache;
* ``output_tokens``: completion tokens (reasoning included, as the APIs count them).

Mapping per API kind (``usage.`` prefix omitted):

* ``chat_completions``: input = ``prompt_tokens`` - cache read - cache write;
  output = ``completion_tokens``; cache read = ``prompt_tokens_details.cached_tokens``;
  cache write = ``prompt_tokens_details.cache_write_tokens`` (an extension some
  OpenAI-compatible servers send; 0 when absent).
* ``messages``: input = ``input_tokens`` (Anthropic already excludes the cache);
  output = ``output_tokens``; cache read = ``cache_read_input_tokens``; cache
  write = ``cache_creation_input_tokens``.
* ``responses``: input = ``input_tokens`` - cache read; output = ``output_tokens``;
  cache read = ``input_tokens_details.cached_tokens``; cache write = 0.

Nothing here raises: a missing, negative, fractional or non-numeric field counts
as 0 (a bool is not a number), and a subtraction never goes below 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Usage", "merge_messages_delta", "usage_from_body", "usage_from_object"]

# Postgres bigint; anything larger is garbage, not a token count.
_MAX_TOKENS = 2**62


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def total(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_write_tokens
        )


def _valid(value: Any) -> bool:
    """A sane token count: a non-negative integral number (not a bool) that fits bigint."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(value, float) and not value.is_integer():
        return False
    return 0 <= value <= _MAX_TOKENS


def _count(container: Any, key: str) -> int:
    """``container[key]`` as a token count, 0 when absent or not a sane count."""
    if not isinstance(container, dict):
        return 0
    value: Any = container.get(key)
    if type(value) is int:  # the usual case, checked first (type(), so never a bool)
        return value if 0 <= value <= _MAX_TOKENS else 0
    return int(value) if _valid(value) else 0


def usage_from_object(api_kind: str, usage: Any) -> Usage:
    """Read a ``usage`` object (the value of a ``"usage"`` key) of ``api_kind``."""
    if not isinstance(usage, dict):
        return Usage()
    if api_kind == "messages":
        return Usage(
            input_tokens=_count(usage, "input_tokens"),
            output_tokens=_count(usage, "output_tokens"),
            cache_read_tokens=_count(usage, "cache_read_input_tokens"),
            cache_write_tokens=_count(usage, "cache_creation_input_tokens"),
        )
    if api_kind == "chat_completions":
        details = usage.get("prompt_tokens_details")
        cache_read = _count(details, "cached_tokens")
        cache_write = _count(details, "cache_write_tokens")
        return Usage(
            input_tokens=max(_count(usage, "prompt_tokens") - cache_read - cache_write, 0),
            output_tokens=_count(usage, "completion_tokens"),
            cache_read_tokens=cache_read,
            cache_write_tokens=cache_write,
        )
    if api_kind == "responses":
        cache_read = _count(usage.get("input_tokens_details"), "cached_tokens")
        return Usage(
            input_tokens=max(_count(usage, "input_tokens") - cache_read, 0),
            output_tokens=_count(usage, "output_tokens"),
            cache_read_tokens=cache_read,
        )
    return Usage()


def usage_from_body(api_kind: str, body: Any) -> Usage:
    """Usage of a non-streamed answer body (parsed JSON) of ``api_kind``; zeros if none."""
    if not isinstance(body, dict):
        return Usage()
    return usage_from_object(api_kind, body.get("usage"))


_MESSAGES_FIELDS = (
    ("input_tokens", "input_tokens"),
    ("output_tokens", "output_tokens"),
    ("cache_read_tokens", "cache_read_input_tokens"),
    ("cache_write_tokens", "cache_creation_input_tokens"),
)


def merge_messages_delta(usage: Usage, delta: Any) -> None:
    """Apply the ``usage`` of an Anthropic ``message_delta`` event to ``usage``.

    Its counters are cumulative, so each one it reports replaces the value from
    ``message_start``; counters it omits (or sends as null/garbage) are kept.
    """
    if not isinstance(delta, dict):
        return
    for attr, key in _MESSAGES_FIELDS:
        if key in delta and _valid(delta[key]):
            setattr(usage, attr, _count(delta, key))
