"""`abgate dev`: the whole system on one machine, for demos and local work.

Embedded Postgres and Redis (pip wheels, no system services), two mock partner
checkpoints, a mock standing in for the gateway, the admin app and the proxy,
each a child process. A demo experiment is seeded through the admin API. State
lives in ``.abgate-dev/`` and is reused by the next run; Ctrl-C stops everything.

Every child gets a parent-death signal, so even a ``kill -9`` of this process
leaves nothing running; a lock in the data directory keeps a second run off it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from abgate.crypto import generate_key_entry
from abgate.embedded import (
    EmbeddedError,
    EmbeddedServices,
    FileLock,
    die_with_parent,
    start_postgres,
    start_redis,
    with_database,
)

__all__ = [
    "DEMO_MODEL",
    "GATEWAY_WORDING",
    "PARTNERS",
    "DevError",
    "Ports",
    "check_ports",
    "command_dev",
    "load_or_create_secrets",
]

DEMO_MODEL = "demo/preview-model"
DEMO_NAME = "Demo: two checkpoints, 50/50"
DATABASE = "abgate"
_READY_TIMEOUT_S = 60.0
_CHILD_STOP_TIMEOUT_S = 15.0


class DevError(Exception):
    """A startup problem the user can fix; printed as one line, exit code 1."""


@dataclass(frozen=True)
class Ports:
    proxy: int
    admin: int
    gateway: int
    partner_a: int
    partner_b: int

    def by_role(self) -> list[tuple[str, int, str]]:
        """(role, port, the flag that moves it) for each port we listen on."""
        return [
            ("proxy", self.proxy, "--proxy-port"),
            ("admin app", self.admin, "--admin-port"),
            ("gateway stand-in", self.gateway, "--mock-port"),
            ("partner checkpoint A", self.partner_a, "--mock-port"),
            ("partner checkpoint B", self.partner_b, "--mock-port"),
        ]


@dataclass(frozen=True)
class Partner:
    """One mock checkpoint: how it sounds and what the demo experiment calls it."""

    log_name: str
    label: str
    internal_id: str
    latency_ms: int
    chunk_interval_ms: int
    wording: str


# Different speed and wording, so the two arms are tell-apart in stats and in the
# text, yet nothing a client sees names a checkpoint.
PARTNERS = (
    Partner("partner-a", "A", "partner/ckpt-a-2026-11", 80, 30,
            "Sure! Here is a short and direct answer."),
    Partner("partner-b", "B", "partner/ckpt-b-2026-11", 150, 45,
            "Happy to help. Here is a longer, friendlier answer that takes its time."),
)
GATEWAY_WORDING = "Hello from the production gateway model."


@dataclass
class DevStack:
    data_dir: Path
    ports: Ports
    services: EmbeddedServices = field(default_factory=EmbeddedServices)
    children: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    lock: FileLock | None = None

    def stop(self) -> None:
        """Children first (the proxy flushes its recorder to Postgres), then the servers."""
        for _, child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + _CHILD_STOP_TIMEOUT_S
        for _, child in self.children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        self.children.clear()
        self.services.stop()
        if self.lock is not None:
            self.lock.release()
            self.lock = None


_T0 = time.monotonic()


def _step(message: str) -> None:
    print(f"==> [{time.monotonic() - _T0:5.1f}s] {message}", flush=True)


# -- preflight ------------------------------------------------------------------


def check_ports(ports: Ports) -> None:
    """Fail before starting anything when a port is taken, naming it and the flag to move it."""
    seen: dict[int, str] = {}
    for role, port, flag in ports.by_role():
        if not 1 <= port <= 65535:
            raise DevError(f"port {port} ({role}) is out of range; choose another with {flag}")
        if port in seen:
            raise DevError(f"port {port} is asked for twice ({seen[port]} and {role})")
        seen[port] = role
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            # The servers set SO_REUSEADDR too: a port in TIME_WAIT is free for them.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise DevError(
                        f"port {port} ({role}) is already in use; stop whatever listens "
                        f"there or choose another port with {flag}"
                    ) from None
                if exc.errno == errno.EACCES:
                    raise DevError(f"port {port} ({role}) needs privileges; choose a port "
                                   f"above 1023 with {flag}") from None
                raise


def load_or_create_secrets(data_dir: Path) -> dict[str, str]:
    """Encryption key and admin token, created once per data directory and kept.

    The key must not change: the stored partner keys are encrypted under it.
    """
    path = data_dir / "secrets.json"
    if path.exists():
        try:
            stored = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError:
            stored = None
        if not isinstance(stored, dict) or not all(
            isinstance(stored.get(k), str) for k in ("ABGATE_ENCRYPTION_KEYS", "ABGATE_ADMIN_TOKEN")
        ):
            raise DevError(f"{path} is damaged; delete {data_dir} to start over with fresh data")
        return {k: stored[k] for k in ("ABGATE_ENCRYPTION_KEYS", "ABGATE_ADMIN_TOKEN")}
    values = {
        "ABGATE_ENCRYPTION_KEYS": generate_key_entry("dev"),
        "ABGATE_ADMIN_TOKEN": "abg_dev_" + secrets.token_urlsafe(24),
    }
    scratch = path.with_suffix(".tmp")
    scratch.unlink(missing_ok=True)
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable by others
    with os.fdopen(fd, "wb") as out:
        out.write(orjson.dumps(values))
    scratch.replace(path)  # all or nothing, even if we are killed here
    return values


# -- steps ------------------------------------------------------------------------


async def _ensure_database(admin_dsn: str, name: str) -> str:
    from abgate.db import connect
    from abgate.migrations import ensure_partitions, migrate_up

    conn = await connect(admin_dsn)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    dsn = with_database(admin_dsn, name)
    conn = await connect(dsn)
    try:
        await migrate_up(conn)
        await ensure_partitions(conn, ahead=3)
    finally:
        await conn.close()
    return dsn


def _spawn(stack: DevStack, args: list[str], env: dict[str, str], log_name: str) -> None:
    with open(stack.data_dir / "logs" / f"{log_name}.log", "ab") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "abgate.cli", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us only; we stop children in order
            preexec_fn=die_with_parent(signal.SIGTERM),  # only calls prctl: fork-safe
        )
    stack.children.append((log_name, child))


def _dead_child_message(stack: DevStack) -> str | None:
    for name, child in stack.children:
        if child.poll() is not None:
            log = stack.data_dir / "logs" / f"{name}.log"
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-10:])
            return f"{name} exited with code {child.returncode}; last lines of {log}:\n{tail}"
    return None


async def _wait_ready(stack: DevStack, url: str) -> None:
    """Until ``url`` answers 200; fails early when a child has died."""
    deadline = time.monotonic() + _READY_TIMEOUT_S
    timeout = aiohttp.ClientTimeout(total=2)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            if (dead := _dead_child_message(stack)) is not None:
                raise DevError(dead)
            if time.monotonic() > deadline:
                raise DevError(f"{url} did not become ready within {_READY_TIMEOUT_S:.0f}s")
            await asyncio.sleep(0.1)


class _AdminApi:
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        async with self._session.request(method, path, json=body) as resp:
            payload = await resp.json() if resp.status != 204 else None
            if resp.status >= 400:
                raise DevError(f"seeding the demo failed: {method} {path} -> {resp.status}: "
                               f"{payload}")
            return payload


async def _seed_demo(admin_url: str, token: str, ports: Ports) -> dict[str, Any]:
    """The demo experiment: the live one from an earlier run, else a new, active one.

    A draft left by a seed that was interrupted is deleted and seeded again.
    """
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(admin_url, headers=headers) as session:
        api = _AdminApi(session)
        listing = await api.call("GET", "/api/experiments?archived=all")
        for experiment in listing["experiments"]:
            if experiment["public_model_id"] != DEMO_MODEL:
                continue
            if experiment["status"] in ("active", "paused"):
                return dict(experiment)
            if experiment["status"] == "draft" and experiment["name"] == DEMO_NAME:
                await api.call("DELETE", f"/api/experiments/{experiment['id']}")
        experiment = await api.call(
            "POST", "/api/experiments",
            {"public_model_id": DEMO_MODEL, "name": DEMO_NAME,
             "description": "Seeded by `abgate dev`: two mock partner checkpoints, 50/50."},
        )
        for partner, port in zip(PARTNERS, (ports.partner_a, ports.partner_b), strict=True):
            variant = await api.call(
                "POST", f"/api/experiments/{experiment['id']}/variants",
                {"label": partner.label, "weight": 1},
            )
            await api.call(
                "POST", f"/api/variants/{variant['id']}/versions",
                {"upstream": {"internal_id": partner.internal_id,
                              "base_url": f"http://127.0.0.1:{port}/v1",
                              "api_kind": "chat_completions"},
                 "api_key": "sk-demo-" + secrets.token_hex(8)},
            )
        return dict(await api.call("POST", f"/api/experiments/{experiment['id']}/activate"))


def _child_env(
    stack: DevStack, dsn: str, redis_url: str, secret_env: dict[str, str]
) -> dict[str, str]:
    return {
        **os.environ,
        **secret_env,
        "ABGATE_DATABASE_URL": dsn,
        "ABGATE_REDIS_URL": redis_url,
        "ABGATE_GATEWAY_URL": f"http://127.0.0.1:{stack.ports.gateway}",
        "ABGATE_ALLOW_INSECURE_UPSTREAM": "1",
        "ABGATE_SPOOL_DIR": str(stack.data_dir / "spool"),
        # A short drain keeps Ctrl-C snappy; an explicit setting wins.
        "ABGATE_DRAIN_S": os.environ.get("ABGATE_DRAIN_S", "3"),
        "PYTHONUNBUFFERED": "1",
    }


def _spawn_mocks(stack: DevStack, env: dict[str, str]) -> None:
    ports = stack.ports
    _spawn(stack, ["mock-upstream", "--host", "127.0.0.1", "--port", str(ports.gateway),
                   "--model-prefix", "gateway", "--latency-ms", "20", "--chunk-interval-ms", "20",
                   "--wording", GATEWAY_WORDING], env, "gateway")
    for partner, port in zip(PARTNERS, (ports.partner_a, ports.partner_b), strict=True):
        _spawn(stack, ["mock-upstream", "--host", "127.0.0.1", "--port", str(port),
                       "--model-prefix", partner.log_name,
                       "--latency-ms", str(partner.latency_ms),
                       "--chunk-interval-ms", str(partner.chunk_interval_ms),
                       "--wording", partner.wording], env, partner.log_name)


async def _start(stack: DevStack) -> tuple[str, dict[str, Any]]:
    """Bring everything up; returns the admin token and the demo experiment."""
    ports = stack.ports
    secret_env = load_or_create_secrets(stack.data_dir)
    # The mocks need nothing else: they import while Postgres starts.
    _step(f"starting mock upstreams: gateway stand-in on :{ports.gateway}, partner "
          f"checkpoints on :{ports.partner_a} and :{ports.partner_b}")
    _spawn_mocks(stack, dict(os.environ, PYTHONUNBUFFERED="1"))
    fresh = not (stack.data_dir / "pg" / "PG_VERSION").exists()
    _step("starting embedded Postgres" + (" (first run: creating the cluster)" if fresh else ""))
    admin_dsn = start_postgres(stack.data_dir / "pg", stack.services, keep=True)
    _step("starting embedded Redis")
    redis_url = start_redis(stack.data_dir / "redis", stack.services)
    _step("applying migrations")
    dsn = await _ensure_database(admin_dsn, DATABASE)
    env = _child_env(stack, dsn, redis_url, secret_env)
    _step(f"starting the admin app on :{ports.admin}")
    _spawn(stack, ["admin", "--host", "127.0.0.1", "--port", str(ports.admin)], env, "admin")
    await _wait_ready(stack, f"http://127.0.0.1:{ports.admin}/readyz")
    _step("seeding the demo experiment")
    token = secret_env["ABGATE_ADMIN_TOKEN"]
    demo = await _seed_demo(f"http://127.0.0.1:{ports.admin}", token, ports)
    # Started after the seed, so its first routing load already knows the demo model.
    _step(f"starting the proxy on :{ports.proxy}")
    _spawn(stack, ["proxy", "--host", "127.0.0.1", "--port", str(ports.proxy)], env, "proxy")
    for port in (ports.gateway, ports.partner_a, ports.partner_b):
        await _wait_ready(stack, f"http://127.0.0.1:{port}/_mock/healthz")
    await _wait_ready(stack, f"http://127.0.0.1:{ports.proxy}/readyz")
    return token, demo


def banner(stack: DevStack, token: str, demo: dict[str, Any], *, interactive: bool) -> str:
    p = stack.ports
    proxy = f"http://127.0.0.1:{p.proxy}"
    admin = f"http://127.0.0.1:{p.admin}"
    paused = ("\n  (the demo experiment is paused: resume it in the admin UI to route "
              "traffic to the checkpoints)\n" if demo["status"] == "paused" else "")
    footer = "Press Ctrl-C to stop everything." if interactive else "Stopping (--exit-when-ready)."
    return f"""
abgate dev is ready.

  Admin UI     {admin}/ui/   (sign in with the admin token)
  Demo stats   {admin}/ui/#/experiments/{demo["id"]}/stats
  Admin token  {token}
  Proxy        {proxy}/v1   (OpenAI-compatible; Prometheus metrics at {proxy}/metrics)
  Data dir     {stack.data_dir}   (logs in {stack.data_dir / "logs"})
{paused}
Stream a blinded completion of {DEMO_MODEL} through the proxy:

  curl -N {proxy}/v1/chat/completions \\
    -H 'content-type: application/json' -H 'x-machine-id: laptop-1' \\
    -d '{{"model": "{DEMO_MODEL}", "stream": true,
         "messages": [{{"role": "user", "content": "Hello!"}}]}}'

Any other model passes through to the gateway (here a stand-in). Change
x-machine-id to land in the other variant.

Or with the openai Python client (pip install openai):

  from openai import OpenAI
  client = OpenAI(base_url="{proxy}/v1", api_key="unused")
  stream = client.chat.completions.create(
      model="{DEMO_MODEL}", stream=True,
      messages=[{{"role": "user", "content": "Hello!"}}],
      extra_headers={{"x-machine-id": "laptop-1"}},
  )
  for chunk in stream:
      if chunk.choices:
          print(chunk.choices[0].delta.content or "", end="", flush=True)
  print()

Live stats per variant:

  curl -s -H 'Authorization: Bearer {token}' {admin}/api/experiments/{demo["id"]}/stats

{footer}
"""


def _watch(stack: DevStack) -> int:
    """Block until Ctrl-C/SIGTERM (exit 0) or a child dies (exit 1)."""
    try:
        while True:
            if (dead := _dead_child_message(stack)) is not None:
                print(f"abgate dev: {dead}", file=sys.stderr, flush=True)
                return 1
            time.sleep(0.2)
    except KeyboardInterrupt:
        return 0


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="abgate dev", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=".abgate-dev", type=Path,
                        help="where Postgres data, secrets and logs live (default .abgate-dev)")
    parser.add_argument("--proxy-port", type=int, default=8080)
    parser.add_argument("--admin-port", type=int, default=8081)
    parser.add_argument("--mock-port", type=int, default=9100,
                        help="first of three ports: the gateway stand-in and two partners")
    parser.add_argument("--exit-when-ready", action="store_true",
                        help="start, print the banner and stop (for tests and CI)")
    return parser.parse_args(argv)


def command_dev(argv: list[str]) -> int:
    args = _parse_args(argv)
    ports = Ports(args.proxy_port, args.admin_port, args.mock_port, args.mock_port + 1,
                  args.mock_port + 2)
    stack = DevStack(args.data_dir.resolve(), ports)
    global _T0
    _T0 = started = time.monotonic()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    # Ctrl-C and SIGTERM stop us, also while starting; SIGINT is installed explicitly
    # because a shell that starts us in the background hands it over ignored.
    for sig in previous:
        signal.signal(sig, signal.default_int_handler)
    try:
        _step(f"checking ports {', '.join(str(port) for _, port, _ in ports.by_role())}")
        check_ports(ports)
        _step(f"using data directory {stack.data_dir}")
        (stack.data_dir / "logs").mkdir(parents=True, exist_ok=True)
        stack.lock = FileLock.acquire(stack.data_dir / "dev.lock", stack.data_dir)
        token, demo = asyncio.run(_start(stack))
        _step(f"ready in {time.monotonic() - started:.1f}s")
        print(banner(stack, token, demo, interactive=not args.exit_when_ready), flush=True)
        return 0 if args.exit_when_ready else _watch(stack)
    except (DevError, EmbeddedError, OSError) as exc:
        print(f"abgate dev: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        # A second Ctrl-C must not cut the shutdown short and strand a server.
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        if stack.children or stack.services.database_url:
            _step("stopping")
            stopping = time.monotonic()
            stack.stop()
            _step(f"stopped in {time.monotonic() - stopping:.1f}s")
        else:
            stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
