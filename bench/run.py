"""One command for the whole benchmark: ``python -m bench.run [--quick] [--scenarios ...]``.

Everything listens on loopback. The proxy under test (abgate, the bare
reference or LiteLLM, one worker each) is pinned to core 0; the load generator
and the mock upstream share core 1. Postgres and Redis are the machine's when
``BENCH_DATABASE_URL``/``ABGATE_TEST_DATABASE_URL`` and
``BENCH_REDIS_URL``/``ABGATE_TEST_REDIS_URL`` are set, else embedded; a fresh
database is created, migrated and seeded (admin API, SQL as a fallback).

Writes ``<out>/bench-<timestamp>.md`` and ``.json``. Exits 1 when any abgate,
bare or direct request failed or any experiment request is missing its row.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import resource
import secrets
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import uvloop

from abgate.config import parse_encryption_keys
from abgate.crypto import KeyRing, generate_key_entry
from bench import litellm_ref, procstat
from bench.loadgen import LoadResult, parse_result
from bench.placement import Placement, pin_services
from bench.processes import (
    CLIENT_CORE,
    PROXY_CORE,
    Child,
    Children,
    free_port,
    pinned,
    python_module,
    wait_http,
)
from bench.profile_summary import parse_collapsed, render
from bench.report import aggregate, evaluate_targets, markdown
from bench.scenarios import DEFAULT_GROUPS, TARGETS, Combo, Group, plan
from bench.seed import ExperimentSpec, seed_via_admin, seed_via_sql
from bench.services import BenchServices, count_rows, start_services

__all__ = ["main"]

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
PRODUCTION_MODEL = "bench/production-model"  # not under experiment: passthrough
ROW_FLUSH_TIMEOUT_S = 30.0
WEIGHTS = (3, 1)


@dataclass
class Servers:
    """The servers of one scenario group: where each target listens and its process."""

    mock: Child
    mock_url: str
    urls: dict[str, str] = field(default_factory=dict)  # target -> chat completions URL
    processes: dict[str, Child] = field(default_factory=dict)  # target -> server under test


@dataclass
class Context:
    args: argparse.Namespace
    children: Children
    services: BenchServices
    env: dict[str, str]
    mock_ports: dict[str, int]
    litellm: litellm_ref.LiteLLM | None
    runs: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    idle_cpu: dict[str, float] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)  # target -> why


# ------------------------------------------------------------------ machine


def describe_machine() -> dict[str, Any]:
    cpu_model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_DIR,
                                capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        commit = ""
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "aiohttp": aiohttp.__version__,
        "uvloop": uvloop.__version__,
        "git_commit": commit or "unknown",
        "load_average_at_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def _raise_fd_limit() -> None:
    # 1,000 open streams need ~3 descriptors each across loadgen, proxy and mock.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# ------------------------------------------------------------------ start-up


def _pin(ctx: Context, core: int, argv: list[str]) -> list[str]:
    return pinned(core, argv, nice=ctx.args.nice)


def _abgate(*args: str) -> list[str]:
    return python_module("abgate.cli", *args)


async def _seed(ctx: Context, specs: list[ExperimentSpec]) -> str:
    """Seed through the admin app (preferred); SQL when that fails. Returns the path taken."""
    port = free_port()
    admin = ctx.children.spawn("admin", _pin(ctx, CLIENT_CORE, _abgate(
        "admin", "--host", "127.0.0.1", "--port", str(port))), ctx.env)
    try:
        await wait_http(f"http://127.0.0.1:{port}/readyz", child=admin)
        await seed_via_admin(f"http://127.0.0.1:{port}", ctx.env["ABGATE_ADMIN_TOKEN"], specs)
        return "admin API"
    except (RuntimeError, aiohttp.ClientError, OSError) as exc:
        ctx.problems.append(f"note: seeding through the admin API failed ({exc}); used SQL")
        keyring = KeyRing(parse_encryption_keys(ctx.env["ABGATE_ENCRYPTION_KEYS"]))
        await seed_via_sql(ctx.services.database_url, keyring, specs)
        return "SQL"
    finally:
        ctx.children.stop(admin)


async def _start_group(ctx: Context, group: Group) -> Servers:
    port = ctx.mock_ports[group.name]
    mock = ctx.children.spawn(f"mock-{group.name}", _pin(ctx, CLIENT_CORE, _abgate(
        "mock-upstream", "--host", "127.0.0.1", "--port", str(port), *group.mock_args)), ctx.env)
    mock_url = f"http://127.0.0.1:{port}"
    await wait_http(f"{mock_url}/_mock/healthz", child=mock)
    servers = Servers(mock, mock_url)
    path = "/v1/chat/completions"
    for target in group.targets:
        if target == "direct":
            servers.urls[target] = mock_url + path
        elif target == "bare":
            bare_port = free_port()
            child = ctx.children.spawn(f"bare-{group.name}", _pin(ctx, PROXY_CORE, python_module(
                "bench.bare_proxy", "--upstream", mock_url, "--port", str(bare_port))), ctx.env,
                port=bare_port)
            await wait_http(f"http://127.0.0.1:{bare_port}/_mock/healthz", child=child)
            servers.urls[target] = f"http://127.0.0.1:{bare_port}{path}"
            servers.processes[target] = child
        elif target in ("passthrough", "experiment"):
            if "abgate" not in servers.processes:
                servers.processes["abgate"] = await _start_abgate(ctx, group, mock_url)
            servers.urls[target] = servers.processes["abgate"].url + path
            servers.processes[target] = servers.processes["abgate"]
        elif target == "litellm" and ctx.litellm is not None:
            litellm = await _start_litellm(ctx, group, mock_url)
            if litellm is not None:
                servers.processes[target] = litellm
                servers.urls[target] = litellm.url + path
    await _await_experiment_route(servers, group)
    await _warm_up(ctx, group, servers)
    await _measure_idle_cpu(ctx, servers)
    return servers


async def _warm_up(ctx: Context, group: Group, servers: Servers) -> None:
    """Unmeasured load on every target first: lazy imports, pools and caches fill here."""
    for target, url in servers.urls.items():
        seconds = 3.0 if target == "litellm" else 1.0
        for stream in (False, True):
            warm = Group(**{**group.__dict__, "duration_s": seconds, "warmup_s": 0.0})
            argv = _loadgen_argv(ctx, warm, Combo(stream, 1024, 4), target, url)
            result = await _run_loadgen(argv, seconds + 180)
            if result.errors:
                ctx.problems.append(f"FAIL: warm-up of {group.name}/{target}: "
                                    f"{'; '.join(result.error_samples[:2])}")


async def _start_abgate(ctx: Context, group: Group, mock_url: str) -> Child:
    port = free_port()
    env = {**ctx.env, "ABGATE_GATEWAY_URL": mock_url,
           "ABGATE_SPOOL_DIR": str(Path(ctx.args.out) / "logs" / f"spool-{group.name}")}
    name = f"abgate-proxy-{group.name}"
    child = ctx.children.spawn(name, _pin(ctx, PROXY_CORE, _abgate(
        "proxy", "--host", "127.0.0.1", "--port", str(port), "--workers", "1")), env, port=port)
    await wait_http(f"http://127.0.0.1:{port}/readyz", child=child)
    return child


async def _start_litellm(ctx: Context, group: Group, mock_url: str) -> Child | None:
    assert ctx.litellm is not None
    port = free_port()
    config = Path(ctx.args.out) / "logs" / f"litellm-{group.name}.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(litellm_ref.config_text(group.public_model_id, mock_url + "/v1", WEIGHTS))
    name = f"litellm-{group.name}"
    child = ctx.children.spawn(name, _pin(ctx, PROXY_CORE, litellm_ref.server_argv(
        ctx.litellm, config, port)), litellm_ref.server_env(), port=port)
    try:
        await wait_http(f"http://127.0.0.1:{port}/health/liveliness", within_s=180, child=child)
    except RuntimeError as exc:
        ctx.unavailable["litellm"] = f"did not start for group {group.name}: {exc}"
        ctx.children.stop(child)
        return None
    return child


async def _await_experiment_route(servers: Servers, group: Group) -> None:
    """Until the experiment route serves (the proxy has loaded the routing config)."""
    if "experiment" not in servers.urls:
        return
    body = orjson.dumps({"model": group.public_model_id,
                         "messages": [{"role": "user", "content": "ready?"}]})
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.post(servers.urls["experiment"], data=body,
                                    headers={"content-type": "application/json"}) as resp:
                text = await resp.text()
                if resp.status == 200 and group.public_model_id in text:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"experiment route never served: {resp.status} {text[:200]}")
            await asyncio.sleep(0.2)


async def _measure_idle_cpu(ctx: Context, servers: Servers) -> None:
    """CPU an idle server burns (background polls): recorded so it is not mistaken for cost."""
    unique = {child.name: child for child in servers.processes.values()}
    before = {name: procstat.cpu_seconds(child.pid) for name, child in unique.items()}
    await asyncio.sleep(2.0)
    for name, child in unique.items():
        ctx.idle_cpu[name] = (procstat.cpu_seconds(child.pid) - before[name]) / 2.0 * 100


def _stop_group(ctx: Context, servers: Servers) -> None:
    for child in {c.name: c for c in servers.processes.values()}.values():
        ctx.children.stop(child)
    ctx.children.stop(servers.mock)


# ------------------------------------------------------------------ one run


def _loadgen_argv(ctx: Context, group: Group, combo: Combo, target: str, url: str) -> list[str]:
    model = {"passthrough": PRODUCTION_MODEL}.get(target, group.public_model_id)
    argv = python_module(
        "bench.loadgen", "--url", url, "--model", model,
        "--duration", str(group.duration_s), "--warmup", str(group.warmup_s),
        "--concurrency", str(combo.concurrency), "--body-bytes", str(combo.body_bytes),
        "--expect-chunks", str(group.chunks),
    )
    if combo.stream:
        argv.append("--stream")
    if target != "litellm":  # LiteLLM answers with the deployment's model name
        argv += ["--expect-model", model]
    return _pin(ctx, CLIENT_CORE, argv)


async def _run_loadgen(argv: list[str], timeout_s: float) -> LoadResult:
    process = await asyncio.create_subprocess_exec(
        *argv, cwd=REPO_DIR, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise RuntimeError(f"load generator did not finish within {timeout_s:.0f}s") from None
    if process.returncode != 0:
        raise RuntimeError(f"load generator failed ({process.returncode}): "
                           f"{stderr.decode(errors='replace')[-500:]}")
    return parse_result(stdout)


async def _await_rows(database_url: str, baseline: tuple[int, int], served: int) -> int:
    """Rows added since ``baseline`` once the recorder has flushed (or the timeout hit)."""
    deadline = time.monotonic() + ROW_FLUSH_TIMEOUT_S
    while True:
        usage, requests = await count_rows(database_url)
        written = min(usage - baseline[0], requests - baseline[1])
        if written >= served or time.monotonic() > deadline:
            return written
        await asyncio.sleep(0.1)


async def _run_one(ctx: Context, group: Group, combo: Combo, target: str, repeat: int,
                   servers: Servers) -> dict[str, Any]:
    url = servers.urls[target]
    server = servers.processes.get(target)
    rows_before = await count_rows(ctx.services.database_url) if target == "experiment" else None
    pg_before = procstat.cpu_seconds_named("postgres")
    peak_per_run = procstat.reset_peak_rss(server.pid) if server else False
    before = procstat.sample(server.pid) if server else None
    core_before, wall_before = procstat.core_busy_seconds(PROXY_CORE), time.monotonic()
    argv = _loadgen_argv(ctx, group, combo, target, url)
    timeout = group.warmup_s + group.duration_s + 180
    result = await _run_loadgen(argv, timeout)
    core_busy = procstat.core_busy_seconds(PROXY_CORE) - core_before
    wall = time.monotonic() - wall_before
    rows_written = None
    if rows_before is not None:
        rows_written = await _await_rows(ctx.services.database_url, rows_before,
                                         result.total_requests)
    else:
        await asyncio.sleep(0.2)  # let the last responses' bookkeeping finish
    after = procstat.sample(server.pid) if server else None
    pg_cpu = procstat.cpu_seconds_named("postgres") - pg_before
    run: dict[str, Any] = {
        "group": group.name, "combo": combo.key, "target": target, "repeat": repeat,
        "stream": combo.stream, "body_bytes": combo.body_bytes,
        "concurrency": combo.concurrency, **asdict(result),
        "cpu_us_per_request": None, "peak_rss_mb": None, "rss_mb": None,
        # "run": VmHWM was reset before this run; "process": it covers the server's life.
        "peak_rss_scope": "run" if peak_per_run else "process",
        "rows_expected": result.total_requests if rows_written is not None else None,
        "rows_written": rows_written,
        # Busy time of the server's core not spent by the server (other processes,
        # interrupts): the noise under which this run was taken.
        "core_other_percent": core_busy / wall * 100,
        # Postgres' CPU (every local postgres process) per row the run wrote,
        # until the rows were all there; None for a remote Postgres or no rows.
        "postgres_us_per_row": (pg_cpu / rows_written * 1e6
                                if rows_written and pg_cpu > 0 else None),
    }
    if before is not None and after is not None and result.total_requests:
        server_cpu = after.cpu_s - before.cpu_s
        run["cpu_us_per_request"] = server_cpu / result.total_requests * 1e6
        run["core_other_percent"] = max(core_busy - server_cpu, 0.0) / wall * 100
        run["peak_rss_mb"] = after.peak_rss_mb
        run["rss_mb"] = after.rss_mb
    _note_problems(ctx, run)
    return run


def _note_problems(ctx: Context, run: dict[str, Any]) -> None:
    where = f"{run['group']}/{run['combo']}/{run['target']} run {run['repeat'] + 1}"
    if run["errors"]:
        severity = "note" if run["target"] == "litellm" else "FAIL"
        ctx.problems.append(f"{severity}: {where}: {run['errors']} error(s), e.g. "
                            f"{'; '.join(run['error_samples'][:2])}")
    if run["rows_written"] is not None and run["rows_written"] != run["rows_expected"]:
        ctx.problems.append(f"FAIL: {where}: {run['rows_written']} rows written for "
                            f"{run['rows_expected']} experiment requests served")


def _progress(run: dict[str, Any]) -> None:
    cpu = run["cpu_us_per_request"]
    rows = ("" if run["rows_written"] is None
            else f" rows {run['rows_written']}/{run['rows_expected']}")
    print(f"  {run['group']:<7} {run['combo']:<16} {run['target']:<12} "
          f"{run['throughput_rps']:8.0f} req/s  p50 {run['latency_ms']['p50'] or 0:7.2f} ms  "
          f"p99 {run['latency_ms']['p99'] or 0:7.2f} ms  "
          f"cpu {'-' if cpu is None else f'{cpu:.0f} us/req'}{rows}  errors {run['errors']}",
          flush=True)


# ------------------------------------------------------------------ profile


async def _profile(ctx: Context, group: Group, combo: Combo, route: str,
                   servers: Servers) -> None:
    """Load one route under py-spy: a flame graph and a top-functions list."""
    server = servers.processes[route]
    out = Path(ctx.args.profile_dir)
    out.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before the load
    seconds = int(group.warmup_s + group.duration_s)
    for fmt, suffix in (("flamegraph", "svg"), ("raw", "txt")):
        target = out / f"profile-{route}-{combo.key}.{suffix}"
        spy = ctx.children.spawn(f"py-spy-{route}-{combo.key}-{fmt}", _pin(ctx, CLIENT_CORE, [
            str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(server.pid),
            "--rate", "200", "--duration", str(seconds), "--format", fmt, "-o", str(target)]))
        await asyncio.sleep(0.5)
        result = await _run_loadgen(_loadgen_argv(ctx, group, combo, route,
                                                  servers.urls[route]), seconds + 180)
        await asyncio.get_running_loop().run_in_executor(None, spy.process.wait)
        ctx.children.stop(spy)
        print(f"  profile {route} {combo.key} ({fmt}): {result.throughput_rps:.0f} req/s "
              f"-> {target}", flush=True)
        if fmt == "raw" and target.exists():
            summary = target.with_suffix(".top.txt")
            with target.open() as handle:
                summary.write_text(render(parse_collapsed(handle), top=30))
            print(f"  top functions -> {summary}", flush=True)


# ------------------------------------------------------------------ main


async def _run_group(ctx: Context, group: Group) -> None:
    print(f"== {group.name}: {group.description}", flush=True)
    servers = await _start_group(ctx, group)
    try:
        targets = [t for t in group.targets if t in servers.urls]
        if group.name == "profile":
            for combo in group.combos:
                for route in targets:
                    await _profile(ctx, group, combo, route, servers)
            return
        for combo in group.combos:
            for repeat in range(group.repeats):
                for target in targets:
                    run = await _run_one(ctx, group, combo, target, repeat, servers)
                    ctx.runs.append(run)
                    _progress(run)
    finally:
        _stop_group(ctx, servers)


def _group_json(group: Group) -> dict[str, Any]:
    return {"name": group.name, "description": group.description,
            "duration_s": group.duration_s, "warmup_s": group.warmup_s,
            "repeats": group.repeats, "targets": list(group.targets),
            "combos": [c.key for c in group.combos]}


async def _main(args: argparse.Namespace) -> int:
    started = datetime.now(UTC)
    out = Path(args.out)
    groups = plan(args.scenarios, args.targets, args.quick)
    if args.combos:
        groups = [Group(**{**g.__dict__, "combos": tuple(c for c in g.combos
                                                           if c.key in args.combos)})
                  for g in groups]
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    children = Children(out / "logs" / stamp)
    args.out = str(out)
    machine = describe_machine()
    print(f"machine: {machine}", flush=True)
    unavailable: dict[str, str] = {}
    litellm = None
    if any("litellm" in g.targets for g in groups):
        print("checking LiteLLM (installs into bench/.litellm-venv on first use)...", flush=True)
        found = litellm_ref.ensure_litellm(BENCH_DIR / ".litellm-venv",
                                           out / "logs" / "litellm-install.log")
        if isinstance(found, str):
            unavailable["litellm"] = found
        else:
            litellm = found
            machine["litellm"] = found.version
    services = await start_services()
    machine["services"] = services.description
    placement = pin_services(CLIENT_CORE) if args.pin_services else Placement()
    placed = placement.describe(CLIENT_CORE)  # before restore() forgets what it moved
    env = {**os.environ, "ABGATE_DATABASE_URL": services.database_url,
           "ABGATE_REDIS_URL": services.redis_url,
           "ABGATE_REDIS_NAMESPACE": f"bench-{secrets.token_hex(4)}",
           "ABGATE_ENCRYPTION_KEYS": generate_key_entry("bench"),
           "ABGATE_ADMIN_TOKEN": "abg_bench_" + secrets.token_urlsafe(24),
           "ABGATE_ALLOW_INSECURE_UPSTREAM": "1", "PYTHONUNBUFFERED": "1"}
    ctx = Context(args, children, services, env,
                  {g.name: free_port() for g in groups}, litellm)
    seeded_by = "not seeded"
    try:
        specs = [ExperimentSpec(g.public_model_id, f"http://127.0.0.1:{ctx.mock_ports[g.name]}/v1",
                                WEIGHTS) for g in groups]
        seeded_by = await _seed(ctx, specs)
        print(f"seeded {len(specs)} experiment(s) via {seeded_by}", flush=True)
        for group in groups:
            await _run_group(ctx, group)
    except Exception as exc:  # a broken run still writes what it measured
        ctx.problems.append(f"FAIL: run aborted: {type(exc).__name__}: {exc}")
    finally:
        children.stop_all()
        await services.close()
        placement.restore()
    machine["load_average_at_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    rows = aggregate(ctx.runs)
    report = {
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "machine": machine,
        "placement": (f"server under test on core {PROXY_CORE}; load generator and mock on core "
                      f"{CLIENT_CORE}; {placed}; one worker each; "
                      f"niceness {args.nice}"),
        "seeded_by": seeded_by,
        "idle_cpu_percent": ctx.idle_cpu,
        "unavailable": {**unavailable, **ctx.unavailable},
        "groups": [_group_json(g) for g in groups if g.name != "profile"],
        "rows": rows,
        "targets": evaluate_targets(rows),
        "problems": ctx.problems,
        "runs": ctx.runs,
    }
    out.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - the run is over
    json_path = out / f"bench-{stamp}.json"
    md_path = out / f"bench-{stamp}.md"
    json_path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    md_path.write_text(markdown(report))
    print(markdown(report))
    print(f"wrote {md_path} and {json_path}")
    failed = [p for p in ctx.problems if p.startswith("FAIL")]
    return 1 if failed else 0


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="3 s runs, one repeat, fewer combinations (a smoke run)")
    parser.add_argument("--scenarios", nargs="+", default=list(DEFAULT_GROUPS),
                        metavar="GROUP", help="fast, paced, memory, profile "
                        f"(default: {' '.join(DEFAULT_GROUPS)})")
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), metavar="TARGET",
                        help=f"subset of {' '.join(TARGETS)}")
    parser.add_argument("--combos", nargs="+", default=None, metavar="KEY",
                        help="only these combinations, e.g. json-1KB-c16 stream-200KB-c64")
    parser.add_argument("--out", default=str(BENCH_DIR / "results"),
                        help="directory for the .md/.json results (default bench/results/)")
    parser.add_argument("--nice", type=int, default=0,
                        help="niceness of every benchmark process (e.g. -5 as root on a "
                        "shared machine; default 0)")
    parser.add_argument("--pin-services", action="store_true",
                        help="move Postgres/Redis to the client core for the run (default: "
                        "where the scheduler puts them)")
    parser.add_argument("--profile-dir", default=str(BENCH_DIR / "results"),
                        help="where the profile group writes its flame graphs")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        plan(args.scenarios, args.targets, args.quick)
    except ValueError as exc:
        print(f"bench.run: {exc}", file=sys.stderr)
        return 2
    _raise_fd_limit()
    return asyncio.run(_main(args))


if __name__ == "__main__":
    raise SystemExit(main())
