"""Child processes of the benchmark: started pinned to a core, stopped in order."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

__all__ = ["CLIENT_CORE", "PROXY_CORE", "Child", "Children", "free_port", "pinned",
           "python_module", "wait_http"]

# The proxy under test gets core 0; the load generator and the mock share core 1.
PROXY_CORE = 0
CLIENT_CORE = 1


def pinned(core: int, argv: list[str], nice: int = 0) -> list[str]:
    """``argv`` run on one core with taskset, at niceness ``nice`` when not 0.

    Both tools exec their command, so the PID is the command's own.
    """
    if shutil.which("taskset") is None:
        raise RuntimeError("taskset is required (Debian package util-linux)")
    prefix = ["nice", "-n", str(nice)] if nice else []
    return [*prefix, "taskset", "-c", str(core), *argv]


def free_port() -> int:
    """A port that was free on loopback a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_http(url: str, within_s: float = 60.0, child: Child | None = None) -> None:
    """Until ``url`` answers 200; fails early when ``child`` has exited."""
    deadline = time.monotonic() + within_s
    async with aiohttp.ClientSession() as session:
        while True:
            if child is not None and child.process.poll() is not None:
                raise RuntimeError(f"{child.name} exited with code {child.process.returncode} "
                                   f"before it was ready; see {child.log_path}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    if resp.status == 200:
                        return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} was not ready within {within_s:.0f}s")
            await asyncio.sleep(0.1)


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    port: int | None = None  # where it listens on 127.0.0.1, for servers

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError(f"{self.name} is not a server")
        return f"http://127.0.0.1:{self.port}"

    def stop(self, within_s: float = 15.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=within_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Children:
    """Every process the run started, stopped newest first."""

    log_dir: Path
    started: list[Child] = field(default_factory=list)

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None,
              port: int | None = None) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                argv, env=env or dict(os.environ), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        child = Child(name, process, log_path, port)
        self.started.append(child)
        return child

    def stop(self, child: Child) -> None:
        child.stop()
        if child in self.started:
            self.started.remove(child)

    def stop_all(self) -> None:
        while self.started:
            self.started.pop().stop()


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]
