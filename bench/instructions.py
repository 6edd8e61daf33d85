"""Instructions per request, counted by callgrind: a deterministic A/B for code changes.

Wall-clock and CPU-time figures move by 10-20% between runs on a shared machine;
the instructions a server executes per request do not (the same build, inputs
and environment give the same count within ~0.3%, whatever else the machine is
doing). Each server runs under ``valgrind --tool=callgrind`` with
instrumentation off; after a warm-up it is switched on (``callgrind_control``),
a fixed number of requests is sent, and the count is read from the dump.

Instructions are not CPU time: kernel time (system calls) and cache misses are
not in them. Use this to compare two builds of abgate, and ``bench.run`` for the
targets.

    python -m bench.instructions [--requests 400] [--concurrency 4] \\
        [--targets bare passthrough experiment] [--kinds json stream] [--body-bytes 1024]

Needs valgrind (Debian package ``valgrind``) and taskset; Postgres and Redis as
for ``bench.run``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from abgate.config import parse_encryption_keys
from abgate.crypto import KeyRing, generate_key_entry
from bench.loadgen import build_body
from bench.processes import (
    CLIENT_CORE,
    PROXY_CORE,
    Children,
    free_port,
    pinned,
    python_module,
    wait_http,
)
from bench.seed import ExperimentSpec, seed_via_sql
from bench.services import count_rows, start_services

__all__ = ["Count", "main", "render", "total_instructions"]

PUBLIC_MODEL = "bench/preview-instructions"
PRODUCTION_MODEL = "bench/production-model"  # not under experiment: passthrough
TARGETS = ("bare", "passthrough", "experiment")
WARMUP_REQUESTS = 200
# The recorder writes every 0.5 s: its batch is counted with the requests.
SETTLE_S = 1.2


@dataclass(frozen=True)
class Count:
    target: str
    kind: str  # json | stream
    instructions_per_request: float
    failed: int


def total_instructions(dump: str) -> int:
    """The instruction total of a callgrind dump (its ``summary:`` or ``totals:`` line)."""
    for line in dump.splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise ValueError("no summary or totals line in the callgrind dump")


def render(counts: Sequence[Count]) -> str:
    """A Markdown table: thousands of instructions per request and the ratio to bare."""
    bare = {c.kind: c.instructions_per_request for c in counts if c.target == "bare"}
    lines = ["| target | kind | k instructions / request | x bare | failed |",
             "|---|---|---|---|---|"]
    for c in counts:
        ratio = (f"{c.instructions_per_request / bare[c.kind]:.2f}x"
                 if bare.get(c.kind) else "-")
        lines.append(f"| {c.target} | {c.kind} | {c.instructions_per_request / 1000:,.1f} "
                     f"| {ratio} | {c.failed} |")
    return "\n".join(lines)


async def _send(url: str, body: bytes, requests: int, concurrency: int, stream: bool) -> int:
    """Send ``requests`` requests, ``concurrency`` at a time; the number that failed."""
    remaining = iter(range(requests))
    failed = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal failed
        for _ in remaining:
            async with session.post(url, data=body,
                                    headers={"content-type": "application/json"}) as resp:
                answer = await resp.read()
                if resp.status != 200 or (stream and b"[DONE]" not in answer):
                    failed += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return failed


def _control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True)


def _dumped_total(workdir: Path, name: str, pid: int) -> int:
    """The instructions of the newest dump of process ``pid``."""
    dumps = sorted(workdir.glob(f"callgrind-{name}.{pid}*"), key=lambda p: p.stat().st_mtime)
    return total_instructions(dumps[-1].read_text())


async def _count_server(children: Children, name: str, argv: list[str], env: dict[str, str],
                        url: str, ready_url: str, args: argparse.Namespace,
                        workdir: Path) -> list[Count]:
    out = workdir / f"callgrind-{name}"
    child = children.spawn(name, pinned(PROXY_CORE, [
        "valgrind", "--tool=callgrind", "--instr-atstart=no",
        f"--callgrind-out-file={out}.%p", *argv]), env)
    counts = []
    try:
        await wait_http(ready_url, within_s=180, child=child)
        model = PRODUCTION_MODEL if name == "passthrough" else PUBLIC_MODEL
        for kind in args.kinds:
            stream = kind == "stream"
            body = build_body(model, args.body_bytes, stream)
            await _send(url, body, WARMUP_REQUESTS, args.concurrency, stream)
            await asyncio.sleep(SETTLE_S)
            pid = str(child.pid)
            _control("--instr=on", pid)
            _control("--zero", pid)
            failed = await _send(url, body, args.requests, args.concurrency, stream)
            await asyncio.sleep(SETTLE_S)
            _control("--dump", pid)
            _control("--instr=off", pid)
            total = _dumped_total(workdir, name, child.pid)
            counts.append(Count(name, kind, total / args.requests, failed))
            print(f"{name:12s} {kind:6s} {total / args.requests / 1000:9.1f} k instructions"
                  f" / request, {failed} failed", flush=True)
    finally:
        child.stop(within_s=60)  # SIGTERM: the proxy drains its recorder
        children.stop(child)
    return counts


async def _run(args: argparse.Namespace) -> int:
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            print(f"{tool} is required (Debian package valgrind)", file=sys.stderr)
            return 2
    services = await start_services()
    mock_port = free_port()
    mock_url = f"http://127.0.0.1:{mock_port}"
    workdir = Path(tempfile.mkdtemp(prefix="abgate-instructions-"))
    env = {**os.environ,
           "ABGATE_DATABASE_URL": services.database_url, "ABGATE_REDIS_URL": services.redis_url,
           "ABGATE_REDIS_NAMESPACE": f"bench-{secrets.token_hex(4)}",
           "ABGATE_ENCRYPTION_KEYS": generate_key_entry("bench"),
           "ABGATE_ALLOW_INSECURE_UPSTREAM": "1", "ABGATE_GATEWAY_URL": mock_url,
           "ABGATE_SPOOL_DIR": str(workdir / "spool"), "PYTHONUNBUFFERED": "1"}
    children = Children(workdir / "logs")
    children.spawn("mock", pinned(CLIENT_CORE, python_module(
        "abgate.cli", "mock-upstream", "--host", "127.0.0.1", "--port", str(mock_port),
        "--chunks", "20")), env)
    counts: list[Count] = []
    try:
        keyring = KeyRing(parse_encryption_keys(env["ABGATE_ENCRYPTION_KEYS"]))
        await seed_via_sql(services.database_url, keyring,
                           [ExperimentSpec(PUBLIC_MODEL, mock_url + "/v1")])
        await wait_http(f"{mock_url}/_mock/healthz")
        for target in args.targets:
            port = free_port()
            if target == "bare":
                argv = python_module("bench.bare_proxy", "--upstream", mock_url,
                                     "--port", str(port))
                ready = f"http://127.0.0.1:{port}/_mock/healthz"
            else:
                argv = python_module("abgate.cli", "proxy", "--host", "127.0.0.1",
                                     "--port", str(port), "--workers", "1")
                ready = f"http://127.0.0.1:{port}/readyz"
            counts += await _count_server(children, target, argv, env,
                                          f"http://127.0.0.1:{port}/v1/chat/completions",
                                          ready, args, workdir)
        usage, requests = await count_rows(services.database_url)
    finally:
        children.stop_all()
        await services.close()
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(render(counts))
    experiment_requests = sum(args.requests + WARMUP_REQUESTS for c in counts
                              if c.target == "experiment")
    print(f"\nrows: {usage} usage, {requests} request (experiment requests sent: "
          f"{experiment_requests})")
    lost = experiment_requests - min(usage, requests)
    return 1 if lost or any(c.failed for c in counts) else 0


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=400, help="counted per target and kind")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--body-bytes", type=int, default=1024)
    parser.add_argument("--targets", nargs="+", choices=TARGETS, default=list(TARGETS))
    parser.add_argument("--kinds", nargs="+", choices=("json", "stream"),
                        default=["json", "stream"])
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(_run(_parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
