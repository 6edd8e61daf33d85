"""Turn the runs of a benchmark into medians, ratios, target checks and a Markdown table.

Pure functions over plain dicts (the JSON file holds exactly these), so the
table can be regenerated from a saved JSON: ``python -m bench.report FILE.json``.
"""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson

__all__ = ["aggregate", "evaluate_targets", "markdown", "median"]

Row = dict[str, Any]

_METRICS = {  # summary field -> path in a run
    "throughput_rps": ("throughput_rps",),
    "p50_ms": ("latency_ms", "p50"),
    "p90_ms": ("latency_ms", "p90"),
    "p99_ms": ("latency_ms", "p99"),
    "ttft_p50_ms": ("ttft_ms", "p50"),
    "ttft_p99_ms": ("ttft_ms", "p99"),
    "gap_p50_ms": ("gap_ms", "p50"),
    "gap_p99_ms": ("gap_ms", "p99"),
    "gap_mean_ms": ("gap_ms", "mean"),
    "cpu_us_per_request": ("cpu_us_per_request",),
    "core_other_percent": ("core_other_percent",),
    "postgres_us_per_row": ("postgres_us_per_row",),
}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return None if math.isnan(value) else float(value)


def median(values: Iterable[Any]) -> float | None:
    """Median of the numbers among ``values`` (None and NaN are skipped)."""
    numbers = [n for n in (_number(v) for v in values) if n is not None]
    return statistics.median(numbers) if numbers else None


def _dig(run: Row, path: Sequence[str]) -> Any:
    value: Any = run
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def aggregate(runs: Sequence[Row]) -> list[Row]:
    """One row per (group, combo, target): medians over repeats, sums and maxima."""
    order: list[tuple[str, str, str]] = []
    buckets: dict[tuple[str, str, str], list[Row]] = {}
    for run in runs:
        key = (run["group"], run["combo"], run["target"])
        if key not in buckets:
            order.append(key)
            buckets[key] = []
        buckets[key].append(run)
    rows = []
    for key in order:
        group_runs = buckets[key]
        first = group_runs[0]
        row: Row = {"group": key[0], "combo": key[1], "target": key[2],
                    "stream": first["stream"], "body_bytes": first["body_bytes"],
                    "concurrency": first["concurrency"], "repeats": len(group_runs)}
        for name, path in _METRICS.items():
            row[name] = median(_dig(r, path) for r in group_runs)
        peaks = [r["peak_rss_mb"] for r in group_runs if r.get("peak_rss_mb") is not None]
        row["peak_rss_mb"] = max(peaks) if peaks else None
        row["rss_after_each_run_mb"] = [r.get("rss_mb") for r in group_runs]
        row["requests"] = sum(r["total_requests"] for r in group_runs)
        row["errors"] = sum(r["errors"] for r in group_runs)
        expected = [r["rows_expected"] for r in group_runs if r.get("rows_expected") is not None]
        written = [r["rows_written"] for r in group_runs if r.get("rows_written") is not None]
        row["rows_expected"] = sum(expected) if expected else None
        row["rows_written"] = sum(written) if written else None
        rows.append(row)
    _add_ratios(rows)
    return rows


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _minus(a: float | None, b: float | None, scale: float = 1.0) -> float | None:
    return None if a is None or b is None else (a - b) * scale


def _add_ratios(rows: list[Row]) -> None:
    index = {(r["group"], r["combo"], r["target"]): r for r in rows}
    for row in rows:
        bare = index.get((row["group"], row["combo"], "bare"))
        direct = index.get((row["group"], row["combo"], "direct"))
        b = bare or {}
        d = direct or {}
        row["x_bare_cpu"] = _ratio(row["cpu_us_per_request"], b.get("cpu_us_per_request"))
        row["x_bare_rps"] = _ratio(row["throughput_rps"], b.get("throughput_rps"))
        row["x_direct_rps"] = _ratio(row["throughput_rps"], d.get("throughput_rps"))
        row["added_p50_vs_bare_us"] = _minus(row["p50_ms"], b.get("p50_ms"), 1000)
        row["added_p50_vs_direct_us"] = _minus(row["p50_ms"], d.get("p50_ms"), 1000)
        row["added_p99_vs_direct_us"] = _minus(row["p99_ms"], d.get("p99_ms"), 1000)
        row["x_bare_ttft"] = _ratio(row["ttft_p50_ms"], b.get("ttft_p50_ms"))
        row["added_gap_p50_vs_bare_us"] = _minus(row["gap_p50_ms"], b.get("gap_p50_ms"), 1000)
        row["added_gap_mean_vs_bare_us"] = _minus(row["gap_mean_ms"], b.get("gap_mean_ms"), 1000)


# ------------------------------------------------------------------ targets of issue 6


def _find(rows: Sequence[Row], group: str, target: str, **match: Any) -> list[Row]:
    return [r for r in rows if r["group"] == group and r["target"] == target
            and all(r[k] == v for k, v in match.items())]


def _check(name: str, measured: float | None, limit: float, unit: str,
           at_most: bool = True, where: str = "") -> Row:
    if measured is None:
        verdict = "n/a"
    else:
        verdict = "PASS" if (measured <= limit if at_most else measured >= limit) else "FAIL"
    return {"target": name, "where": where, "measured": measured,
            "limit": f"{'<=' if at_most else '>='} {limit:g}{unit}", "unit": unit,
            "verdict": verdict}


def _worst(rows: Sequence[Row], field: str) -> tuple[float | None, str]:
    scored = [(r[field], r["combo"]) for r in rows if r.get(field) is not None]
    if not scored:
        return None, ""
    value, combo = max(scored)
    return value, f"worst: {combo}"


def _growth(rows: Sequence[Row], big: Row) -> float | None:
    """CPU per request of ``big`` over the same target's 1 KB run at the same concurrency."""
    small = _find(rows, big["group"], big["target"], stream=big["stream"], body_bytes=1024,
                  concurrency=big["concurrency"])
    return _ratio(big["cpu_us_per_request"], small[0]["cpu_us_per_request"]) if small else None


def _check_worst(name: str, rows: Sequence[Row], field: str, limit: float, unit: str) -> Row:
    value, where = _worst(rows, field)
    return _check(name, value, limit, unit, where=where)


def evaluate_targets(rows: Sequence[Row]) -> list[Row]:
    """Issue 6's targets, each checked on the rows that measure it ("n/a" if not run)."""
    checks: list[Row] = []
    fast_pass = _find(rows, "fast", "passthrough")
    fast_exp = _find(rows, "fast", "experiment")
    checks.append(_check_worst("1. passthrough CPU/request vs bare", fast_pass, "x_bare_cpu",
                               1.15, "x"))
    c1 = [r for r in fast_pass if r["concurrency"] == 1]
    checks.append(_check_worst("1. passthrough added p50 vs bare, c1", c1,
                               "added_p50_vs_bare_us", 100, " us"))
    checks.append(_check_worst("2. experiment CPU/request vs bare, non-streaming",
                               [r for r in fast_exp if not r["stream"]], "x_bare_cpu", 1.5, "x"))
    checks.append(_check_worst("2. experiment CPU/request vs bare, streaming",
                               [r for r in fast_exp if r["stream"]], "x_bare_cpu", 1.3, "x"))
    c16 = _find(rows, "fast", "experiment", stream=False, body_bytes=1024, concurrency=16)
    checks.append(_check("2. experiment throughput vs bare, json-1KB-c16",
                         c16[0]["x_bare_rps"] if c16 else None, 0.65, "x", at_most=False))
    c1e = _find(rows, "fast", "experiment", stream=False, body_bytes=1024, concurrency=1)
    checks.append(_check("2. experiment added p50 vs direct, json-1KB-c1",
                         c1e[0]["added_p50_vs_direct_us"] if c1e else None, 1000, " us"))
    checks.append(_check("2. experiment added p99 vs direct, json-1KB-c1",
                         c1e[0]["added_p99_vs_direct_us"] if c1e else None, 3000, " us"))
    for target in ("passthrough", "experiment"):
        paced = _find(rows, "paced", target)
        checks.append(_check_worst(f"3. paced TTFT vs bare ({target})", paced, "x_bare_ttft",
                                   1.05, "x"))
        checks.append(_check_worst(f"3. paced inter-chunk gap p50 vs bare ({target})", paced,
                                   "added_gap_p50_vs_bare_us", 100, " us"))
    worst_growth: tuple[float | None, str] = (None, "")
    for big in [r for r in fast_exp if r["body_bytes"] > 1024]:
        value = _growth(rows, big)
        if value is not None and (worst_growth[0] is None or value > worst_growth[0]):
            # The bare proxy's own growth, same combos: the cost of moving the bytes.
            bare = _find(rows, "fast", "bare", combo=big["combo"])
            bare_growth = _growth(rows, bare[0]) if bare else None
            context = "" if bare_growth is None else f"; bare proxy: {bare_growth:.2f}x"
            worst_growth = (value, f"worst: {big['combo']}{context}")
    checks.append(_check("4. experiment CPU/request 200KB vs 1KB", worst_growth[0], 2.0, "x",
                         where=worst_growth[1]))
    checks.extend(_litellm_checks(rows))
    checks.extend(_memory_checks(rows))
    served = [r for r in rows if r["rows_expected"] is not None]
    lost = sum(r["rows_expected"] - (r["rows_written"] or 0) for r in served) if served else None
    checks.append(_check("7. experiment requests without their row", lost, 0, ""))
    errors = sum(r["errors"] for r in rows if r["target"] != "litellm")
    checks.append(_check("7. errors (abgate, bare, direct)", errors, 0, ""))
    return checks


def _litellm_checks(rows: Sequence[Row]) -> list[Row]:
    checks = []
    best: float | None = None
    for ours in _find(rows, "fast", "experiment", stream=False, body_bytes=1024):
        if ours["concurrency"] < 16:
            continue  # throughput per core is measured where the core is saturated
        theirs = _find(rows, "fast", "litellm", combo=ours["combo"])
        value = _ratio(ours["throughput_rps"], theirs[0]["throughput_rps"]) if theirs else None
        if value is not None:
            best = value if best is None else min(best, value)
    checks.append(_check("5. experiment throughput per core vs LiteLLM (json-1KB, c>=16)",
                         best, 5, "x", at_most=False))
    ours_c1 = _find(rows, "fast", "experiment", stream=False, body_bytes=1024, concurrency=1)
    theirs_c1 = _find(rows, "fast", "litellm", stream=False, body_bytes=1024, concurrency=1)
    share = (_ratio(ours_c1[0]["added_p50_vs_direct_us"],
                    theirs_c1[0]["added_p50_vs_direct_us"])
             if ours_c1 and theirs_c1 else None)
    checks.append(_check("5. experiment added p50 / LiteLLM's, json-1KB-c1", share, 0.2, "x"))
    return checks


def _memory_checks(rows: Sequence[Row]) -> list[Row]:
    memory = _find(rows, "memory", "experiment")
    peak = memory[0]["peak_rss_mb"] if memory else None
    growth = None
    if memory:
        after = [v for v in memory[0]["rss_after_each_run_mb"] if v is not None]
        # The first run fills pools and the allocator's arenas; growth is what
        # the later runs still add (the table shows all values).
        if len(after) >= 3:
            growth = after[-1] - after[1]
        elif len(after) == 2:
            growth = after[1] - after[0]
    return [_check("6. peak RSS, 1,000 open streams, one worker", peak, 150, " MB"),
            _check("6. RSS growth over the runs after the first", growth, 5, " MB")]


# ------------------------------------------------------------------ Markdown


def _fmt(value: Any, digits: int = 1) -> str:
    number = _number(value)
    if number is None:
        return "-"
    if abs(number) >= 1000:
        return f"{number:,.0f}"
    return f"{number:.{digits}f}"


_COLUMNS: list[tuple[str, str, int]] = [  # header, field, digits
    ("req/s", "throughput_rps", 0),
    ("p50 ms", "p50_ms", 2),
    ("p90 ms", "p90_ms", 2),
    ("p99 ms", "p99_ms", 2),
    ("TTFT p50 ms", "ttft_p50_ms", 2),
    ("gap p50/p99 ms", "", 2),
    ("CPU µs/req", "cpu_us_per_request", 0),
    ("x bare CPU", "x_bare_cpu", 2),
    ("x bare req/s", "x_bare_rps", 2),
    ("x direct req/s", "x_direct_rps", 2),
    ("+p50 vs bare µs", "added_p50_vs_bare_us", 0),
    ("+p50/+p99 vs direct µs", "", 0),
    ("peak RSS MB", "peak_rss_mb", 0),
    ("rows/served", "", 0),
    ("Postgres µs/row", "postgres_us_per_row", 0),
    ("errors", "errors", 0),
    ("core-0 noise %", "core_other_percent", 0),
]


def _cell(row: Row, header: str, field: str, digits: int) -> str:
    if header.startswith("gap"):
        if row["gap_p50_ms"] is None:
            return "-"
        return f"{_fmt(row['gap_p50_ms'], 2)} / {_fmt(row['gap_p99_ms'], 2)}"
    if header.startswith("+p50/+p99"):
        if row["added_p50_vs_direct_us"] is None:
            return "-"
        p50, p99 = row["added_p50_vs_direct_us"], row["added_p99_vs_direct_us"]
        return f"{_fmt(p50, 0)} / {_fmt(p99, 0)}"
    if header == "rows/served":
        if row["rows_expected"] is None:
            return "-"
        return f"{row['rows_written']}/{row['rows_expected']}"
    return _fmt(row[field], digits)


def markdown(report: Row) -> str:
    """The whole report as Markdown: machine, per-group tables, target checks, problems."""
    machine = report["machine"]
    lines = [f"# abgate benchmark {report['started_at']} ({report['mode']})", ""]
    lines += [f"- {k}: {v}" for k, v in machine.items()]
    lines.append(f"- placement: {report['placement']}")
    if report.get("seeded_by"):
        lines.append(f"- experiments seeded via: {report['seeded_by']}")
    idle = report.get("idle_cpu_percent") or {}
    if idle:
        lines.append("- idle CPU of the servers (% of a core): "
                     + ", ".join(f"{name} {value:.1f}" for name, value in idle.items()))
    lines.append("")
    for unavailable, reason in report.get("unavailable", {}).items():
        lines.append(f"- **{unavailable} unavailable**: {reason}")
    rows = report["rows"]
    for group in report["groups"]:
        group_rows = [r for r in rows if r["group"] == group["name"]]
        if not group_rows:
            continue
        lines += ["", f"## {group['name']}: {group['description']}", "",
                  f"{group['duration_s']:g} s per run (+{group['warmup_s']:g} s warm-up), "
                  f"median of {group['repeats']} run(s).", ""]
        headers = ["scenario", "target", *(h for h, _, _ in _COLUMNS)]
        lines.append("| " + " | ".join(headers) + " |")
        lines.append("|" + "---|" * len(headers))
        for row in group_rows:
            cells = [row["combo"], row["target"],
                     *(_cell(row, h, f, d) for h, f, d in _COLUMNS)]
            lines.append("| " + " | ".join(cells) + " |")
        memory = [r for r in group_rows if len(r["rss_after_each_run_mb"]) > 1]
        if group["name"] == "memory":
            for row in memory:
                after = ", ".join(_fmt(v, 1) for v in row["rss_after_each_run_mb"])
                lines.append(f"\n{row['target']}: RSS after each run (MB): {after}")
    lines += ["", "## Targets (issue 6)", "", "| target | measured | limit | verdict |",
              "|---|---|---|---|"]
    for check in report["targets"]:
        measured = _fmt(check["measured"], 2)
        unit = check["unit"] if check["measured"] is not None else ""
        where = f" ({check['where']})" if check["where"] else ""
        lines.append(f"| {check['target']} | {measured}{unit}{where} | {check['limit']} | "
                     f"{check['verdict']} |")
    problems = report.get("problems", [])
    lines += ["", "## Problems", ""]
    lines += [f"- {p}" for p in problems] if problems else ["none"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m bench.report RESULT.json", file=sys.stderr)
        return 2
    report = orjson.loads(Path(args[0]).read_bytes())
    sys.stdout.write(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
