"""Recorder: batched durable writes, spill and replay across outages, exactly once."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from abgate.evidence_sink import BatchEvidence, RowEvidence, batch_evidence
from proxy.recorder import _ROWS_PER_STATEMENT, Recorder
from proxy.records import RequestRecord
from proxy.spool import Spool

from .routing_rows import create_experiment, eventually, recorder_rows
from .tcp_cut import TcpCut

RecorderFactory = Callable[..., Awaitable[Recorder]]

_ARRIVALS_SQL = """
CREATE TABLE test_arrivals (seq bigserial PRIMARY KEY, usage_id uuid NOT NULL);
CREATE FUNCTION test_note_arrival() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO test_arrivals (usage_id) VALUES (NEW.id);
    RETURN NEW;
END;
$$;
CREATE TRIGGER test_note_arrival AFTER INSERT ON usage
    FOR EACH ROW EXECUTE FUNCTION test_note_arrival();
"""


@pytest.fixture
async def version_id(db: asyncpg.Connection) -> int:
    """A real variant version for the request rows' foreign key."""
    experiment = await create_experiment(db, "preview/rec")
    await db.execute(_ARRIVALS_SQL)
    return experiment.version_ids[0]


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


@pytest.fixture
async def make_recorder(
    pool: asyncpg.Pool, spool_dir: Path
) -> AsyncIterator[RecorderFactory]:
    made: list[tuple[Recorder, Spool]] = []

    async def make(**kwargs: Any) -> Recorder:
        spool = kwargs.pop("spool", None) or Spool(
            str(spool_dir), kwargs.pop("spool_max_bytes", 1 << 20)
        )
        recorder = Recorder(kwargs.pop("pool", pool), spool, **kwargs)
        made.append((recorder, spool))
        await recorder.start()
        return recorder

    yield make
    for recorder, spool in made:
        await recorder.close(timeout=2.0)
        spool.close()


def make_record(version_id: int, n: int = 0, **overrides: Any) -> RequestRecord:
    fields: dict[str, Any] = {
        "created_at": datetime.now(UTC),
        "request_kind": "chat_completions",
        "upstream_model": f"ckpt-{n}",
        "status_code": 200,
        "variant_version_id": version_id,
        "allocation_subject": "user",
        "subject_value": f"user-{n}",
        "request_body_sha256": hashlib.sha256(str(n).encode()).hexdigest(),
    }
    fields.update(overrides)
    return RequestRecord(**fields)


async def usage_count(db: asyncpg.Connection) -> int:
    return int(await db.fetchval("SELECT count(*) FROM usage"))


async def request_count(db: asyncpg.Connection) -> int:
    return int(await db.fetchval("SELECT count(*) FROM model_experiment_request"))


async def _count_is(db: asyncpg.Connection, expected: int) -> bool:
    return await usage_count(db) == await request_count(db) == expected


class _Watched:
    """A real evidence writer that notes each batch and can be made to fail."""

    def __init__(self, inner: BatchEvidence, fail_in: str | None = None) -> None:
        self._inner = inner
        self._fail_in = fail_in
        self.batches: list[int] = []
        self.contents: list[bytes | None] = []

    async def prepare(self, conn: asyncpg.Connection, records: Sequence[RequestRecord]) -> Any:
        self.batches.append(len(records))
        self.contents.extend(r.prompt_body for r in records)
        if self._fail_in == "prepare":
            raise RuntimeError("evidence writer bug")
        return await self._inner.prepare(conn, records)

    async def store(self, conn: asyncpg.Connection, prepared: Any) -> list[RowEvidence]:
        columns = await self._inner.store(conn, prepared)
        if self._fail_in == "store":
            raise RuntimeError("evidence writer bug")
        return columns

    def committed(self, evidence: Sequence[RowEvidence]) -> None:
        self._inner.committed(evidence)


async def arrivals(db: asyncpg.Connection) -> list[uuid.UUID]:
    rows = await db.fetch("SELECT usage_id FROM test_arrivals ORDER BY seq")
    return [r["usage_id"] for r in rows]


async def test_a_record_becomes_one_usage_row_and_one_request_row(
    db: asyncpg.Connection, make_recorder: RecorderFactory, version_id: int
) -> None:
    recorder = await make_recorder()
    rec = make_record(
        version_id,
        user_id="u-1",
        has_error=True,
        cancelled=True,
        streamed=True,
        input_tokens=11,
        output_tokens=22,
        cache_read_tokens=3,
        cache_write_tokens=4,
        latency_ms=1234,
        ttft_ms=56,
        cost_microdollars=7,
        market_cost_microdollars=8,
        client_request_id="client-1",
        system_prompt_sha256="a" * 64,
        was_truncated=True,
        status_code=502,
    )
    recorder.record(rec)
    await eventually(lambda: request_count(db), 3.0, "the rows")

    usage = await db.fetchrow("SELECT * FROM usage")
    assert dict(usage) == {
        "id": rec.usage_id,
        "created_at": rec.created_at,
        "user_id": "u-1",
        "request_kind": "chat_completions",
        "upstream_model": "ckpt-0",
        "status_code": 502,
        "has_error": True,
        "cancelled": True,
        "streamed": True,
        "input_tokens": 11,
        "output_tokens": 22,
        "cache_read_tokens": 3,
        "cache_write_tokens": 4,
        "latency_ms": 1234,
        "ttft_ms": 56,
        "cost_microdollars": 7,
        "market_cost_microdollars": 8,
    }
    request = await db.fetchrow(
        "SELECT usage_id, created_at, variant_version_id, allocation_subject, subject_value,"
        " client_request_id, request_kind, system_prompt_sha256, request_body_sha256,"
        " was_truncated FROM model_experiment_request"
    )
    assert dict(request) == {
        "usage_id": rec.usage_id,
        "created_at": rec.created_at,
        "variant_version_id": version_id,
        "allocation_subject": "user",
        "subject_value": "user-0",
        "client_request_id": "client-1",
        "request_kind": "chat_completions",
        "system_prompt_sha256": "a" * 64,
        "request_body_sha256": rec.request_body_sha256,
        "was_truncated": True,
    }


async def test_the_stats_rollup_of_a_batch_sees_its_usage_rows(
    db: asyncpg.Connection, make_recorder: RecorderFactory, version_id: int
) -> None:
    # Usage and request rows go in by one statement; the rollup trigger on the
    # request rows reads tokens, errors and latency from the usage rows.
    recorder = await make_recorder()
    for i in range(3):
        recorder.record(make_record(version_id, input_tokens=10 + i, output_tokens=5,
                                    has_error=i == 0, latency_ms=100, ttft_ms=20))
    await eventually(lambda: _count_is(db, 3), 3.0, "the rows")
    stats = await db.fetchrow(
        "SELECT sum(requests) AS requests, sum(errors) AS errors,"
        " sum(input_tokens) AS input, sum(output_tokens) AS output FROM request_stats_hourly"
    )
    assert dict(stats) == {"requests": 3, "errors": 1, "input": 33, "output": 15}
    samples = await db.fetchrow(
        "SELECT sum(latency_count) AS latency, sum(ttft_count) AS ttft"
        " FROM request_latency_hourly"
    )
    assert dict(samples) == {"latency": 3, "ttft": 3}


async def test_records_are_written_in_batches_of_batch_size(
    db: asyncpg.Connection, make_recorder: RecorderFactory, version_id: int
) -> None:
    recorder = await make_recorder(batch_size=10)
    evidence = _Watched(batch_evidence("off"))
    recorder.evidence = evidence
    batches = evidence.batches
    metrics = recorder_rows()
    for n in range(25):
        recorder.record(make_record(version_id, n))
    await eventually(lambda: _count_is(db, 25), 3.0, "all batches")
    assert batches == [10, 10, 5]
    assert metrics.delta() == {("written",): 25}


async def test_a_batch_longer_than_one_insert_statement_is_written_whole_with_its_rollups(
    db: asyncpg.Connection, make_recorder: RecorderFactory, version_id: int
) -> None:
    recorder = await make_recorder(batch_size=1000, flush_interval_s=0.05)
    evidence = _Watched(batch_evidence("off"))
    recorder.evidence = evidence
    count = _ROWS_PER_STATEMENT * 2 + 7
    for n in range(count):
        recorder.record(make_record(version_id, n))
    await eventually(lambda: _count_is(db, count), 5.0, "the whole batch")
    assert evidence.batches == [count]  # one batch, one transaction, several statements
    counted = await db.fetchval(
        "SELECT sum(requests) FROM request_stats_hourly WHERE variant_version_id = $1",
        version_id,
    )
    assert counted == count


async def test_a_batch_ends_at_its_prompt_content_limit_without_waiting_for_the_interval(
    db: asyncpg.Connection, make_recorder: RecorderFactory, version_id: int
) -> None:
    recorder = await make_recorder(batch_size=100, batch_prompt_bytes=1000, flush_interval_s=10)
    evidence = _Watched(batch_evidence("off"))
    recorder.evidence = evidence
    for n in range(5):
        recorder.record(make_record(version_id, n, prompt_body=b"x" * 400))
    await eventually(lambda: _count_is(db, 4), 3.0, "two batches full of content")
    assert evidence.batches == [2, 2]  # the fifth waits for more, or for the interval


async def test_a_partial_batch_is_written_after_the_flush_interval(
    db: asyncpg.Connection, make_recorder: RecorderFactory, version_id: int
) -> None:
    recorder = await make_recorder(batch_size=1000, flush_interval_s=0.05)
    for n in range(3):
        recorder.record(make_record(version_id, n))
    await eventually(lambda: _equals(request_count(db), 3), 3.0, "the partial batch")


async def _equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


async def test_recording_the_same_usage_id_twice_stores_it_once(
    db: asyncpg.Connection, make_recorder: RecorderFactory, version_id: int
) -> None:
    recorder = await make_recorder()
    rec = make_record(version_id)
    metrics = recorder_rows()
    recorder.record(rec)
    await eventually(lambda: metrics[("written",)] == 1, 3.0, "the first write")
    recorder.record(rec)
    await eventually(lambda: metrics[("written",)] == 2, 3.0, "the second write")
    assert await usage_count(db) == await request_count(db) == 1


async def test_rows_spill_during_an_outage_and_arrive_once_in_order_after_it(
    db: asyncpg.Connection,
    make_recorder: RecorderFactory,
    version_id: int,
    relayed_pool: asyncpg.Pool,
    pg_relay: TcpCut,
) -> None:
    recorder = await make_recorder(pool=relayed_pool, batch_size=10, write_timeout_s=2.0)
    metrics = recorder_rows()
    records = [make_record(version_id, n) for n in range(50)]
    for rec in records[:20]:
        recorder.record(rec)
    await eventually(lambda: metrics[("written",)] == 20, 3.0, "rows before the outage")

    pg_relay.cut()
    for rec in records[20:]:
        recorder.record(rec)
    await eventually(lambda: metrics[("spilled",)] == 30, 5.0, "rows to be spooled")
    assert not recorder.healthy
    assert recorder.queue_depth == 0

    pg_relay.restore()
    await eventually(lambda: _equals(usage_count(db), 50), 8.0, "the spool to be replayed")
    assert recorder.healthy
    assert await arrivals(db) == [r.usage_id for r in records]
    assert await request_count(db) == 50
    # The counter moves once the writer resumes after the commit the rows showed.
    await eventually(lambda: metrics[("replayed",)] == 30, 3.0, "the replay counter")
    assert metrics.delta() == {("written",): 20, ("spilled",): 30, ("replayed",): 30}


async def test_rows_recorded_after_an_outage_queue_behind_the_spool(
    db: asyncpg.Connection,
    make_recorder: RecorderFactory,
    version_id: int,
    relayed_pool: asyncpg.Pool,
    pg_relay: TcpCut,
) -> None:
    recorder = await make_recorder(pool=relayed_pool, batch_size=100, write_timeout_s=2.0)
    metrics = recorder_rows()
    records = [make_record(version_id, n) for n in range(20)]
    pg_relay.cut()
    for rec in records[:10]:
        recorder.record(rec)
    await eventually(lambda: metrics[("spilled",)] == 10, 5.0, "rows to be spooled")
    # The writer is backing off; newer rows wait in memory as Postgres returns.
    for rec in records[10:]:
        recorder.record(rec)
    pg_relay.restore()
    await eventually(lambda: _equals(usage_count(db), 20), 8.0, "every row")
    assert await arrivals(db) == [r.usage_id for r in records]


async def test_a_full_spool_drops_rows_and_counts_them(
    make_recorder: RecorderFactory,
    version_id: int,
    relayed_pool: asyncpg.Pool,
    pg_relay: TcpCut,
) -> None:
    recorder = await make_recorder(
        pool=relayed_pool, batch_size=5, write_timeout_s=2.0, spool_max_bytes=1500
    )
    metrics = recorder_rows()
    pg_relay.cut()
    for n in range(10):
        recorder.record(make_record(version_id, n))
    await eventually(
        lambda: metrics[("spilled",)] + metrics[("dropped",)] == 10, 5.0, "spill or drop"
    )
    assert 0 < metrics[("spilled",)] < 10
    assert metrics[("dropped",)] == 10 - metrics[("spilled",)]


async def test_a_missing_month_partition_is_created_on_demand(
    db: asyncpg.Connection, make_recorder: RecorderFactory, version_id: int
) -> None:
    now = datetime.now(UTC)
    current = f"model_experiment_request_{now:%Y_%m}"
    await db.execute(f"DROP TABLE {current}")
    recorder = await make_recorder()
    far = datetime(now.year + 5, 7, 15, tzinfo=UTC)
    recorder.record(make_record(version_id, 0))
    recorder.record(make_record(version_id, 1, created_at=far))
    await eventually(lambda: _equals(request_count(db), 2), 3.0, "both rows")
    for name in (current, f"model_experiment_request_{far:%Y_%m}"):
        assert await db.fetchval("SELECT to_regclass($1) IS NOT NULL", name)


async def test_a_row_postgres_rejects_is_dropped_and_the_rest_of_its_batch_written(
    db: asyncpg.Connection,
    make_recorder: RecorderFactory,
    version_id: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = await make_recorder(batch_size=5)
    metrics = recorder_rows()
    records = [make_record(version_id, n) for n in range(5)]
    records[2] = make_record(version_id, 2, variant_version_id=987654, subject_value="secret-ip")
    for rec in records:
        recorder.record(rec)
    await eventually(lambda: metrics[("dropped",)] == 1, 3.0, "the bad row to be dropped")
    await eventually(lambda: metrics[("written",)] == 4, 3.0, "the good rows")
    stored = {r["id"] for r in await db.fetch("SELECT id FROM usage")}
    assert stored == {r.usage_id for i, r in enumerate(records) if i != 2}
    assert str(records[2].usage_id) in caplog.text
    assert "secret-ip" not in caplog.text


@pytest.mark.parametrize(
    "bad",
    [
        {"allocation_subject": "cookie"},
        {"status_code": "200"},
        {"latency_ms": 2**40},
        {"request_body_sha256": "nothex"},
    ],
)
async def test_rows_that_can_never_be_stored_are_dropped_not_retried(
    db: asyncpg.Connection, make_recorder: RecorderFactory, version_id: int, bad: dict[str, Any]
) -> None:
    recorder = await make_recorder(batch_size=2)
    metrics = recorder_rows()
    recorder.record(make_record(version_id, 0, **bad))
    recorder.record(make_record(version_id, 1))
    await eventually(lambda: metrics[("written",)] == 1, 3.0, "the good row")
    assert metrics[("dropped",)] == 1
    assert recorder.healthy
    assert not recorder._spool.pending


async def test_close_writes_everything_still_queued(
    db: asyncpg.Connection, make_recorder: RecorderFactory, version_id: int
) -> None:
    recorder = await make_recorder(batch_size=1000, flush_interval_s=10)
    for n in range(7):
        recorder.record(make_record(version_id, n))
    await recorder.close(timeout=5.0)
    assert await usage_count(db) == 7
    assert recorder.queue_depth == 0


async def test_close_spools_what_postgres_cannot_take_and_a_restart_replays_it(
    db: asyncpg.Connection,
    make_recorder: RecorderFactory,
    version_id: int,
    relayed_pool: asyncpg.Pool,
    pg_relay: TcpCut,
    spool_dir: Path,
) -> None:
    spool = Spool(str(spool_dir), 1 << 20)
    recorder = await make_recorder(pool=relayed_pool, spool=spool, write_timeout_s=0.5)
    pg_relay.cut()
    records = [make_record(version_id, n) for n in range(5)]
    for rec in records:
        recorder.record(rec)
    await recorder.close(timeout=1.0)
    spool.close()  # the process exits
    assert await usage_count(db) == 0

    metrics = recorder_rows()
    await make_recorder()  # the next process, on a reachable Postgres
    await eventually(lambda: _equals(usage_count(db), 5), 5.0, "the replay")
    assert await arrivals(db) == [r.usage_id for r in records]
    # The rows commit before the counter moves: wait for the counter too.
    await eventually(lambda: metrics[("replayed",)] == 5, 5.0, "the replay counter")


async def test_a_torn_spool_line_is_counted_as_dropped_on_replay(
    db: asyncpg.Connection, make_recorder: RecorderFactory, version_id: int, spool_dir: Path
) -> None:
    crashed = Spool(str(spool_dir), 1 << 20)
    crashed.append([make_record(version_id, n) for n in range(2)])
    [path] = spool_dir.glob("*.spool")
    with open(path, "ab") as out:
        out.write(b'{"usage_id": "')  # the process died mid-write
    crashed.close()

    metrics = recorder_rows()
    await make_recorder()
    await eventually(lambda: metrics[("replayed",)] == 2, 5.0, "the replay")
    assert metrics.delta() == {("replayed",): 2, ("dropped",): 1}
    assert await usage_count(db) == 2


async def test_close_gives_up_after_its_timeout_and_spools_the_rest(
    make_recorder: RecorderFactory,
    version_id: int,
    relayed_pool: asyncpg.Pool,
    pg_relay: TcpCut,
) -> None:
    recorder = await make_recorder(pool=relayed_pool, write_timeout_s=30)
    pg_relay.black_hole()
    metrics = recorder_rows()
    recorder.record(make_record(version_id))
    await asyncio.sleep(0.2)  # the writer is now stuck on the hung server
    await recorder.close(timeout=0.3)
    assert metrics.delta() == {("spilled",): 1}
    assert recorder._spool.pending


async def test_a_full_queue_spills_straight_to_the_spool(
    pool: asyncpg.Pool, spool_dir: Path, version_id: int
) -> None:
    spool = Spool(str(spool_dir), 1 << 20)
    recorder = Recorder(pool, spool, max_queue=3)  # not started: nothing drains the queue
    metrics = recorder_rows()
    for n in range(5):
        recorder.record(make_record(version_id, n))
    assert recorder.queue_depth == 3
    assert metrics.delta() == {("spilled",): 2}
    assert spool.pending
    await recorder.close(timeout=1.0)
    spool.close()


async def test_prompt_content_beyond_the_byte_budget_is_shed_and_the_rows_kept(
    pool: asyncpg.Pool, spool_dir: Path, version_id: int, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(str(spool_dir), 1 << 20)
    recorder = Recorder(pool, spool, max_prompt_bytes=250)  # not started: the queue holds
    records = [
        make_record(version_id, n, prompt_body=b"b" * 100, prompt_system=b"s" * 10)
        for n in range(3)
    ]
    for record in records:
        recorder.record(record)
    assert recorder.queue_depth == 3
    assert [r.prompt_body is not None for r in records] == [True, True, False]
    assert records[2].prompt_system is None
    assert "kept without content" in caplog.text
    await recorder.close(timeout=1.0)
    spool.close()


async def test_taking_a_batch_frees_its_share_of_the_prompt_budget(
    make_recorder: RecorderFactory, version_id: int
) -> None:
    recorder = await make_recorder(max_prompt_bytes=150)
    first = make_record(version_id, 0, prompt_body=b"b" * 100)
    recorder.record(first)
    await eventually(lambda: recorder.queue_depth == 0, 5.0, "the writer to take the record")
    later = make_record(version_id, 1, prompt_body=b"b" * 100)
    recorder.record(later)
    assert later.prompt_body is not None


async def test_record_never_raises(
    pool: asyncpg.Pool, spool_dir: Path, version_id: int, caplog: pytest.LogCaptureFixture
) -> None:
    class BrokenSpool(Spool):
        def append(self, records: Sequence[RequestRecord]) -> int:
            raise RuntimeError("disk on fire")

    spool = BrokenSpool(str(spool_dir), 1 << 20)
    recorder = Recorder(pool, spool, max_queue=0)
    recorder.record(make_record(version_id))
    assert "failed to record request" in caplog.text
    spool.close()


async def test_the_writer_survives_an_unexpected_error(
    db: asyncpg.Connection,
    make_recorder: RecorderFactory,
    version_id: int,
    spool_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    class FlakySpool(Spool):
        failed = False

        def replay_batches(self, batch_size: int) -> Any:
            if not self.failed:
                self.failed = True
                raise RuntimeError("bug")
            return super().replay_batches(batch_size)

    spool = FlakySpool(str(spool_dir), 1 << 20)
    spool.append([make_record(version_id, 0)])
    recorder = await make_recorder(spool=spool)
    recorder.record(make_record(version_id, 1))
    await eventually(lambda: _equals(usage_count(db), 2), 5.0, "both rows")
    assert spool.failed
    assert "recorder writer failed unexpectedly" in caplog.text


async def test_records_after_close_go_to_the_spool(
    make_recorder: RecorderFactory, version_id: int
) -> None:
    recorder = await make_recorder()
    await recorder.close(timeout=1.0)
    metrics = recorder_rows()
    recorder.record(make_record(version_id))
    assert metrics.delta() == {("spilled",): 1}


async def test_an_evidence_writer_that_fails_to_prepare_loses_no_rows(
    db: asyncpg.Connection,
    make_recorder: RecorderFactory,
    version_id: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = await make_recorder(batch_size=3)
    recorder.evidence = _Watched(batch_evidence("postgres"), fail_in="prepare")
    records = [make_record(version_id, n, prompt_body=b"{}") for n in range(6)]
    for rec in records:
        recorder.record(rec)
    await eventually(lambda: _count_is(db, 6), 3.0, "the rows")
    rows = await db.fetch("SELECT usage_id, request_body_sha256, body_blob_sha256 "
                          "FROM model_experiment_request")
    assert {tuple(row) for row in rows} == {
        (r.usage_id, r.request_body_sha256, None) for r in records
    }
    assert recorder.healthy
    assert "prompt evidence failed for a batch of 3 records" in caplog.text


async def test_an_evidence_writer_that_fails_inside_the_transaction_loses_no_rows(
    db: asyncpg.Connection,
    make_recorder: RecorderFactory,
    version_id: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = await make_recorder(batch_size=3)
    recorder.evidence = _Watched(batch_evidence("postgres"), fail_in="store")
    for n in range(3):
        recorder.record(make_record(version_id, n, prompt_body=b"{}"))
    await eventually(lambda: _count_is(db, 3), 3.0, "the rows")
    assert await db.fetchval(
        "SELECT count(*) FROM model_experiment_request WHERE body_blob_sha256 IS NULL") == 3
    assert "prompt evidence failed for a batch of 3 records" in caplog.text


async def test_the_evidence_writer_gets_the_prompt_content_of_the_batch(
    make_recorder: RecorderFactory, version_id: int
) -> None:
    recorder = await make_recorder()
    evidence = _Watched(batch_evidence("off"))
    recorder.evidence = evidence
    recorder.record(make_record(version_id, prompt_body=b'{"messages": []}'))
    await eventually(lambda: evidence.contents == [b'{"messages": []}'], 3.0, "the batch")


async def test_write_failures_are_logged_without_row_contents(
    make_recorder: RecorderFactory,
    version_id: int,
    relayed_pool: asyncpg.Pool,
    pg_relay: TcpCut,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    recorder = await make_recorder(pool=relayed_pool, write_timeout_s=1.0)
    pg_relay.cut()
    recorder.record(make_record(version_id, user_id="user-secret", subject_value="10.1.2.3"))
    await eventually(lambda: not recorder.healthy, 3.0, "the failure")
    assert "writing request records failed" in caplog.text
    assert "user-secret" not in caplog.text
    assert "10.1.2.3" not in caplog.text
