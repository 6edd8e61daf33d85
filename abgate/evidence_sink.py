"""The recorder's post-commit sink: price each request, then keep its prompt evidence.

The proxy's recorder calls the sink with every batch of records it has just
committed (``Recorder.prompt_sink``), on its background writer, never on a
user's request. Two independent steps, so one failing never stops the other:

1. market cost: priced with :class:`~abgate.pricing.RateCardBook` and written to
   ``usage.market_cost_microdollars`` (only rows still at 0, so a replayed batch
   changes nothing); a trigger carries the change into the stats rollup;
2. prompt evidence: :class:`~abgate.prompt_store.PromptSink`, unless
   ``ABGATE_PROMPT_STORE=off``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg

from abgate.pricing import RateCardBook
from abgate.prompt_store import PromptSink, open_blob_store

__all__ = ["EvidenceSink", "evidence_sink"]

log = logging.getLogger("abgate.evidence")

_PRICE_SQL = """
UPDATE usage AS u SET market_cost_microdollars = x.cost
FROM unnest($1::uuid[], $2::timestamptz[], $3::bigint[]) AS x(id, created_at, cost)
WHERE u.id = x.id AND u.created_at = x.created_at AND u.market_cost_microdollars = 0
"""


class EvidenceSink:
    def __init__(self, pool: asyncpg.Pool, prompts: PromptSink | None) -> None:
        self._pool = pool
        self._book = RateCardBook()
        self._prompts = prompts

    async def __call__(self, records: Sequence[Any]) -> None:
        try:
            await self._price(records)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("market cost of %d request(s) not recorded (%s)",
                        len(records), type(exc).__name__)
        if self._prompts is not None:
            await self._prompts(records)

    async def _price(self, records: Sequence[Any]) -> None:
        async with self._pool.acquire() as conn:
            costs = await self._book.costs(conn, records)
            priced = [(r, c) for r, c in zip(records, costs, strict=True) if c > 0]
            if priced:
                await conn.execute(
                    _PRICE_SQL,
                    [r.usage_id for r, _ in priced],
                    [r.created_at for r, _ in priced],
                    [c for _, c in priced],
                )


def evidence_sink(
    pool: asyncpg.Pool, prompt_store: str
) -> Callable[[Sequence[Any]], Awaitable[None]]:
    """The sink for ``Settings.prompt_store`` (``postgres``, ``fs:PATH`` or ``off``)."""
    store = open_blob_store(prompt_store)
    return EvidenceSink(pool, PromptSink(pool, store) if store is not None else None)
