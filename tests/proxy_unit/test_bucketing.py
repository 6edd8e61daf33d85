"""proxy.bucketing: the DESIGN.md hash, pinned so it can never change silently."""

from __future__ import annotations

import dataclasses
import hashlib
import uuid

import pytest

from abgate.upstream import parse_upstream
from proxy.bucketing import bucket_index, choose_variant
from proxy.errors import Unavailable
from proxy.snapshot import Snapshot, VariantRoute

EXPERIMENT = "3f1c2d4e-0000-4000-8000-000000000001"


def by_hand(experiment_id: str, kind: str, value: str, weights: list[int]) -> int:
    """DESIGN.md step 5, written out independently of the implementation."""
    digest = hashlib.sha256(f"abgate:{experiment_id}:{kind}:{value}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") % sum(weights)
    cumulative = 0
    for index, weight in enumerate(weights):
        cumulative += weight
        if point < cumulative:
            return index
    raise AssertionError


@pytest.mark.parametrize(
    ("experiment_id", "kind", "value", "weights", "hash_prefix", "expected"),
    [
        (EXPERIMENT, "user", "alice", [1, 3], 11497977684111237021, 1),
        (EXPERIMENT, "machine", "m-42", [50, 50], 12135452620868077263, 1),
        ("exp", "ip", "203.0.113.9", [1, 1, 1], 1557805183321836323, 2),
        ("exp", "user", "bob", [7, 2, 1], 8083273886792871108, 1),
    ],
)
def test_known_vectors(
    experiment_id: str, kind: str, value: str, weights: list[int], hash_prefix: int, expected: int
) -> None:
    digest = hashlib.sha256(f"abgate:{experiment_id}:{kind}:{value}".encode()).digest()
    assert int.from_bytes(digest[:8], "big") == hash_prefix
    assert by_hand(experiment_id, kind, value, weights) == expected
    assert bucket_index(experiment_id, kind, value, weights) == expected


def test_matches_the_written_out_algorithm_for_many_subjects() -> None:
    weights = [3, 1, 6]
    for n in range(2000):
        assert bucket_index(EXPERIMENT, "user", f"u{n}", weights) == by_hand(
            EXPERIMENT, "user", f"u{n}", weights
        )


def test_ten_thousand_users_at_1_to_3_land_within_two_points() -> None:
    second = sum(bucket_index(EXPERIMENT, "user", f"user-{n}", [1, 3]) for n in range(10_000))
    assert abs(second / 10_000 - 0.75) <= 0.02


def test_every_variant_is_reachable() -> None:
    hits = {bucket_index(EXPERIMENT, "user", f"u{n}", [1, 1, 1]) for n in range(200)}
    assert hits == {0, 1, 2}


def test_single_variant_takes_everybody() -> None:
    assert {bucket_index(EXPERIMENT, "ip", f"10.0.0.{n}", [5]) for n in range(50)} == {0}


def test_subject_kind_is_part_of_the_hash() -> None:
    moved = sum(
        bucket_index(EXPERIMENT, "user", str(n), [1, 1])
        != bucket_index(EXPERIMENT, "machine", str(n), [1, 1])
        for n in range(200)
    )
    assert moved > 50


def test_experiments_bucket_independently() -> None:
    other = str(uuid.UUID(int=7))
    moved = sum(
        bucket_index(EXPERIMENT, "user", str(n), [1, 1])
        != bucket_index(other, "user", str(n), [1, 1])
        for n in range(200)
    )
    assert moved > 50


@pytest.mark.parametrize("weights", [[], [0, 1], [1, -1]])
def test_invalid_weights_are_rejected(weights: list[int]) -> None:
    with pytest.raises(ValueError, match="positive"):
        bucket_index(EXPERIMENT, "user", "u", weights)


def test_invalid_utf8_header_values_still_hash() -> None:
    # aiohttp decodes undecodable header bytes with surrogateescape.
    value = b"m\xff".decode("utf-8", "surrogateescape")
    assert bucket_index(EXPERIMENT, "machine", value, [1, 1]) in (0, 1)


# --- choose_variant ------------------------------------------------------------

UPSTREAM_A = parse_upstream(
    {"internal_id": "a-1", "base_url": "https://a.example.com/v1", "api_kind": "chat_completions"},
    allow_insecure=False,
)
UPSTREAM_B = parse_upstream(
    {"internal_id": "b-9", "base_url": "https://b.example.com/v1", "api_kind": "chat_completions"},
    allow_insecure=False,
)


def snapshot(*variants: VariantRoute, status: str = "active", version: int = 1) -> Snapshot:
    return Snapshot(
        experiment_id=EXPERIMENT,
        public_model_id="partner/preview",
        status=status,
        version=version,
        variants=variants,
    )


CONTROL = VariantRoute(1, "control", 1, 10, UPSTREAM_A, {"kid": "k"})
TREATMENT = VariantRoute(2, "treatment", 3, 20, UPSTREAM_B, {"kid": "k"})


def assignments(snap: Snapshot) -> list[int]:
    return [choose_variant(snap, "user", f"u{n}").variant_id for n in range(500)]


def test_choose_variant_walks_variants_in_order() -> None:
    snap = snapshot(CONTROL, TREATMENT)
    for n in range(100):
        index = bucket_index(EXPERIMENT, "user", f"u{n}", [1, 3])
        assert choose_variant(snap, "user", f"u{n}") is snap.variants[index]


def test_label_edit_hot_swap_pause_and_version_bump_move_nobody() -> None:
    before = assignments(snapshot(CONTROL, TREATMENT))
    relabelled = dataclasses.replace(CONTROL, label="renamed")
    hot_swapped = dataclasses.replace(
        TREATMENT, version_id=99, upstream=UPSTREAM_A, encrypted_api_key=None
    )
    after = assignments(snapshot(relabelled, hot_swapped, status="paused", version=42))
    assert after == before


def test_weights_do_move_users() -> None:
    before = assignments(snapshot(CONTROL, TREATMENT))
    after = assignments(snapshot(CONTROL, dataclasses.replace(TREATMENT, weight=1)))
    assert after != before


def test_snapshot_without_variants_is_unavailable() -> None:
    with pytest.raises(Unavailable):
        choose_variant(snapshot(), "user", "u")


def test_snapshot_with_a_bad_weight_is_unavailable() -> None:
    with pytest.raises(Unavailable):
        choose_variant(snapshot(dataclasses.replace(CONTROL, weight=0)), "user", "u")


def test_a_weight_change_applies_to_subjects_already_bucketed() -> None:
    assignments(snapshot(CONTROL, TREATMENT))  # remembered under 1:3
    changed = snapshot(CONTROL, dataclasses.replace(TREATMENT, weight=1))
    for n in range(500):
        index = bucket_index(EXPERIMENT, "user", f"u{n}", [1, 1])
        assert choose_variant(changed, "user", f"u{n}") is changed.variants[index]
