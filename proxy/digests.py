"""SHA-256 of request bodies that share long prefixes with recent ones. Sans-I/O.

LLM requests repeat themselves from the front: the same system prompt and tool
definitions, a conversation that grows by one turn per call. Hashing each sent
body whole (evidence, DESIGN.md "Prompt evidence") was the largest single cost
of a 200 KB request. SHA-256 reads its input front to back, so the hash state
after a prefix can be copied and continued: :class:`PrefixDigests` keeps, for
recent bodies, the state at every ``checkpoint`` bytes, and hashes a new body
only from the last checkpoint it shares with the recent body that starts like it.

The result is always exactly ``hashlib.sha256(data).hexdigest()``: a state is
reused only after the bytes it covers were compared equal (``memcmp`` speed,
about 30x faster than hashing them here). Bodies shorter than ``min_size`` are
hashed directly; memory is bounded by ``max_bytes`` of remembered bodies,
least recently used first out.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

__all__ = ["PrefixDigests"]

# Bodies are grouped by their first bytes: enough to tell apps and system
# prompts apart, short enough to copy and hash for the lookup.
_KEY_BYTES = 256


class _Seen:
    """A remembered body: its bytes and the hash state at each checkpoint."""

    __slots__ = ("data", "hexdigest", "states")

    def __init__(self, data: bytes, states: list[Any], hexdigest: str) -> None:
        self.data = data
        self.states = states  # states[i]: sha256 of data[: (i + 1) * checkpoint]
        self.hexdigest = hexdigest


class PrefixDigests:
    """``hexdigest(data)`` == ``hashlib.sha256(data).hexdigest()``, reusing shared prefixes."""

    __slots__ = ("_checkpoint", "_held", "_max_bytes", "_min_size", "_seen")

    def __init__(
        self,
        *,
        min_size: int = 16 * 1024,
        checkpoint: int = 16 * 1024,
        max_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        if checkpoint <= 0 or min_size < 0 or max_bytes < 0:
            raise ValueError("checkpoint must be > 0, min_size and max_bytes >= 0")
        self._min_size = min_size
        self._checkpoint = checkpoint
        self._max_bytes = max_bytes
        self._seen: OrderedDict[bytes, _Seen] = OrderedDict()
        self._held = 0  # bytes of remembered bodies

    @property
    def held_bytes(self) -> int:
        return self._held

    def hexdigest(self, data: bytes) -> str:
        return self.digest(data)[0]

    def digest(self, data: bytes) -> tuple[str, bytes]:
        """``(hexdigest, same)``: ``same == data``, and is the remembered copy when these
        very bytes were seen before, so that holders of a repeated body (records
        waiting for the recorder) keep one copy of it, not one each."""
        if len(data) < self._min_size or len(data) > self._max_bytes:
            return hashlib.sha256(data).hexdigest(), data
        key = data[:_KEY_BYTES]
        seen = self._seen.get(key)
        if seen is not None and len(seen.data) == len(data) and data == seen.data:
            self._seen.move_to_end(key)  # the same bytes again (a repeated system prompt)
            return seen.hexdigest, seen.data
        shared = self._shared_checkpoints(seen, data) if seen is not None else 0
        states = seen.states[:shared] if seen is not None else []
        hexdigest = self._hash_from(data, states)
        self._remember(key, _Seen(data, states, hexdigest))
        return hexdigest, data

    def _shared_checkpoints(self, seen: _Seen, data: bytes) -> int:
        """How many of ``seen``'s checkpoints ``data`` starts with (compared, not assumed)."""
        step = self._checkpoint
        known = memoryview(seen.data)
        low, high = 0, min(len(seen.states), len(data) // step)
        if high and data.startswith(known[: high * step]):
            return high  # the usual case: the whole common length
        # Binary search the longest shared checkpoint: ~log2(n) comparisons.
        while low < high:
            middle = (low + high + 1) // 2
            if data.startswith(known[: middle * step]):
                low = middle
            else:
                high = middle - 1
        return low

    def _hash_from(self, data: bytes, states: list[Any]) -> str:
        """Hash ``data`` from the last of ``states``, appending a state per checkpoint."""
        step = self._checkpoint
        view = memoryview(data)
        position = len(states) * step
        digest = states[-1].copy() if states else hashlib.sha256()
        while position + step <= len(data):
            digest.update(view[position : position + step])
            position += step
            states.append(digest.copy())
        digest.update(view[position:])
        return str(digest.hexdigest())

    def _remember(self, key: bytes, seen: _Seen) -> None:
        previous = self._seen.pop(key, None)
        if previous is not None:
            self._held -= len(previous.data)
        self._seen[key] = seen
        self._held += len(seen.data)
        while self._held > self._max_bytes:
            _, evicted = self._seen.popitem(last=False)
            self._held -= len(evicted.data)
