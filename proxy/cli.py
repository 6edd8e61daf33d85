"""``abgate proxy``: serve the data plane in one or N worker processes.

One worker serves in this process. With ``--workers N`` the parent spawns N
fresh interpreters that all listen on the same port (``SO_REUSEPORT``; the
kernel spreads connections), sets ``PROMETHEUS_MULTIPROC_DIR`` before any of
them imports ``prometheus_client`` (so ``/metrics`` of any worker aggregates
all of them), forwards SIGTERM/SIGINT and exits 0 once every worker has
stopped cleanly. A worker that dies on its own brings the others down and the
parent exits 1: the process supervisor (Kubernetes, systemd) restarts the
whole set rather than this one limping on with fewer workers.

On SIGTERM a worker stops accepting, lets in-flight requests (streams
included) finish for up to ``ABGATE_DRAIN_S``, flushes the recorder and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import multiprocessing
import multiprocessing.connection
import os
import queue
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from abgate.config import Settings

__all__ = ["command_proxy", "serve"]

_STARTUP_TIMEOUT_S = 60.0
_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="abgate proxy", description="Run the data plane.")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port (0 picks a free one)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (SO_REUSEPORT)")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error("--port must be between 0 and 65535")
    if not 1 <= args.workers <= 256:
        parser.error("--workers must be between 1 and 256")
    return args


def command_proxy(argv: list[str]) -> int:
    """Entry point of ``abgate proxy`` (called by :mod:`abgate.cli`)."""
    args = _parse_args(argv)
    settings = Settings.from_env()  # ConfigError -> exit 2 in abgate.cli
    if args.workers == 1:
        return _run_loop(lambda: serve(settings, args.host, args.port, announce=_announce(1)))
    return _supervise(args.host, args.port, args.workers)


def _announce(workers: int) -> Callable[[str, int], None]:
    def announce(host: str, port: int) -> None:
        shown = f"[{host}]" if ":" in host else host
        noun = "worker" if workers == 1 else "workers"
        print(f"abgate proxy listening on http://{shown}:{port} ({workers} {noun})", flush=True)

    return announce


# A request allocates thousands of container objects (parsed JSON, aiohttp's
# request and response objects, the record), so CPython's default young-
# generation threshold (700 allocations) ran a collection several times per
# request, each tracing survivors the next reference drop would have freed.
# Only cyclic garbage waits longer (a few MB at most). Bench, json and stream
# 1 KB at c16, two interleaved pairs of runs: experiment CPU per request
# 2.02/1.92x -> 1.56/1.77x bare (json) and 2.33/2.51x -> 2.05/2.21x (stream).
GC_THRESHOLDS = (50_000, 20, 100)


def _run_loop(main: Callable[[], Coroutine[Any, Any, None]]) -> int:
    """Run ``main`` on uvloop when it is installed; 0 on a clean stop."""
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        asyncio.run(main())
        return 0
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
    return 0


async def serve(
    settings: Settings,
    host: str,
    port: int,
    *,
    reuse_port: bool = False,
    announce: Callable[[str, int], None] | None = None,
    stop: asyncio.Event | None = None,
    handle_signals: bool = True,
) -> None:
    """Serve until SIGTERM/SIGINT (or ``stop`` is set), then drain and clean up."""
    from aiohttp import web

    from proxy.app import create_runner

    stop = stop or asyncio.Event()
    if handle_signals:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    runner = create_runner(settings)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None, backlog=1024)
        await site.start()
        if announce is not None:
            announce(host, int(runner.addresses[0][1]))
        await stop.wait()
    finally:
        # Stops accepting, drains in-flight requests, then runs the app's
        # cleanup (recorder flush, pools closed).
        await runner.cleanup()


# -- multi-worker --------------------------------------------------------------


def _exit_cleanly(_signum: int, _frame: Any) -> None:
    raise SystemExit(0)


def _worker_main(host: str, port: int, ready: Any) -> None:
    """Body of one worker process (spawned: a fresh interpreter)."""
    # Until serve() installs its handlers: a Ctrl-C must not kill a half-started
    # worker with a traceback (the parent forwards SIGTERM), and a SIGTERM during
    # start-up is a clean exit, not a crash.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_cleanly)
    settings = Settings.from_env()

    def announce(_host: str, _port: int) -> None:
        ready.put(os.getpid())

    async def main() -> None:
        await serve(settings, host, port, reuse_port=True, announce=announce)

    _run_loop(main)


def _reserve_port(host: str, port: int) -> tuple[socket.socket, int]:
    """Bind (without listening) with SO_REUSEPORT to learn the port workers share.

    Holding the bound socket also makes ``--port 0`` work: every worker binds
    the port chosen here. A socket that does not listen receives no connections.
    """
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, type_, proto, _, address = infos[0]
    sock = socket.socket(family, type_, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock, int(sock.getsockname()[1])


def _multiproc_dir() -> tuple[Path, bool]:
    """The Prometheus multiprocess directory, emptied; True when we created it."""
    configured = os.environ.get(_MULTIPROC_ENV)
    if configured:
        path = Path(configured)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):  # left by a previous run: would be summed in
            stale.unlink()
        return path, False
    return Path(tempfile.mkdtemp(prefix="abgate-metrics-")), True


def _supervise(host: str, port: int, workers: int) -> int:
    reserved, bound_port = _reserve_port(host, port)
    metrics_dir, created = _multiproc_dir()
    os.environ[_MULTIPROC_ENV] = str(metrics_dir)
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Queue()
    procs: list[BaseProcess] = []
    stopping = False

    def forward(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for _ in range(workers):
            proc = ctx.Process(target=_worker_main, args=(host, bound_port, ready), daemon=False)
            proc.start()
            procs.append(proc)
        if _await_ready(ready, procs, workers, lambda: stopping):
            _announce(workers)(host, bound_port)
        elif not stopping:
            print("abgate proxy: a worker failed to start", file=sys.stderr, flush=True)
            forward(signal.SIGTERM, None)
        return _wait_all(procs, forward, lambda: stopping)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        reserved.close()
        ready.close()
        if created:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _await_ready(
    ready: Any, procs: list[BaseProcess], workers: int, stopping: Callable[[], bool]
) -> bool:
    """True once every worker listens; False if one exits, we are told to stop, or time runs out."""
    deadline = time.monotonic() + _STARTUP_TIMEOUT_S
    pending = workers
    while pending:
        if stopping() or any(not p.is_alive() for p in procs) or time.monotonic() > deadline:
            return False
        try:
            ready.get(timeout=0.1)
        except queue.Empty:
            continue
        pending -= 1
    return True


def _wait_all(
    procs: list[BaseProcess],
    stop_all: Callable[[int, Any], None],
    stopping: Callable[[], bool],
) -> int:
    """Wait for every worker; a worker exiting on its own stops the rest. Exit code."""
    from prometheus_client import multiprocess

    clean = True
    alive = list(procs)
    while alive:
        multiprocessing.connection.wait([p.sentinel for p in alive], timeout=0.5)
        for proc in [p for p in alive if not p.is_alive()]:
            alive.remove(proc)
            proc.join()
            if proc.pid is not None:
                # Drops the dead worker's live gauges (in-flight, queue depth).
                multiprocess.mark_process_dead(proc.pid)
            if proc.exitcode == 0 and stopping():
                continue
            clean = False
            if not stopping():
                print(
                    f"abgate proxy: worker {proc.pid} exited ({proc.exitcode}); stopping",
                    file=sys.stderr,
                    flush=True,
                )
                stop_all(signal.SIGTERM, None)
    return 0 if clean else 1
