"""Durable, batched writer of usage + request rows (DESIGN.md "Data plane" step 8).

Handlers call :meth:`Recorder.record`, which only appends to an in-memory
queue. One background task drains it in batches (by count and time) and
writes each batch in one transaction: one statement inserts ``usage`` and
``model_experiment_request`` from one array of rows (``unnest``, ``ON CONFLICT
DO NOTHING``), so re-sending a batch never duplicates a row (rows are keyed by
``usage_id``). Array inserts cost Postgres ~1 ms less CPU per batch than COPY
into session temp tables (whose ``CREATE ... IF NOT EXISTS`` and commit
truncation are paid per batch) and the same per row at 200 rows.

When a write fails, the batch goes to the local :class:`~proxy.spool.Spool` and
the writer backs off (capped exponential, jittered). While the spool holds
anything, newer rows are spooled behind it and the spool is replayed oldest
first, so rows reach Postgres in the order they were recorded (except those
spilled straight to the spool because the in-memory queue was full). Nothing
is lost unless the spool is full; such rows are counted as ``dropped``.

Each batch's evidence (market cost, prompt blobs: :attr:`Recorder.evidence`)
is prepared before its transaction and written inside it, so a row is inserted
once, complete, together with the blobs it references. Prompt content (the
bytes sent upstream) rides on the queued records until their batch commits. It
is bounded by bytes, not only by count: a batch ends at ``batch_prompt_bytes``
of content, and beyond ``max_prompt_bytes`` queued a new record is kept
without its content (its capture is then marked failed, as for any capture
that could not be stored), so a backlog costs evidence, never rows or memory.

A row Postgres will never accept (a constraint or data error) cannot be
retried into existence: its batch is retried row by row and only the
offending rows are dropped, counted and logged by ``usage_id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg

from abgate.evidence_sink import RowEvidence
from abgate.prompt_store import uncaptured
from proxy.metrics import PROMPTS_SHED, RECORDER_QUEUE_DEPTH, RECORDER_ROWS
from proxy.records import RequestRecord
from proxy.spool import Spool

__all__ = ["BatchEvidence", "Recorder"]

log = logging.getLogger(__name__)


class BatchEvidence(Protocol):
    """Evidence written with each batch (``abgate.evidence_sink.BatchEvidence``)."""

    async def prepare(self, conn: asyncpg.Connection, records: Sequence[RequestRecord]) -> Any:
        """Before the batch's transaction; must not raise for a Postgres error."""
        ...

    async def store(self, conn: asyncpg.Connection, prepared: Any) -> list[RowEvidence]:
        """Inside the transaction, before the rows are inserted: one entry per record."""
        ...

    def committed(self, evidence: Sequence[RowEvidence]) -> None:
        """The batch carrying ``evidence`` has committed."""
        ...


# Each batch costs Postgres ~1-2 ms of CPU beyond its rows (transaction, plans,
# the rollup trigger's statements): at 1,500 rows/s, 0.2 s batches cost it 85 µs
# a row where 0.05 s batches cost 117. Each batch also wakes a Postgres backend,
# which on a shared host preempts whatever runs on its core for a few ms: the
# proxy's p99 at concurrency 1 (bench, json 1 KB, single runs) was +2.9-5.1 ms
# over the upstream with 0.05 s batches, +5.0 ms with 50-row ones and
# +2.4-3.9 ms with 0.5 s batches of up to 1,000: fewer wake-ups, a shorter tail.
# Rows still reach the stats within half a second.
_FLUSH_INTERVAL_S = 0.5
_BATCH_SIZE = 1000
# A batch also ends at this much prompt content (200 KB bodies: ~80 records),
# so the content in hand stays far below the queue's budget (max_prompt_bytes).
_BATCH_PROMPT_BYTES = 16 * 1024 * 1024
# asyncpg encodes a statement's arguments in one go while requests wait: one
# INSERT of 500 rows stalled the event loop 1.9-3.8 ms, slices of 100 0.7-1.3 ms.
_ROWS_PER_STATEMENT = 100
_BACKOFF_BASE_S = 0.1
_BACKOFF_CAP_S = 5.0
_ADOPT_EVERY_S = 30.0
_WARN_EVERY_S = 30.0

# One statement for both tables, from one array of abgate_request_record
# (sql/0008): the usage rows (CTE) and then the request rows that reference them;
# the rollup trigger, run at the end of the statement, sees both. Field order of
# _row and of the type.
_INSERT_SQL = """
WITH r AS (SELECT * FROM unnest($1::abgate_request_record[])),
usage_rows AS (
    INSERT INTO usage (
        id, created_at, user_id, request_kind, upstream_model, status_code, has_error,
        cancelled, streamed, input_tokens, output_tokens, cache_read_tokens,
        cache_write_tokens, latency_ms, ttft_ms, cost_microdollars, market_cost_microdollars)
    SELECT
        usage_id, created_at, user_id, request_kind, upstream_model, status_code, has_error,
        cancelled, streamed, input_tokens, output_tokens, cache_read_tokens,
        cache_write_tokens, latency_ms, ttft_ms, cost_microdollars, market_cost_microdollars
    FROM r
    ON CONFLICT DO NOTHING
)
INSERT INTO model_experiment_request (
    usage_id, created_at, variant_version_id, allocation_subject, subject_value,
    client_request_id, request_kind, system_prompt_sha256, request_body_sha256, was_truncated,
    body_blob_sha256)
SELECT
    usage_id, created_at, variant_version_id, allocation_subject, subject_value,
    client_request_id, request_kind, system_prompt_sha256, request_body_sha256, was_truncated,
    body_blob_sha256
FROM r
ON CONFLICT DO NOTHING
"""
_ENSURE_PARTITION_SQL = "SELECT abgate_ensure_request_partition($1)"

_ROWS = {
    result: RECORDER_ROWS.labels(result=result)
    for result in ("written", "spilled", "replayed", "dropped")
}

# Errors no retry can fix: Postgres rejected a row, or asyncpg could not encode a
# parameter (which raises plain TypeError/ValueError/OverflowError).
_ROW_ERRORS = (
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.DataError,
    TypeError,
    ValueError,
    OverflowError,
)

# Errors that mean Postgres or the connection failed, not the evidence writer's
# code: they fail the batch (retried, spooled) instead of being logged as a bug.
_CONNECTION_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


def _row(r: RequestRecord, e: RowEvidence) -> tuple[Any, ...]:
    c = e.captured
    return (
        r.usage_id, r.created_at, r.user_id, r.request_kind, r.upstream_model, r.status_code,
        r.has_error, r.cancelled, r.streamed, r.input_tokens, r.output_tokens,
        r.cache_read_tokens, r.cache_write_tokens, r.latency_ms, r.ttft_ms,
        r.cost_microdollars, e.market_cost_microdollars,
        r.variant_version_id, r.allocation_subject, r.subject_value, r.client_request_id,
        c.system_prompt_sha256, c.request_body_sha256, r.was_truncated, c.body_blob_sha256,
    )  # fmt: skip


def _as_recorded(r: RequestRecord) -> RowEvidence:
    """A record's own columns, for a batch written without an evidence writer."""
    return RowEvidence(r.market_cost_microdollars, uncaptured(r))


def _prompt_size(r: RequestRecord) -> int:
    return len(r.prompt_body or b"") + len(r.prompt_system or b"")


def _is_missing_partition(exc: BaseException) -> bool:
    return isinstance(exc, asyncpg.CheckViolationError) and "no partition" in str(exc)


def _months(batch: Sequence[RequestRecord]) -> list[datetime]:
    starts = set()
    for r in batch:
        ts = r.created_at if r.created_at.tzinfo else r.created_at.replace(tzinfo=UTC)
        ts = ts.astimezone(UTC)
        starts.add(datetime(ts.year, ts.month, 1, tzinfo=UTC))
    return sorted(starts)


async def _write_batch(
    conn: asyncpg.Connection,
    batch: Sequence[RequestRecord],
    evidence: BatchEvidence | None,
    prepared: Any,
) -> list[RowEvidence]:
    if not batch:
        return []
    async with conn.transaction():
        columns = await _evidence_columns(conn, batch, evidence, prepared)
        for start in range(0, len(batch), _ROWS_PER_STATEMENT):
            end = start + _ROWS_PER_STATEMENT
            rows = [_row(r, e) for r, e in zip(batch[start:end], columns[start:end], strict=True)]
            await conn.execute(_INSERT_SQL, rows)
    return columns


async def _evidence_columns(
    conn: asyncpg.Connection,
    batch: Sequence[RequestRecord],
    evidence: BatchEvidence | None,
    prepared: Any,
) -> list[RowEvidence]:
    if evidence is None or prepared is None:
        return [_as_recorded(r) for r in batch]
    try:
        return await evidence.store(conn, prepared)
    except _CONNECTION_ERRORS:
        raise  # the transaction or the connection is gone: the batch is retried
    except Exception:  # a bug in the evidence writer must not cost rows
        log.exception("prompt evidence failed for a batch of %d records", len(batch))
        return [_as_recorded(r) for r in batch]


async def _ensure_partitions(conn: asyncpg.Connection, batch: Sequence[RequestRecord]) -> None:
    months = _months(batch)
    for month in months:
        await conn.execute(_ENSURE_PARTITION_SQL, month)
    log.warning("created missing request partitions for %d month(s)", len(months))


class _TransientFailure(Exception):
    """Postgres could not take the batch now; it must be kept and retried."""


class Recorder:
    """Queue request records and write them to Postgres, spooling while it is down."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        spool: Spool,
        *,
        batch_size: int = _BATCH_SIZE,
        batch_prompt_bytes: int = _BATCH_PROMPT_BYTES,
        flush_interval_s: float = _FLUSH_INTERVAL_S,
        max_queue: int = 100_000,
        max_prompt_bytes: int = 64 * 1024 * 1024,
        write_timeout_s: float = 10.0,
    ) -> None:
        self._pool = pool
        self._spool = spool
        self._batch_size = batch_size
        self._batch_prompt_bytes = batch_prompt_bytes
        self._flush_interval_s = flush_interval_s
        self._max_queue = max_queue
        self._max_prompt_bytes = max_prompt_bytes
        self._prompt_bytes = 0  # prompt content held by records in the queue
        self._write_timeout_s = write_timeout_s
        #: Market cost and prompt evidence, written in each batch's transaction.
        #: Without it rows keep their records' own hashes and cost.
        self.evidence: BatchEvidence | None = None
        #: False while Postgres writes are failing.
        self.healthy = True
        self._queue: deque[RequestRecord] = deque()
        self._wakeup = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._in_hand: list[RequestRecord] = []  # taken from the queue, not yet stored
        self._failures = 0
        self._next_adopt = time.monotonic() + _ADOPT_EVERY_S
        self._warned_at = -_WARN_EVERY_S
        self._dropped_logged_at = -_WARN_EVERY_S
        self._dropped_unlogged = 0
        self._shed_logged_at = -_WARN_EVERY_S
        self._shed_unlogged = 0

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    # ------------------------------------------------------------------ producer side

    def record(self, rec: RequestRecord) -> None:
        """Enqueue one request's rows. O(1); never blocks on Postgres, never raises."""
        try:
            if len(self._queue) >= self._max_queue or (self._task is None and self._closing):
                self._spill_now([rec])
                return
            self._hold_prompt(rec)
            self._queue.append(rec)
            if len(self._queue) == 1 or self._full():
                self._wakeup.set()
        except Exception:  # a request must never fail because recording did
            log.exception("failed to record request %s", rec.usage_id)

    def _hold_prompt(self, rec: RequestRecord) -> None:
        """Count ``rec``'s prompt content against the budget, or drop it when over."""
        size = _prompt_size(rec)
        if not size:
            return
        if self._prompt_bytes + size <= self._max_prompt_bytes:
            self._prompt_bytes += size
            return
        rec.prompt_body = rec.prompt_system = None
        PROMPTS_SHED.inc()
        self._shed_unlogged += 1
        now = time.monotonic()
        if now - self._shed_logged_at >= _WARN_EVERY_S:
            log.warning(
                "prompt evidence is arriving faster than it is stored: %d capture(s) "
                "kept without content (rows are unaffected)",
                self._shed_unlogged,
            )
            self._shed_logged_at = now
            self._shed_unlogged = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="abgate-recorder")

    async def close(self, timeout: float) -> None:  # noqa: ASYNC109 - a drain budget
        """Write everything queued; whatever Postgres cannot take in time is spooled."""
        self._closing = True
        self._wakeup.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout)
            except TimeoutError:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            except Exception:
                log.exception("recorder writer failed")
        leftovers = self._in_hand + list(self._queue)
        self._in_hand = []
        self._queue.clear()
        self._prompt_bytes = 0
        if leftovers:
            self._spill_now(leftovers)
        RECORDER_QUEUE_DEPTH.set(0)

    # ------------------------------------------------------------------ writer

    async def _run(self) -> None:
        while True:
            try:
                if await self._step():
                    return
            except Exception:  # a bug must not stop recording: keep the rows, go on
                log.exception("recorder writer failed unexpectedly")
                in_hand, self._in_hand = self._in_hand, []
                try:
                    self._spill_now(in_hand)
                except Exception:
                    _ROWS["dropped"].inc(len(in_hand))
                    log.exception("could not spool %d request records", len(in_hand))
                self._failures += 1
                await self._back_off()

    async def _step(self) -> bool:
        """One round of the writer; True when closing and everything is handled."""
        RECORDER_QUEUE_DEPTH.set(len(self._queue))
        await self._adopt_orphans_now_and_then()
        if self._spool.pending:
            if not await self._catch_up() and self._closing:
                await self._spill(self._take(len(self._queue)))
                return True
            return False
        if not self._queue:
            if self._closing:
                return True
            self._wakeup.clear()
            await self._wakeup.wait()
            return False
        if not self._full() and not self._closing:
            await self._gather()
        batch = self._take(self._batch_length())
        if not await self._store(batch, "written"):
            await self._spill(batch)
            await self._back_off()
        self._in_hand = []
        return False

    async def _gather(self) -> None:
        """Wait up to one flush interval for a full batch."""
        self._wakeup.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._flush_interval_s):
                await self._wakeup.wait()

    def _full(self) -> bool:
        return (len(self._queue) >= self._batch_size
                or self._prompt_bytes >= self._batch_prompt_bytes)

    def _batch_length(self) -> int:
        """How many queued records make the next batch (count and content limits)."""
        count = size = 0
        for rec in self._queue:
            size += _prompt_size(rec)
            if count == self._batch_size or (count and size > self._batch_prompt_bytes):
                break
            count += 1
        return count

    def _take(self, count: int) -> list[RequestRecord]:
        batch = [self._queue.popleft() for _ in range(min(count, len(self._queue)))]
        self._in_hand = batch
        # Taken content is bounded by the batch size from here on.
        self._prompt_bytes -= sum(_prompt_size(r) for r in batch)
        return batch

    async def _catch_up(self) -> bool:
        """Spool the queue behind what is spooled, then replay the spool in order.

        Returns False when Postgres failed (after backing off, unless closing).
        """
        await self._spill(self._take(len(self._queue)))
        self._in_hand = []
        batches = self._spool.replay_batches(self._batch_size)
        while True:
            corrupt_before = self._spool.corrupt_lines
            item = await asyncio.to_thread(next, batches, None)
            # A torn or unreadable spool line is a row that can never be replayed.
            _ROWS["dropped"].inc(self._spool.corrupt_lines - corrupt_before)
            if item is None:
                return True
            batch, cursor = item
            RECORDER_QUEUE_DEPTH.set(len(self._queue))
            if not await self._store(batch, "replayed"):
                if not self._closing:
                    await self._back_off()
                return False
            await asyncio.to_thread(self._spool.commit, cursor)

    async def _store(self, batch: list[RequestRecord], result: str) -> bool:
        """Write a batch; False when it must be kept for a retry."""
        try:
            stored = await self._insert_isolating_bad_rows(batch)
        except _TransientFailure:
            return False
        self.healthy = True
        self._failures = 0
        _ROWS[result].inc(len(stored))
        return True

    async def _insert_isolating_bad_rows(self, batch: list[RequestRecord]) -> list[RequestRecord]:
        """Insert the batch; on a row error retry row by row and drop only bad rows."""
        try:
            await self._insert(batch)
            return batch
        except _ROW_ERRORS as exc:
            if len(batch) == 1:
                self._drop_rejected(batch[0], exc)
                return []
        stored: list[RequestRecord] = []
        for record in batch:
            try:
                await self._insert([record])
            except _ROW_ERRORS as exc:
                self._drop_rejected(record, exc)
                continue
            stored.append(record)
        return stored

    def _drop_rejected(self, record: RequestRecord, exc: Exception) -> None:
        # Class and constraint name only: messages can quote row values.
        _ROWS["dropped"].inc()
        log.error(
            "Postgres rejected request record %s (%s %s); dropped",
            record.usage_id,
            type(exc).__name__,
            getattr(exc, "constraint_name", None) or "",
        )

    async def _insert(self, batch: Sequence[RequestRecord]) -> None:
        """One transaction for the batch; raises _ROW_ERRORS or _TransientFailure."""
        evidence = self.evidence
        try:
            async with asyncio.timeout(self._write_timeout_s):
                async with self._pool.acquire() as conn:
                    prepared = await self._prepare(conn, batch)
                    try:
                        columns = await _write_batch(conn, batch, evidence, prepared)
                    except asyncpg.CheckViolationError as exc:
                        if not _is_missing_partition(exc):
                            raise
                        await _ensure_partitions(conn, batch)
                        columns = await _write_batch(conn, batch, evidence, prepared)
        except _ROW_ERRORS:
            raise
        except Exception as exc:
            self._note_failure(exc)
            raise _TransientFailure from exc
        if evidence is not None:
            evidence.committed(columns)

    async def _prepare(self, conn: asyncpg.Connection, batch: Sequence[RequestRecord]) -> Any:
        """The evidence writer's preparation of ``batch``; None (rows as recorded) on a bug."""
        if self.evidence is None:
            return None
        try:
            return await self.evidence.prepare(conn, batch)
        except _CONNECTION_ERRORS:
            raise
        except Exception:
            log.exception("prompt evidence failed for a batch of %d records", len(batch))
            return None

    def _note_failure(self, exc: BaseException) -> None:
        self.healthy = False
        self._failures += 1
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY_S:
            self._warned_at = now
            log.warning(
                "writing request records failed (%s); spooling to disk and retrying",
                type(exc).__name__,
            )

    async def _back_off(self) -> None:
        """Wait before the next attempt, spooling new rows meanwhile; cut short by close()."""
        delay = min(_BACKOFF_CAP_S, _BACKOFF_BASE_S * 2 ** min(self._failures, 16))
        deadline = time.monotonic() + random.uniform(delay / 2, delay)
        while not self._closing and (remaining := deadline - time.monotonic()) > 0:
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._wakeup.wait()
            if len(self._queue) >= self._batch_size:  # keep memory bounded, order kept
                await self._spill(self._take(len(self._queue)))

    # ------------------------------------------------------------------ spool

    async def _spill(self, batch: list[RequestRecord]) -> None:
        if batch:
            accepted = await asyncio.to_thread(self._spool.append, batch)
            self._count_spilled(len(batch), accepted)
        self._in_hand = []

    def _spill_now(self, batch: list[RequestRecord]) -> None:
        if batch:
            self._count_spilled(len(batch), self._spool.append(batch))

    def _count_spilled(self, total: int, accepted: int) -> None:
        _ROWS["spilled"].inc(accepted)
        if accepted < total:
            dropped = total - accepted
            _ROWS["dropped"].inc(dropped)
            self._dropped_unlogged += dropped
            now = time.monotonic()
            if now - self._dropped_logged_at >= _WARN_EVERY_S:
                log.error("spool full: %d request records dropped", self._dropped_unlogged)
                self._dropped_logged_at = now
                self._dropped_unlogged = 0

    async def _adopt_orphans_now_and_then(self) -> None:
        now = time.monotonic()
        if now >= self._next_adopt:
            self._next_adopt = now + _ADOPT_EVERY_S
            await asyncio.to_thread(self._spool.adopt_orphans)
