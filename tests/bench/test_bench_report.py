"""Medians, ratios, target verdicts and the Markdown table of a benchmark report."""

from __future__ import annotations

from typing import Any

from bench.report import aggregate, evaluate_targets, markdown, median


def _run(target: str, repeat: int = 0, *, rps: float = 100.0, p50: float = 1.0,
         cpu: float | None = 100.0, combo: str = "json-1KB-c16", group: str = "fast",
         concurrency: int = 16, stream: bool = False, body: int = 1024, errors: int = 0,
         rows: tuple[int, int] | None = None, rss: float | None = 50.0) -> dict[str, Any]:
    return {
        "group": group, "combo": combo, "target": target, "repeat": repeat,
        "stream": stream, "body_bytes": body, "concurrency": concurrency,
        "throughput_rps": rps, "latency_ms": {"p50": p50, "p90": p50 * 2, "p99": p50 * 3},
        "ttft_ms": None, "gap_ms": None, "cpu_us_per_request": cpu, "core_other_percent": 1.0,
        "peak_rss_mb": rss, "rss_mb": rss, "total_requests": 10, "errors": errors,
        "error_samples": [], "rows_expected": rows[0] if rows else None,
        "rows_written": rows[1] if rows else None,
    }


def _report(runs: list[dict[str, Any]]) -> dict[str, Any]:
    rows = aggregate(runs)
    return {
        "started_at": "2026-01-01T00:00:00+00:00", "mode": "quick",
        "machine": {"nproc": 2, "cpu_model": "Test CPU", "python": "3.11.7"},
        "placement": "core 0 / core 1", "unavailable": {"litellm": "install failed"},
        "groups": [{"name": "fast", "description": "fast mock", "duration_s": 3,
                    "warmup_s": 0.5, "repeats": 3}],
        "rows": rows, "targets": evaluate_targets(rows), "problems": [],
    }


def test_median_skips_missing_values() -> None:
    assert median([3, None, 1, float("nan"), 2]) == 2
    assert median([None]) is None


def test_repeats_are_summarized_by_their_median() -> None:
    rows = aggregate([_run("bare", i, rps=r, p50=p) for i, (r, p) in
                      enumerate([(90, 1.0), (110, 3.0), (100, 2.0)])])
    assert len(rows) == 1
    assert rows[0]["throughput_rps"] == 100 and rows[0]["p50_ms"] == 2.0
    assert rows[0]["repeats"] == 3 and rows[0]["requests"] == 30


def test_ratios_are_taken_against_bare_and_direct_of_the_same_combo() -> None:
    rows = aggregate([
        _run("direct", rps=400, p50=0.5, cpu=None),
        _run("bare", rps=200, p50=1.0, cpu=100),
        _run("experiment", rps=150, p50=1.3, cpu=130),
        _run("bare", rps=1, p50=50, cpu=1, combo="json-1KB-c1", concurrency=1),
    ])
    experiment = next(r for r in rows if r["target"] == "experiment")
    assert experiment["x_bare_cpu"] == 1.3
    assert experiment["x_bare_rps"] == 0.75
    assert experiment["x_direct_rps"] == 0.375
    assert round(experiment["added_p50_vs_bare_us"]) == 300
    assert round(experiment["added_p50_vs_direct_us"]) == 800


def test_a_target_that_was_not_run_is_reported_not_applicable() -> None:
    checks = {c["target"]: c for c in evaluate_targets(aggregate([_run("bare")]))}
    assert checks["1. passthrough CPU/request vs bare"]["verdict"] == "n/a"


def test_targets_pass_and_fail_on_their_limits() -> None:
    checks = {c["target"]: c for c in evaluate_targets(aggregate([
        _run("bare", cpu=100), _run("passthrough", cpu=110), _run("experiment", cpu=160),
    ]))}
    assert checks["1. passthrough CPU/request vs bare"]["verdict"] == "PASS"
    failed = checks["2. experiment CPU/request vs bare, non-streaming"]
    assert failed["verdict"] == "FAIL" and failed["measured"] == 1.6
    assert failed["where"] == "worst: json-1KB-c16"


def test_a_missing_row_fails_the_nothing_lost_target() -> None:
    checks = {c["target"]: c for c in evaluate_targets(aggregate([
        _run("experiment", 0, rows=(10, 10)), _run("experiment", 1, rows=(10, 9)),
    ]))}
    assert checks["7. experiment requests without their row"]["measured"] == 1
    assert checks["7. experiment requests without their row"]["verdict"] == "FAIL"


def test_memory_growth_is_what_the_runs_after_the_first_add() -> None:
    checks = {c["target"]: c for c in evaluate_targets(aggregate([
        _run("experiment", i, group="memory", combo="stream-1KB-c1000", rss=rss)
        for i, rss in enumerate([100.0, 120.0, 128.0])
    ]))}
    growth = checks["6. RSS growth over the runs after the first"]
    assert growth["measured"] == 8 and growth["verdict"] == "FAIL"
    assert checks["6. peak RSS, 1,000 open streams, one worker"]["verdict"] == "PASS"


def test_markdown_has_the_machine_a_row_per_target_and_the_verdicts() -> None:
    text = markdown(_report([_run("direct", cpu=None), _run("bare"), _run("experiment",
                                                                        rows=(10, 10))]))
    assert "- cpu_model: Test CPU" in text
    assert "**litellm unavailable**: install failed" in text
    table = [line for line in text.splitlines() if line.startswith("| json-1KB-c16")]
    assert [line.split(" | ")[1] for line in table] == ["direct", "bare", "experiment"]
    assert "| 10/10 |" in table[2]
    assert "| 7. experiment requests without their row | 0.00 | <= 0 | PASS |" in text


def test_body_growth_names_the_bare_proxys_own_growth_beside_the_experiments() -> None:
    checks = {c["target"]: c for c in evaluate_targets(aggregate([
        _run("bare", cpu=100), _run("experiment", cpu=150),
        _run("bare", cpu=250, combo="json-200KB-c16", body=200 * 1024),
        _run("experiment", cpu=330, combo="json-200KB-c16", body=200 * 1024),
    ]))}
    growth = checks["4. experiment CPU/request 200KB vs 1KB"]
    assert growth["measured"] == 2.2 and growth["verdict"] == "FAIL"
    assert growth["where"] == "worst: json-200KB-c16; bare proxy: 2.50x"


def test_body_growth_without_a_bare_run_names_only_the_worst_combo() -> None:
    checks = {c["target"]: c for c in evaluate_targets(aggregate([
        _run("experiment", cpu=150),
        _run("experiment", cpu=270, combo="json-200KB-c16", body=200 * 1024),
    ]))}
    growth = checks["4. experiment CPU/request 200KB vs 1KB"]
    assert growth["measured"] == 1.8 and growth["verdict"] == "PASS"
    assert growth["where"] == "worst: json-200KB-c16"
