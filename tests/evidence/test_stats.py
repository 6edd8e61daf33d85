"""Stats math (chi-square, Newcombe, histograms) and the stats endpoint on a hand-built dataset."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from evidence_helpers import auth, body_for, experiment, record, write

from admin.stats import SRM_OK
from admin.stats_math import (
    bucket_of,
    bucket_value,
    chi2_sf,
    newcombe_difference,
    percentile,
    sample_ratio_mismatch,
    wilson_interval,
)

# -- math ------------------------------------------------------------------------------


@pytest.mark.parametrize(("x", "df", "p"), [
    (3.841458820694124, 1, 0.05),
    (10.827566170662733, 1, 0.001),
    (5.991464547107979, 2, 0.05),
    (11.070497693516351, 5, 0.05),
    (100.0, 3, 1.554159431389603e-21),
])
def test_chi2_survival_matches_published_critical_values(x: float, df: int, p: float) -> None:
    assert chi2_sf(x, df) == pytest.approx(p, rel=1e-9)


@pytest.mark.parametrize("x", [0.01, 0.5, 1.0, 3.0, 10.0, 40.0])
def test_chi2_survival_matches_closed_forms(x: float) -> None:
    assert chi2_sf(x, 1) == pytest.approx(math.erfc(math.sqrt(x / 2)), rel=1e-9)
    assert chi2_sf(x, 2) == pytest.approx(math.exp(-x / 2), rel=1e-9)


def test_chi2_survival_of_zero_is_one() -> None:
    assert chi2_sf(0.0, 4) == 1.0


def test_srm_passes_on_the_expected_split_and_fails_on_a_skewed_one() -> None:
    assert sample_ratio_mismatch([5000, 5000, 10000], [1, 1, 2]).ok
    skewed = sample_ratio_mismatch([5200, 4800, 10000], [1, 1, 2])
    assert not skewed.ok
    assert skewed.chi2 == pytest.approx(16.0)
    assert skewed.p_value == pytest.approx(math.exp(-8.0), rel=1e-9)


def test_srm_without_subjects_has_no_p_value_and_is_ok() -> None:
    srm = sample_ratio_mismatch([0, 0], [1, 1])
    assert (srm.ok, srm.p_value, srm.chi2) == (True, None, None)


def test_newcombe_matches_newcombes_worked_example() -> None:
    # Newcombe (1998), Statistics in Medicine 17:873, example (a): 56/70 - 48/80.
    difference = newcombe_difference(56, 70, 48, 80)
    assert difference is not None
    assert difference.difference == pytest.approx(0.2)
    assert (round(difference.low, 4), round(difference.high, 4)) == (0.0524, 0.3339)


def test_newcombe_interval_stays_within_bounds_at_extreme_rates() -> None:
    difference = newcombe_difference(0, 10, 10, 10)
    assert difference is not None and -1.0 <= difference.low < difference.high <= 1.0
    assert newcombe_difference(1, 0, 1, 10) is None


def test_wilson_interval_contains_the_rate() -> None:
    low, high = wilson_interval(81, 263)
    assert low < 81 / 263 < high
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)


def test_histogram_buckets_are_exact_below_16_ms_and_within_4_5_percent_above() -> None:
    assert [bucket_value(bucket_of(ms)) for ms in range(16)] == list(range(16))
    for ms in (16, 17, 100, 1234, 60_000, 3_600_000):
        # 4.4% of the bucket's width, plus rounding the centre to whole milliseconds
        assert abs(bucket_value(bucket_of(ms)) - ms) <= 0.045 * ms + 0.5


def test_percentile_is_nearest_rank() -> None:
    histogram = {bucket_of(ms): 1 for ms in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10)}
    assert percentile(histogram, 0.5) == 5
    assert percentile(histogram, 0.95) == 10
    assert percentile({}, 0.5) is None


async def test_sql_buckets_match_the_python_mirror(db: asyncpg.Connection) -> None:
    values = [*range(300), 1000, 1234, 99_999, 10**7, 10**9]
    rows = await db.fetch("SELECT ms, abgate_stats_bucket(ms) AS b FROM unnest($1::int[]) ms",
                          values)
    assert {r["ms"]: r["b"] for r in rows} == {ms: bucket_of(ms) for ms in values}


# -- the endpoint on a hand-built dataset ------------------------------------------------

HOUR = datetime(2030, 1, 1, 10, tzinfo=UTC)


async def _dataset(db: asyncpg.Connection, pool: asyncpg.Pool, spool_dir: Path) -> list[int]:
    """Variant A (v0): 4 requests, 1 error; variant B (v1): 2 requests, no error."""
    await db.execute("SELECT abgate_ensure_request_partition($1)", HOUR)
    setup = await experiment(db, weights=(1, 1))
    a, b = setup.version_ids
    at = HOUR + timedelta(minutes=5)

    def rec(version: int, subject: tuple[str, str], crid: str, latency: int, ttft: int,
            status: int = 200, **tokens: int) -> object:
        return record("chat_completions", body_for("chat_completions", "s", crid), version,
                      subject=subject, client_request_id=crid, created_at=at,
                      latency_ms=latency, ttft_ms=ttft, status_code=status,
                      has_error=status >= 400, **tokens)

    await write(pool, [
        rec(a, ("user", "u1"), "c1", 10, 2, input_tokens=100, output_tokens=10),
        rec(a, ("user", "u1"), "c2", 12, 3, input_tokens=100, output_tokens=10),
        rec(a, ("user", "u2"), "c3", 14, 4, status=500),
        rec(a, ("machine", "m1"), "c4", 8, 1, input_tokens=50, output_tokens=5),
        rec(b, ("user", "u3"), "c5", 6, 1, input_tokens=10, output_tokens=1),
        rec(b, ("ip", "10.0.0.1"), "c6", 4, 1),
    ], spool_dir)  # type: ignore[list-item]
    await db.execute(
        "INSERT INTO feedback (client_request_id, allocation_subject, subject_value, rating) "
        "VALUES ('c1', 'user', 'u1', 1), ('c2', 'user', 'u1', -1), ('c5', 'user', 'u3', 1), "
        "('c5', 'user', 'somebody-else', 1)")
    return [setup.variant_ids[0], setup.variant_ids[1], a, b]


async def _stats(admin: TestClient, experiment_id: str, query: str = "") -> dict:
    response = await admin.get(f"/api/experiments/{experiment_id}/stats{query}", headers=auth())
    assert response.status == 200, await response.text()
    return await response.json()  # type: ignore[no-any-return]


async def test_stats_of_a_hand_built_dataset(
    admin: TestClient, db: asyncpg.Connection, pool: asyncpg.Pool, spool_dir: Path
) -> None:
    variant_a, variant_b, version_a, _ = await _dataset(db, pool, spool_dir)
    experiment_id = str(await db.fetchval(
        "SELECT experiment_id FROM model_experiment_variant WHERE id = $1", variant_a))
    stats = await _stats(admin, experiment_id)
    version = next(v for v in stats["versions"] if v["variant_version_id"] == version_a)
    assert version["variant_id"] == variant_a and version["label"] == "v0"
    assert version["totals"] == {
        "requests": 4, "unique_subjects": 3, "unique_client_request_ids": 4,
        "errors": 1, "error_rate": 0.25,
        "latency_ms": {"p50": 10, "p95": 14}, "ttft_ms": {"p50": 2, "p95": 4},
        "input_tokens": 250, "output_tokens": 25, "market_cost_microdollars": 0,
        "feedback": {"up": 1, "down": 1, "thumbs_up_rate": 0.25},
    }
    assert version["by_subject_kind"]["machine"]["requests"] == 1
    assert version["by_subject_kind"]["user"]["unique_subjects"] == 2
    assert version["by_subject_kind"]["ip"]["requests"] == 0
    b = next(v for v in stats["variants"] if v["variant_id"] == variant_b)
    assert b["totals"]["feedback"] == {"up": 1, "down": 0, "thumbs_up_rate": 0.5}
    assert b["share"] == 0.5
    assert stats["srm"]["observed"] == [3, 2] and stats["srm"]["expected"] == [2.5, 2.5]
    assert stats["srm"]["ok"] is True
    [comparison] = stats["comparisons"]
    assert comparison["variant_id"] == variant_b
    assert comparison["error_rate"]["difference"] == pytest.approx(-0.25)
    low, high = comparison["error_rate"]["ci95"]
    assert low < -0.25 < high
    assert comparison["thumbs_up_rate"]["difference"] == pytest.approx(0.25)


async def test_a_window_outside_the_data_counts_nothing(
    admin: TestClient, db: asyncpg.Connection, pool: asyncpg.Pool, spool_dir: Path
) -> None:
    variant_a, *_ = await _dataset(db, pool, spool_dir)
    experiment_id = str(await db.fetchval(
        "SELECT experiment_id FROM model_experiment_variant WHERE id = $1", variant_a))
    stats = await _stats(admin, experiment_id, "?since=2030-01-01T11:00:00Z")
    assert sum(v["totals"]["requests"] for v in stats["versions"]) == 0
    assert stats["window"]["since"].startswith("2030-01-01T11:00:00")
    inside = await _stats(admin, experiment_id,
                          "?since=2030-01-01T10:30:00Z&until=2030-01-01T10:31:00Z")
    assert sum(v["totals"]["requests"] for v in inside["versions"]) == 6  # whole hour


async def test_a_sample_ratio_mismatch_fails_the_check_and_the_gauge(
    admin: TestClient, db: asyncpg.Connection, pool: asyncpg.Pool, spool_dir: Path
) -> None:
    setup = await experiment(db, weights=(1, 1))
    records = [record("responses", body_for("responses", None, "q"), setup.version_ids[0],
                      subject=("user", f"u{i}")) for i in range(60)]
    records += [record("responses", body_for("responses", None, "q"), setup.version_ids[1],
                       subject=("user", f"w{i}")) for i in range(20)]
    await write(pool, records, spool_dir, prompt_store="off")
    stats = await _stats(admin, str(setup.experiment_id))
    assert stats["srm"]["ok"] is False
    assert stats["srm"]["chi2"] == pytest.approx(20.0)
    assert SRM_OK.labels(str(setup.experiment_id))._value.get() == 0


@pytest.mark.parametrize("query", ["?since=yesterday", "?until=2030-01-01T00:00:00",
                                   "?since=2030-01-02T00:00:00Z&until=2030-01-01T00:00:00Z"])
async def test_bad_windows_are_400(admin: TestClient, db: asyncpg.Connection, query: str) -> None:
    setup = await experiment(db)
    response = await admin.get(f"/api/experiments/{setup.experiment_id}/stats{query}",
                               headers=auth())
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "BAD_REQUEST"


async def test_stats_of_an_unknown_experiment_is_404(admin: TestClient) -> None:
    response = await admin.get("/api/experiments/00000000-0000-0000-0000-000000000000/stats",
                               headers=auth())
    assert response.status == 404


_ROLLUPS = ("request_stats_hourly", "request_latency_hourly", "request_subject_seen",
            "request_client_request_seen")


async def _rollups(db: asyncpg.Connection) -> dict[str, list[tuple[object, ...]]]:
    return {t: sorted(map(tuple, await db.fetch(f"SELECT * FROM {t}")))  # noqa: S608
            for t in _ROLLUPS}


async def test_the_trigger_maintained_rollup_equals_a_rebuild(
    db: asyncpg.Connection, pool: asyncpg.Pool, spool_dir: Path
) -> None:
    await _dataset(db, pool, spool_dir)
    await db.execute("UPDATE feedback SET rating = -rating WHERE client_request_id = 'c5'")
    maintained = await _rollups(db)
    await db.execute("SELECT abgate_rebuild_stats_rollup()")
    assert await _rollups(db) == maintained


async def test_rollups_of_batches_spanning_hours_equal_a_rebuild(
    db: asyncpg.Connection, pool: asyncpg.Pool, spool_dir: Path
) -> None:
    await db.execute("SELECT abgate_ensure_request_partition($1)", HOUR)
    setup = await experiment(db, weights=(1, 1))
    a, b = setup.version_ids

    def rec(version: int, user: str, hours: int, latency: int, ttft: int | None) -> object:
        return record("chat_completions", body_for("chat_completions", "s", user), version,
                      subject=("user", user), created_at=HOUR + timedelta(hours=hours),
                      latency_ms=latency, ttft_ms=ttft, input_tokens=latency)

    # Two batches; the second lands on rollup rows the first created (hour 0 and
    # user u1 again), leaves an hour out for u1 (a multirange with a gap) and
    # brings latencies that share buckets with the first batch's.
    await write(pool, [rec(a, "u1", 0, 10, 2), rec(a, "u1", 2, 300, None),
                       rec(b, "u2", 0, 5000, 40), rec(a, "u3", 1, 11, 2)], spool_dir)  # type: ignore[list-item]
    await write(pool, [rec(a, "u1", 0, 10, 3), rec(a, "u1", 3, 301, None),
                       rec(b, "u2", 1, 70_000, None)], spool_dir)  # type: ignore[list-item]
    maintained = await _rollups(db)
    await db.execute("SELECT abgate_rebuild_stats_rollup()")
    assert await _rollups(db) == maintained
    hours = await db.fetchval(
        "SELECT hours::text FROM request_subject_seen WHERE subject_value = 'u1'")
    first = int(HOUR.timestamp()) // 3600
    assert hours == f"{{[{first},{first + 1}),[{first + 2},{first + 4})}}"
