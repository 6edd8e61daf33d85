"""proxy.digests.PrefixDigests: SHA-256 that reuses the prefix a body shares with recent ones."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.digests import PrefixDigests


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _small() -> PrefixDigests:
    """Tiny checkpoints so that short test bodies exercise every path."""
    return PrefixDigests(min_size=0, checkpoint=4, max_bytes=1024)


def test_a_body_below_the_minimum_size_is_hashed_directly_and_not_remembered() -> None:
    digests = PrefixDigests(min_size=100, checkpoint=4)
    assert digests.hexdigest(b"x" * 99) == _sha(b"x" * 99)
    assert digests.held_bytes == 0


def test_a_repeated_body_is_handed_back_as_the_copy_already_held() -> None:
    digests = _small()
    first = b"the same long system prompt" * 4
    assert digests.digest(first) == (_sha(first), first)
    _, same = digests.digest(bytes(bytearray(first)))
    assert same is first


def test_a_new_body_is_handed_back_as_given() -> None:
    digests = _small()
    digests.digest(b"a" * 40)
    body = b"a" * 39 + b"b"
    assert digests.digest(body)[1] is body


def test_a_repeated_body_gives_the_same_digest() -> None:
    digests = _small()
    body = b"a long system prompt, then a question"
    assert digests.hexdigest(body) == _sha(body)
    assert digests.hexdigest(bytes(bytearray(body))) == _sha(body)


def test_a_body_that_extends_a_recent_one_is_hashed_correctly() -> None:
    digests = _small()
    history = b'{"messages":[{"role":"system","content":"be brief"}'
    digests.hexdigest(history + b"]}")
    longer = history + b',{"role":"user","content":"and then?"}]}'
    assert digests.hexdigest(longer) == _sha(longer)


def test_a_body_that_differs_after_a_shared_start_is_hashed_correctly() -> None:
    digests = _small()
    start = b"s" * 300  # the same first bytes: the same remembered entry
    digests.hexdigest(start + b"first tail, somewhat longer than the second")
    assert digests.hexdigest(start + b"second") == _sha(start + b"second")
    # A change inside the shared start: no checkpoint past it may be reused.
    changed = b"s" * 150 + b"t" + b"s" * 149 + b"second"
    assert digests.hexdigest(changed) == _sha(changed)


def test_a_body_shorter_than_the_remembered_one_is_hashed_correctly() -> None:
    digests = _small()
    digests.hexdigest(b"p" * 400)
    assert digests.hexdigest(b"p" * 257) == _sha(b"p" * 257)


def test_memory_is_bounded_by_max_bytes() -> None:
    digests = PrefixDigests(min_size=0, checkpoint=8, max_bytes=1000)
    for index in range(50):
        body = bytes([index]) * 300
        assert digests.hexdigest(body) == _sha(body)
        assert digests.held_bytes <= 1000


def test_a_body_larger_than_max_bytes_is_hashed_without_being_remembered() -> None:
    digests = PrefixDigests(min_size=0, checkpoint=8, max_bytes=100)
    assert digests.hexdigest(b"z" * 101) == _sha(b"z" * 101)
    assert digests.held_bytes == 0


@pytest.mark.parametrize("kwargs", [{"checkpoint": 0}, {"min_size": -1}, {"max_bytes": -1}])
def test_invalid_settings_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        PrefixDigests(**kwargs)


# Bodies drawn from a few shared prefixes with random edits, so that many
# lookups hit a remembered entry and resume from a checkpoint.
_PREFIXES = [b"A" * 600, b"A" * 300 + b"B" * 300, bytes(range(256)) * 3]
_bodies = st.builds(
    lambda prefix, cut, tail: prefix[:cut] + tail,
    st.sampled_from(_PREFIXES),
    st.integers(min_value=0, max_value=768),
    st.binary(max_size=200),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_bodies, min_size=1, max_size=12))
def test_every_digest_equals_sha256_of_the_body(bodies: list[bytes]) -> None:
    digests = PrefixDigests(min_size=0, checkpoint=16, max_bytes=2048)
    for body in bodies:
        assert digests.hexdigest(body) == _sha(body)
