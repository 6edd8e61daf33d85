"""Running ``abgate dev`` as a real subprocess and looking at what it leaves behind."""

from __future__ import annotations

import os
import queue
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

READY_TIMEOUT_S = 90.0  # a fresh data directory runs initdb; CI machines are shared
STOP_TIMEOUT_S = 30.0
INTERACTIVE_FOOTER = "Press Ctrl-C to stop everything."
EXIT_FOOTER = "Stopping (--exit-when-ready)."


@dataclass(frozen=True)
class DevPorts:
    proxy: int
    admin: int
    mock: int  # the gateway stand-in; the partners listen on mock+1 and mock+2

    @property
    def partners(self) -> tuple[int, int]:
        return self.mock + 1, self.mock + 2

    def argv(self) -> list[str]:
        return ["--proxy-port", str(self.proxy), "--admin-port", str(self.admin),
                "--mock-port", str(self.mock)]


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports() -> DevPorts:
    """Five consecutive free ports below the ephemeral range (clients never take them)."""
    for _ in range(200):
        base = random.randrange(20000, 32000)
        if all(port_is_free(base + offset) for offset in range(5)):
            return DevPorts(proxy=base, admin=base + 1, mock=base + 2)
    raise RuntimeError("no five consecutive free ports found")


def hermetic_env() -> dict[str, str]:
    """The test's environment without any ABGATE_* setting that could leak into the run."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ABGATE_")}


@dataclass
class DevRun:
    """One ``abgate dev`` process; its output is collected line by line on a thread."""

    process: subprocess.Popen[str]
    data_dir: Path
    ports: DevPorts
    lines: list[str] = field(default_factory=list)
    _queue: queue.Queue[str | None] = field(default_factory=queue.Queue)

    @classmethod
    def start(cls, data_dir: Path, ports: DevPorts, *extra: str) -> DevRun:
        process = subprocess.Popen(
            [sys.executable, "-m", "abgate.cli", "dev", "--data-dir", str(data_dir),
             *ports.argv(), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            text=True, env=hermetic_env(),
        )
        run = cls(process, data_dir, ports)
        threading.Thread(target=run._pump, daemon=True).start()
        return run

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for_line(self, text: str, timeout: float = READY_TIMEOUT_S) -> None:
        """Collect output until a line containing ``text``; fails with the output so far."""
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            try:
                line = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {text!r} within {timeout:.0f}s:\n{self.output}") from None
            if line is None:
                raise AssertionError(f"abgate dev ended before {text!r}:\n{self.output}")
            self.lines.append(line)

    def finish(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """Wait for the exit, collecting the remaining output; the exit code."""
        code = self.process.wait(timeout=timeout)
        while (line := self._queue.get(timeout=timeout)) is not None:
            self.lines.append(line)
        return code

    def stop(self) -> None:
        """Cleanup for fixtures: Ctrl-C, then kill if it does not go."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    @property
    def token(self) -> str:
        match = re.search(r"Admin token\s+(\S+)", self.output)
        assert match, self.output
        return match.group(1)

    @property
    def experiment_id(self) -> str:
        match = re.search(r"/ui/#/experiments/([0-9a-f-]{36})/stats", self.output)
        assert match, self.output
        return match.group(1)

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.proxy}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.admin}"

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children(recursive=True)


def is_gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def survivors(processes: list[psutil.Process], data_dir: Path, within: float = 10.0) -> list[str]:
    """Descriptions of processes still running after ``within`` seconds: any of
    ``processes`` and anything whose command line mentions ``data_dir``."""
    deadline = time.monotonic() + within
    while True:
        alive = [p for p in processes if not is_gone(p)]
        for candidate in psutil.process_iter(["cmdline"]):
            cmdline = " ".join(candidate.info["cmdline"] or [])
            if str(data_dir) in cmdline and candidate.pid != os.getpid() and not is_gone(candidate):
                alive.append(candidate)
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    described = []
    for process in alive:
        try:
            described.append(f"{process.pid} {' '.join(process.cmdline())}")
        except psutil.Error:
            continue
    return described
