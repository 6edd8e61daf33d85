"""Deterministic assignment of a subject to a weighted variant (DESIGN.md, step 5).

``sha256("abgate:" + experiment_id + ":" + subject_kind + ":" + subject_value)``,
the first 8 bytes as a big-endian integer, modulo the sum of the weights, then a
walk over the weights in variant id order. Only the experiment id, the subject
and the weights enter the hash, so editing a label, hot-swapping a version,
pausing/resuming or restarting a proxy never moves anybody. Changing weights
does, by design.

This function is a stored contract: changing it silently reshuffles every
running experiment. tests/proxy_unit pins known vectors.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence

from proxy.errors import Unavailable
from proxy.snapshot import Snapshot, VariantRoute

__all__ = ["bucket_index", "choose_variant"]


def bucket_index(
    experiment_id: str, subject_kind: str, subject_value: str, weights: Sequence[int]
) -> int:
    """Index into ``weights`` (variant id order) for this subject.

    Raises ValueError when ``weights`` is empty or holds a weight below 1.
    """
    if not weights or any(w < 1 for w in weights):
        raise ValueError("weights must be a non-empty sequence of positive integers")
    # surrogatepass: a header value aiohttp decoded with surrogates must hash, not
    # raise; for every valid string it is plain UTF-8.
    key = f"abgate:{experiment_id}:{subject_kind}:{subject_value}".encode("utf-8", "surrogatepass")
    point = int.from_bytes(hashlib.sha256(key).digest()[:8], "big") % sum(weights)
    for index, weight in enumerate(weights):
        if point < weight:
            return index
        point -= weight
    raise AssertionError("unreachable: point < sum(weights)")  # pragma: no cover


def choose_variant(snapshot: Snapshot, subject_kind: str, subject_value: str) -> VariantRoute:
    """The variant of ``snapshot`` that serves this subject.

    Raises :class:`~proxy.errors.Unavailable` (503) for a snapshot that cannot
    route: no variants or a weight below 1 (the admin app forbids both; a
    corrupted row must not crash the proxy).
    """
    try:
        index = _cached_index(
            snapshot.experiment_id, subject_kind, subject_value, snapshot.weights
        )
    except ValueError:
        raise Unavailable() from None
    return snapshot.variants[index]


# A subject sends many requests: the hash is computed once per (experiment,
# subject, weights), like the pseudonym. Every input of the result is in the
# key, so a weight change or another experiment never reuses an entry.
@functools.lru_cache(maxsize=16_384)
def _cached_index(
    experiment_id: str, subject_kind: str, subject_value: str, weights: tuple[int, ...]
) -> int:
    return bucket_index(experiment_id, subject_kind, subject_value, weights)
