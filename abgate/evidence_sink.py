"""What the recorder writes with each batch besides the rows: market cost and prompt evidence.

The proxy's recorder hands every batch to :class:`BatchEvidence` in two steps
(``Recorder.evidence``), on its background writer, never on a user's request:

1. :meth:`BatchEvidence.prepare`, before the batch's transaction: the market
   cost of each request, priced with :class:`~abgate.pricing.RateCardBook`
   (its rate-card reads are cached; a failed read prices the batch at 0 and is
   logged), and the cut of each sent body into its prompt blobs (CPU only);
2. :meth:`BatchEvidence.store`, inside the transaction that inserts the rows:
   the blobs are written (:class:`~abgate.prompt_store.PromptCapture`, unless
   ``ABGATE_PROMPT_STORE=off``) and each row's evidence columns returned.

So every row is inserted once, complete: no later ``UPDATE`` rewrites it (an
update of an indexed column writes the row and all its index entries again).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from abgate.pricing import RateCardBook
from abgate.prompt_store import Captured, PromptCapture, Split, open_blob_store, uncaptured

__all__ = ["BatchEvidence", "PreparedEvidence", "RowEvidence", "batch_evidence"]

log = logging.getLogger("abgate.evidence")

# Records whose bodies are cut between two yields to the event loop.
_PLAN_CHUNK = 32


@dataclass(slots=True)  # per row: not frozen (see prompt_store.Remainder)
class RowEvidence:
    """The columns of one request's rows that the recorder takes from here."""

    market_cost_microdollars: int
    captured: Captured


@dataclass(frozen=True, slots=True)
class PreparedEvidence:
    records: Sequence[Any]
    costs: list[int]
    plans: list[Split | None] | None  # None: prompt store off


class BatchEvidence:
    def __init__(self, capture: PromptCapture | None) -> None:
        self._book = RateCardBook()
        self._capture = capture

    async def prepare(self, conn: asyncpg.Connection, records: Sequence[Any]) -> PreparedEvidence:
        """Outside any transaction: price the batch, plan its blobs; no Postgres error escapes."""
        try:
            costs = await self._book.costs(conn, records)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("market cost of %d request(s) not recorded (%s)",
                        len(records), type(exc).__name__)
            costs = [0] * len(records)
        plans = await self._plan(records) if self._capture is not None else None
        return PreparedEvidence(records, costs, plans)

    async def _plan(self, records: Sequence[Any]) -> list[Split | None]:
        """Cut the bodies a few at a time: ~5 µs a 1 KB record, and requests wait meanwhile."""
        assert self._capture is not None
        plans: list[Split | None] = []
        for start in range(0, len(records), _PLAN_CHUNK):
            if start:
                await asyncio.sleep(0)
            plans += self._capture.plan(records[start:start + _PLAN_CHUNK])
        return plans

    async def store(
        self, conn: asyncpg.Connection, prepared: PreparedEvidence
    ) -> list[RowEvidence]:
        """Inside the rows' transaction: write the blobs; each row's evidence, in order."""
        records = prepared.records
        if self._capture is None or prepared.plans is None:
            captured = [uncaptured(r) for r in records]
        else:
            captured = await self._capture.store(conn, records, prepared.plans)
        # A cost already on the record is kept, as a priced row is never repriced.
        return [RowEvidence(r.market_cost_microdollars or cost, c)
                for r, cost, c in zip(records, prepared.costs, captured, strict=True)]

    def committed(self, evidence: Sequence[RowEvidence]) -> None:
        """The rows carrying ``evidence`` have committed: count the captures."""
        if self._capture is not None:
            self._capture.count([e.captured for e in evidence])


def batch_evidence(prompt_store: str) -> BatchEvidence:
    """The evidence writer for ``Settings.prompt_store`` (``postgres``, ``fs:PATH`` or ``off``)."""
    store = open_blob_store(prompt_store)
    return BatchEvidence(PromptCapture(store) if store is not None else None)
