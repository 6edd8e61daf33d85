"""The routing configuration of one public model id, as the proxy caches it.

A snapshot is immutable and self-contained: everything needed to bucket a user
and call the chosen variant's upstream, with the key still encrypted (only the
chosen variant's key is decrypted, per request). ``version`` is the
``routing_config_version`` it was read with (see abgate.routing_protocol).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from abgate.upstream import Upstream

__all__ = ["Snapshot", "VariantRoute"]


@dataclass(frozen=True, slots=True)
class VariantRoute:
    variant_id: int
    label: str
    weight: int
    # The current version (newest effective_at <= now, ties: highest id); None if none yet.
    version_id: int | None
    upstream: Upstream | None
    encrypted_api_key: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    experiment_id: str
    public_model_id: str
    status: str  # active | paused (draft/completed experiments are not members)
    version: int
    variants: tuple[VariantRoute, ...]  # in variant id order: bucketing walks this order
    # When a scheduled version (effective_at in the future) becomes current, the
    # snapshot must be reloaded; None when no version is scheduled.
    valid_until: float | None = None
    # Derived once, read per request.
    weights: tuple[int, ...] = field(init=False, repr=False, compare=False)
    api_kinds: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", tuple(v.weight for v in self.variants))
        kinds = frozenset(v.upstream.api_kind for v in self.variants if v.upstream is not None)
        object.__setattr__(self, "api_kinds", kinds)

    @property
    def total_weight(self) -> int:
        return sum(self.weights)

