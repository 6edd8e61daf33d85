"""proxy.routing: finding a member id in a large body from its rarest byte."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.routing import MemberIndex, contains_anchored, rare_byte_index

BIG = 20 * 1024  # above the size from which the anchored search is used


def test_the_anchor_is_a_byte_that_is_neither_a_letter_nor_json_punctuation() -> None:
    assert b"openai/gpt-preview"[rare_byte_index(b"openai/gpt-preview")] == ord("/")
    assert b"model-7"[rare_byte_index(b"model-7")] == ord("-")


def test_an_id_of_letters_only_is_anchored_on_its_first_byte() -> None:
    assert rare_byte_index(b"preview") == 0


def test_a_member_at_the_end_of_a_large_body_is_found() -> None:
    body = b'{"messages":[{"content":"' + b"x" * BIG + b'"}],"model":"acme/preview"}'
    index = MemberIndex()
    index.refresh(frozenset({"acme/preview"}))
    assert index.mentioned_literally(body)


def test_a_large_body_full_of_the_anchor_byte_still_finds_the_member() -> None:
    body = b"a/b/" * (BIG // 4) + b"acme/preview"
    assert contains_anchored(body, b"acme/preview", rare_byte_index(b"acme/preview"))


def test_a_large_body_without_the_member_is_not_a_candidate() -> None:
    index = MemberIndex()
    index.refresh(frozenset({"acme/preview", "other-preview"}))
    assert not index.mentioned_literally(b"acme/previe" * (BIG // 10))


_pieces = st.sampled_from([b"a", b"/", b"-", b"ac", b"me/pre", b"view", b"acme/preview", b"x"])


@settings(max_examples=400, deadline=None)
@given(
    st.lists(_pieces, max_size=200).map(b"".join),
    st.sampled_from([b"acme/preview", b"me/pre", b"/", b"a-/a", b"", b"view"]),
    st.data(),
)
def test_anchored_search_agrees_with_in_for_every_anchor(
    body: bytes, needle: bytes, data: st.DataObject
) -> None:
    anchor = data.draw(st.integers(0, max(len(needle) - 1, 0)))
    assert contains_anchored(body, needle, anchor) == (needle in body)
