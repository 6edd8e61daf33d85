"""Spool: durable appends, in-order crash-safe replay, capacity, and file ownership."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from proxy.records import RequestRecord
from proxy.spool import Spool


def make_records(count: int, start: int = 0) -> list[RequestRecord]:
    return [
        RequestRecord(
            created_at=datetime(2030, 1, 2, 3, 4, 5, i, tzinfo=UTC),
            request_kind="chat_completions",
            upstream_model=f"model-{start + i}",
            status_code=200,
            variant_version_id=1,
            prompt_body=b"not spooled",
        )
        for i in range(count)
    ]


def replay_all(spool: Spool, batch_size: int = 1000) -> list[RequestRecord]:
    out: list[RequestRecord] = []
    for batch, cursor in spool.replay_batches(batch_size):
        out.extend(batch)
        spool.commit(cursor)
    return out


def names(records: list[RequestRecord]) -> list[str]:
    return [r.upstream_model for r in records]


def spool_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.spool"))


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


@pytest.fixture
def spool(spool_dir: Path) -> Iterator[Spool]:
    spool = Spool(str(spool_dir), max_bytes=1 << 20)
    yield spool
    spool.close()


def test_replay_returns_appended_records_in_order(spool: Spool) -> None:
    records = make_records(5)
    assert spool.append(records[:2]) == 2
    assert spool.append(records[2:]) == 3
    assert spool.pending
    replayed = replay_all(spool)
    assert [r.usage_id for r in replayed] == [r.usage_id for r in records]
    assert replayed[0].created_at == records[0].created_at
    assert replayed[0].to_json() == records[0].to_json()
    assert replayed[0].prompt_body is None  # prompt content is not spooled


def test_fully_replayed_files_are_deleted(spool: Spool, spool_dir: Path) -> None:
    spool.append(make_records(3))
    replay_all(spool)
    assert not spool.pending
    assert spool.size_bytes == 0
    assert list(spool_dir.iterdir()) == []


def test_replay_batches_have_the_requested_size(spool: Spool) -> None:
    spool.append(make_records(7))
    sizes = []
    for batch, cursor in spool.replay_batches(3):
        sizes.append(len(batch))
        spool.commit(cursor)
    assert sizes == [3, 3, 1]


def test_append_accepts_only_what_fits_under_max_bytes(spool_dir: Path) -> None:
    probe = Spool(str(spool_dir / "probe"), max_bytes=1 << 20)
    probe.append(make_records(1))
    line_size = probe.size_bytes
    probe.close()

    spool = Spool(str(spool_dir), max_bytes=line_size * 3 + line_size // 2)
    try:
        assert spool.append(make_records(2)) == 2
        assert spool.append(make_records(2, start=2)) == 1
        assert spool.append(make_records(1, start=4)) == 0
        assert names(replay_all(spool)) == ["model-0", "model-1", "model-2"]
        assert spool.append(make_records(1, start=5)) == 1  # replay freed the space
    finally:
        spool.close()


def test_a_torn_trailing_line_is_skipped_and_counted(spool: Spool, spool_dir: Path) -> None:
    spool.append(make_records(2))
    [path] = spool_files(spool_dir)
    with open(path, "ab") as out:  # the process died in the middle of a write
        out.write(b'{"created_at": "2030-01-0')
    spool.close()

    after_crash = Spool(str(spool_dir), max_bytes=1 << 20)
    try:
        assert names(replay_all(after_crash)) == ["model-0", "model-1"]
        assert after_crash.corrupt_lines == 1
        assert not after_crash.pending
        assert spool_files(spool_dir) == []
    finally:
        after_crash.close()


def test_an_unreadable_line_is_skipped_and_counted(spool: Spool, spool_dir: Path) -> None:
    spool.append(make_records(1))
    [path] = spool_files(spool_dir)
    with open(path, "ab") as out:
        out.write(b'{"not": "a record"}\n')
        out.write(b"\xff\xfe garbage\n")
    spool.close()
    reopened = Spool(str(spool_dir), max_bytes=1 << 20)
    try:
        reopened.append(make_records(1, start=1))
        assert names(replay_all(reopened)) == ["model-0", "model-1"]
        assert reopened.corrupt_lines == 2
    finally:
        reopened.close()


def test_a_new_process_replays_an_existing_spool(spool_dir: Path) -> None:
    first = Spool(str(spool_dir), max_bytes=1 << 20)
    first.append(make_records(3))
    first.close()  # the process stops; its files stay

    second = Spool(str(spool_dir), max_bytes=1 << 20)
    try:
        assert second.pending
        assert names(replay_all(second)) == ["model-0", "model-1", "model-2"]
    finally:
        second.close()


def test_a_crash_mid_replay_resends_at_most_the_uncommitted_batch(spool_dir: Path) -> None:
    first = Spool(str(spool_dir), max_bytes=1 << 20)
    first.append(make_records(6))
    batches = first.replay_batches(2)
    _, cursor = next(batches)
    first.commit(cursor)
    next(batches)  # delivered, then the process dies before committing
    first.close()

    second = Spool(str(spool_dir), max_bytes=1 << 20)
    try:
        assert names(replay_all(second)) == ["model-2", "model-3", "model-4", "model-5"]
    finally:
        second.close()


def test_records_appended_during_replay_are_replayed_next_time(spool: Spool) -> None:
    spool.append(make_records(2))
    seen = []
    for batch, cursor in spool.replay_batches(1):
        seen.extend(names(batch))
        spool.append(make_records(1, start=10 + len(seen)))
        spool.commit(cursor)
    assert seen == ["model-0", "model-1"]
    assert names(replay_all(spool)) == ["model-11", "model-12"]


def test_spools_of_live_processes_are_not_shared(spool_dir: Path) -> None:
    first = Spool(str(spool_dir), max_bytes=1 << 20)
    second = Spool(str(spool_dir), max_bytes=1 << 20)
    try:
        first.append(make_records(1))
        second.append(make_records(1, start=1))
        assert second.adopt_orphans() == 0  # first still owns its file
        assert names(replay_all(second)) == ["model-1"]
        assert names(replay_all(first)) == ["model-0"]
    finally:
        first.close()
        second.close()


def test_files_are_named_with_the_pid(spool: Spool, spool_dir: Path) -> None:
    spool.append(make_records(1))
    [path] = spool_files(spool_dir)
    assert f"-{os.getpid()}-" in path.name


def test_a_dead_process_files_are_adopted_in_order(spool_dir: Path) -> None:
    script = textwrap.dedent(
        f"""
        import os
        from datetime import UTC, datetime
        from proxy.records import RequestRecord
        from proxy.spool import Spool
        spool = Spool({str(spool_dir)!r}, max_bytes=1 << 20)
        spool.append([
            RequestRecord(datetime.now(UTC), "chat_completions", f"model-{{i}}", 200)
            for i in range(2)
        ])
        os._exit(0)  # no close(): like a crash
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=30)
    survivor = Spool(str(spool_dir), max_bytes=1 << 20)
    try:
        survivor.append(make_records(1, start=2))
        assert names(replay_all(survivor)) == ["model-0", "model-1", "model-2"]
    finally:
        survivor.close()


def test_leftover_temp_and_offset_files_are_cleaned_up(spool_dir: Path) -> None:
    spool_dir.mkdir()
    (spool_dir / ".tmp-00000000000000000001-1-000001.spool").write_bytes(b"")
    (spool_dir / "00000000000000000001-1-000002.spool.offset").write_text("10")
    spool = Spool(str(spool_dir), max_bytes=1 << 20)
    try:
        assert list(spool_dir.iterdir()) == []
        assert not spool.pending
    finally:
        spool.close()


def test_a_failed_write_is_undone(spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    spool.append(make_records(1))

    def disk_full(fd: int, data: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", disk_full)
    assert spool.append(make_records(1, start=1)) == 0
    monkeypatch.undo()
    assert names(replay_all(spool)) == ["model-0"]
