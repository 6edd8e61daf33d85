"""The harness's small parts: /proc parsing, the scenario plan, LiteLLM's config, profiles."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from bench import placement, procstat
from bench.litellm_ref import config_text
from bench.processes import Children, pinned
from bench.profile_summary import function_of, parse_collapsed, render
from bench.run import main as run_main
from bench.scenarios import Combo, plan

STAT = "1234 (a (weird) name) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 75 0 0 20 0 3 0"
STATUS = "Name:\tpython\nVmPeak:\t  20000 kB\nVmHWM:\t   12345 kB\nVmRSS:\t   10000 kB\n"
SERVER_LIKE = "import time; print('hello', flush=True); time.sleep(30)"
PROC_STAT = ("cpu  10 0 10 100 0 0 0 0 0 0\n"
             "cpu0 1 2 3 1000 5 6 7 8 0 0\n"
             "cpu1 9 9 9 9 9 9 9 9 0 0\n")


def test_cpu_ticks_are_utime_plus_stime_even_with_parentheses_in_the_name() -> None:
    assert procstat.parse_stat_cpu_ticks(STAT) == 250 + 75


def test_status_values_are_read_in_kilobytes() -> None:
    assert procstat.parse_status_kb(STATUS, "VmHWM") == 12345
    with pytest.raises(KeyError):
        procstat.parse_status_kb(STATUS, "VmSwap")


def test_core_busy_ticks_leave_out_idle_and_iowait() -> None:
    assert procstat.parse_core_busy_ticks(PROC_STAT, 0) == 1 + 2 + 3 + 6 + 7 + 8
    with pytest.raises(KeyError):
        procstat.parse_core_busy_ticks(PROC_STAT, 7)


def test_this_process_is_sampled_from_proc() -> None:
    sample = procstat.sample(os.getpid())
    assert os.getpid() in procstat.descendants(os.getpid())
    assert sample.cpu_s > 0 and sample.peak_rss_mb >= sample.rss_mb > 0


def test_peak_rss_can_be_reset_so_each_run_reports_its_own_peak() -> None:
    ballast = bytearray(64 * 1024 * 1024)
    ballast[::4096] = b"x" * len(ballast[::4096])  # touch every page
    del ballast
    before = procstat.sample(os.getpid()).peak_rss_mb
    assert procstat.reset_peak_rss(os.getpid())
    assert procstat.sample(os.getpid()).peak_rss_mb < before - 32


def test_commands_are_pinned_to_a_core_and_optionally_reprioritized() -> None:
    assert pinned(1, ["cmd", "-x"]) == ["taskset", "-c", "1", "cmd", "-x"]
    assert pinned(0, ["cmd"], nice=-5) == ["nice", "-n", "-5", "taskset", "-c", "0", "cmd"]


def test_children_are_stopped_newest_first_and_logged(tmp_path: Path) -> None:
    children = Children(tmp_path / "logs")
    first = children.spawn("first", ["sleep", "30"])
    second = children.spawn("second", [sys.executable, "-c", SERVER_LIKE], port=1234)
    assert second.url == "http://127.0.0.1:1234"
    deadline = time.monotonic() + 10
    while not second.log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.02)
    children.stop_all()
    assert first.process.poll() is not None and second.process.poll() is not None
    assert children.started == []
    assert (tmp_path / "logs" / "second.log").read_text() == "hello\n"


def test_combo_keys_name_mode_size_and_concurrency() -> None:
    assert Combo(False, 1024, 16).key == "json-1KB-c16"
    assert Combo(True, 200 * 1024, 64).key == "stream-200KB-c64"


def test_full_plan_covers_every_combination_with_three_repeats() -> None:
    fast = plan(["fast"], ["direct", "bare"], quick=False)[0]
    assert len(fast.combos) == 2 * 2 * 3
    assert fast.repeats >= 3 and 10 <= fast.duration_s <= 15
    assert fast.targets == ("direct", "bare")


def test_quick_plan_is_short_and_runs_once() -> None:
    groups = {g.name: g for g in plan(["fast", "paced", "memory"], ["experiment"], quick=True)}
    assert groups["fast"].duration_s == 3 and groups["fast"].repeats == 1
    assert groups["memory"].repeats == 3  # growth needs consecutive runs even when quick
    assert groups["memory"].combos[0].concurrency == 1000


def test_a_group_without_any_requested_target_is_dropped() -> None:
    assert [g.name for g in plan(["fast", "memory"], ["litellm"], quick=True)] == ["fast"]


def test_unknown_scenarios_are_refused_before_anything_starts(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(["--scenarios", "fastest"]) == 2
    assert "unknown scenario group or target: fastest" in capsys.readouterr().err


def test_litellm_gets_two_weighted_deployments_of_one_model_on_the_same_upstream() -> None:
    config = json.loads(config_text("bench/preview", "http://127.0.0.1:9/v1", (3, 1)))
    deployments = config["model_list"]
    assert {d["model_name"] for d in deployments} == {"bench/preview"}
    assert [d["litellm_params"]["weight"] for d in deployments] == [3, 1]
    assert {d["litellm_params"]["api_base"] for d in deployments} == {"http://127.0.0.1:9/v1"}


def test_profile_frames_are_merged_per_function() -> None:
    assert function_of("handle (proxy/experiment.py:200)") == "proxy/experiment.py:handle"
    assert function_of("<frozen runpy>") == "<frozen runpy>"


def test_profile_summary_counts_self_and_inclusive_samples_without_idle_threads() -> None:
    profile = parse_collapsed([
        "main (a.py:1);handle (b.py:2);decrypt (c.py:3) 3\n",
        "main (a.py:1);handle (b.py:9) 1\n",
        "_bootstrap (threading.py:1);_worker (concurrent/futures/thread.py:81) 50\n",
    ])
    assert profile.total == 4
    assert profile.self_samples["c.py:decrypt"] == 3
    assert profile.inclusive_samples["b.py:handle"] == 4
    assert "75.0%  c.py:decrypt" in render(profile)


def _fake_proc(root: Path, processes: dict[int, tuple[str, list[int]]]) -> Path:
    for pid, (comm, threads) in processes.items():
        (root / str(pid) / "task").mkdir(parents=True)
        (root / str(pid) / "comm").write_text(comm + "\n")
        for tid in threads:
            (root / str(pid) / "task" / str(tid)).mkdir()
    (root / "self").mkdir()  # not a pid: skipped
    return root


def test_cpu_of_named_processes_sums_every_live_process_of_that_name(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path, {10: ("postgres", [10]), 11: ("postgres", [11]),
                                 30: ("python", [30])})
    for pid, (utime, stime) in {10: (100, 20), 11: (5, 5), 30: (999, 999)}.items():
        fields = ["S"] + ["0"] * 10 + [str(utime), str(stime)] + ["0"] * 8
        (proc / str(pid) / "stat").write_text(f"{pid} (name) " + " ".join(fields))
    ticks = os.sysconf("SC_CLK_TCK")
    assert procstat.cpu_seconds_named("postgres", proc) == pytest.approx(130 / ticks)
    assert procstat.cpu_seconds_named("redis-server", proc) == 0.0


def test_service_threads_are_every_thread_of_postgres_and_redis_only(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path, {
        10: ("postgres", [10]), 11: ("postgres", [11]),
        20: ("redis-server", [20, 21, 22]), 30: ("python", [30]),
    })
    assert sorted(placement._service_threads(proc)) == [10, 11, 20, 21, 22]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores")
def test_restore_gives_a_moved_thread_its_original_cpus_back() -> None:
    original = os.sched_getaffinity(0)
    moved = placement.Placement(moved={os.getpid(): original})
    os.sched_setaffinity(0, {min(original)})
    moved.restore()
    assert os.sched_getaffinity(0) == original
    assert moved.moved == {}


def test_the_report_says_where_the_services_ran() -> None:
    assert placement.Placement().describe(1) == "Postgres/Redis unpinned"
    assert "none could be moved" in placement.Placement(requested=True).describe(1)
    assert placement.Placement(moved={1: {0}}, refused=2, requested=True).describe(1) == (
        "Postgres/Redis on core 1 (1 threads); 2 thread(s) could not be moved")
