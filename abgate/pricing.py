"""Market cost of a request from the rate card in force when it was made.

A rate card prices one ``(provider, model)`` per million tokens, in
microdollars, from ``effective_from`` on; cards are insert-only history, so the
card for a request is the newest one with ``effective_from <= created_at``. For
experiment traffic ``provider`` is the upstream's host (``base_url`` host name,
lowercase) and ``model`` its ``internal_id``: the checkpoint actually called.

The four token counters are disjoint (proxy/usage.py), so the cost is a plain
weighted sum, computed exactly in integers and rounded half up to whole
microdollars. Preview traffic is billed 0 (``cost_microdollars``); the market
cost is for reports only.

:func:`market_cost_microdollars` is sans-I/O; :class:`RateCardBook` loads and
caches cards (and each version's provider/model, immutable) for the recorder.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from urllib.parse import urlsplit

import asyncpg

__all__ = [
    "CardKey",
    "RateCard",
    "RateCardBook",
    "TokenCounts",
    "card_in_force",
    "market_cost_microdollars",
    "provider_of",
]

log = logging.getLogger("abgate.pricing")

_PER = 1_000_000


class TokenCounts(Protocol):
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int


@dataclass(frozen=True)
class RateCard:
    provider: str
    model: str
    effective_from: datetime
    input_per_1m_microdollars: int
    output_per_1m_microdollars: int
    cache_read_per_1m_microdollars: int = 0
    cache_write_per_1m_microdollars: int = 0


CardKey = tuple[str, str]  # (provider, model)


def market_cost_microdollars(card: RateCard, usage: TokenCounts) -> int:
    """What ``usage`` costs at ``card``'s prices, in whole microdollars (half up)."""
    scaled = (
        usage.input_tokens * card.input_per_1m_microdollars
        + usage.output_tokens * card.output_per_1m_microdollars
        + usage.cache_read_tokens * card.cache_read_per_1m_microdollars
        + usage.cache_write_tokens * card.cache_write_per_1m_microdollars
    )
    return (scaled + _PER // 2) // _PER


def card_in_force(cards: Iterable[RateCard], moment: datetime) -> RateCard | None:
    """The newest card effective at ``moment``, or None before the first one."""
    best: RateCard | None = None
    for card in cards:
        if card.effective_from <= moment and (
            best is None or card.effective_from > best.effective_from
        ):
            best = card
    return best


def provider_of(base_url: str) -> str:
    """The provider name rate cards use for an upstream: its lowercase host."""
    return (urlsplit(base_url).hostname or "").lower()


class PricedRecord(TokenCounts, Protocol):
    created_at: datetime
    variant_version_id: int


_VERSION_SQL = """
SELECT id, upstream->>'base_url' AS base_url, upstream->>'internal_id' AS internal_id
FROM model_experiment_variant_version WHERE id = ANY($1::bigint[])
"""
_CARDS_SQL = """
SELECT provider, model, effective_from, input_per_1m_microdollars, output_per_1m_microdollars,
       cache_read_per_1m_microdollars, cache_write_per_1m_microdollars
FROM rate_card
WHERE (provider, model) IN (SELECT * FROM unnest($1::text[], $2::text[]))
"""


class RateCardBook:
    """Rate cards by (provider, model), refreshed after ``ttl_s``; versions cached forever.

    Versions are immutable, so their provider and model never change; a new card
    is seen within ``ttl_s`` seconds.
    """

    def __init__(self, *, ttl_s: float = 60.0) -> None:
        self._ttl_s = ttl_s
        self._versions: dict[int, CardKey] = {}
        self._cards: dict[CardKey, tuple[float, list[RateCard]]] = {}

    async def costs(
        self, conn: asyncpg.Connection, records: Sequence[PricedRecord]
    ) -> list[int]:
        """The market cost of each record (0 without a card in force)."""
        await self._load_versions(conn, {r.variant_version_id for r in records})
        keys = {self._versions[r.variant_version_id] for r in records
                if r.variant_version_id in self._versions}
        await self._load_cards(conn, keys)
        costs = []
        for record in records:
            key = self._versions.get(record.variant_version_id)
            cards = self._cards.get(key, (0.0, []))[1] if key else []
            card = card_in_force(cards, record.created_at)
            costs.append(market_cost_microdollars(card, record) if card else 0)
        return costs

    async def _load_versions(self, conn: asyncpg.Connection, ids: set[int]) -> None:
        missing = sorted(i for i in ids if i not in self._versions)
        if not missing:
            return
        for row in await conn.fetch(_VERSION_SQL, missing):
            self._versions[row["id"]] = (
                provider_of(row["base_url"] or ""), row["internal_id"] or ""
            )

    async def _load_cards(self, conn: asyncpg.Connection, keys: set[CardKey]) -> None:
        now = time.monotonic()
        stale = sorted(k for k in keys if k not in self._cards or self._cards[k][0] <= now)
        if not stale:
            return
        loaded: dict[CardKey, list[RateCard]] = {key: [] for key in stale}
        rows = await conn.fetch(_CARDS_SQL, [k[0] for k in stale], [k[1] for k in stale])
        for row in rows:
            loaded[(row["provider"], row["model"])].append(RateCard(**dict(row)))
        for key, cards in loaded.items():
            self._cards[key] = (now + self._ttl_s, cards)
