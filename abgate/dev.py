"""`abgate dev`: the whole system on one machine, for demos and local work.

Embedded Postgres and Redis (pip wheels, no system services), two mock partner
checkpoints, a mock standing in for the gateway, the admin app and the proxy,
each a child process. A demo experiment is seeded through the admin API. State
lives in ``.abgate-dev/`` and is reused by the next run; Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from abgate.crypto import generate_key_entry
from abgate.embedded import EmbeddedServices, start_postgres, start_redis, with_database

__all__ = ["command_dev"]

DEMO_MODEL = "demo/preview-model"


@dataclass
class Ports:
    proxy: int
    admin: int
    gateway: int
    partner_a: int
    partner_b: int


@dataclass
class DevStack:
    data_dir: Path
    ports: Ports
    services: EmbeddedServices = field(default_factory=EmbeddedServices)
    children: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def stop(self) -> None:
        for _, child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for _, child in self.children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        self.children.clear()
        self.services.stop()


def _step(message: str) -> None:
    print(f"==> {message}", flush=True)


def _persistent_secrets(data_dir: Path) -> dict[str, str]:
    """Encryption key and admin token, created once per data directory."""
    path = data_dir / "secrets.json"
    if path.exists():
        stored: dict[str, str] = orjson.loads(path.read_bytes())
        return stored
    values = {
        "ABGATE_ENCRYPTION_KEYS": generate_key_entry("dev"),
        "ABGATE_ADMIN_TOKEN": "abg_dev_" + secrets.token_urlsafe(24),
    }
    path.write_bytes(orjson.dumps(values))
    path.chmod(0o600)
    return values


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
    log = open(stack.data_dir / "logs" / f"{log_name}.log", "ab")  # noqa: SIM115 - owned by child
    child = subprocess.Popen(
        [sys.executable, "-m", "abgate.cli", *args],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C reaches us only; we stop children in order
    )
    stack.children.append((log_name, child))


async def _wait_ready(url: str, within_s: float = 30.0) -> None:
    deadline = time.monotonic() + within_s
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not become ready within {within_s:.0f}s")
            await asyncio.sleep(0.2)


async def _seed_demo(admin_url: str, token: str, ports: Ports) -> str:
    """Create and activate the demo experiment unless a live one exists; returns its id."""
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(admin_url, headers=headers) as api:

        async def call(method: str, path: str, body: Any = None) -> Any:
            async with api.request(method, path, json=body) as resp:
                payload = await resp.json()
                if resp.status >= 400:
                    raise RuntimeError(f"{method} {path} -> {resp.status}: {payload}")
                return payload

        listing = await call("GET", "/api/experiments?archived=all")
        for experiment in listing["experiments"]:
            if experiment["public_model_id"] == DEMO_MODEL and experiment["status"] in (
                "active",
                "paused",
            ):
                return str(experiment["id"])
        experiment = await call(
            "POST",
            "/api/experiments",
            {"public_model_id": DEMO_MODEL, "name": "Demo: checkpoint A vs B",
             "description": "Seeded by `abgate dev`: two mock partner checkpoints, 50/50."},
        )
        for label, port, internal_id in (
            ("A", ports.partner_a, "partner/ckpt-a-2026-11"),
            ("B", ports.partner_b, "partner/ckpt-b-2026-11"),
        ):
            variant = await call(
                "POST", f"/api/experiments/{experiment['id']}/variants",
                {"label": label, "weight": 1},
            )
            await call(
                "POST", f"/api/variants/{variant['id']}/versions",
                {"upstream": {"internal_id": internal_id,
                              "base_url": f"http://127.0.0.1:{port}/v1",
                              "api_kind": "chat_completions"},
                 "api_key": "sk-demo-" + secrets.token_hex(8)},
            )
        await call("POST", f"/api/experiments/{experiment['id']}/activate")
        return str(experiment["id"])


def _banner(stack: DevStack, token: str) -> str:
    p = stack.ports
    proxy = f"http://127.0.0.1:{p.proxy}"
    return f"""
abgate dev is ready.

  Admin UI     http://127.0.0.1:{p.admin}/ui/   (token below)
  Admin API    http://127.0.0.1:{p.admin}/api/experiments
  Proxy        {proxy}/v1   (OpenAI-compatible; Prometheus at {proxy}/metrics)
  Admin token  {token}
  Data dir     {stack.data_dir}   (logs in {stack.data_dir}/logs)

Stream a blinded completion through the proxy:

  curl -N {proxy}/v1/chat/completions \\
    -H 'content-type: application/json' -H 'x-machine-id: laptop-1' \\
    -d '{{"model": "{DEMO_MODEL}", "stream": true,
         "messages": [{{"role": "user", "content": "Hello!"}}]}}'

Or with the openai Python client (pip install openai):

  from openai import OpenAI
  client = OpenAI(base_url="{proxy}/v1", api_key="unused")
  for chunk in client.chat.completions.create(
      model="{DEMO_MODEL}", stream=True,
      messages=[{{"role": "user", "content": "Hello!"}}],
  ):
      print(chunk.choices[0].delta.content or "" if chunk.choices else "", end="")

Press Ctrl-C to stop everything.
"""


async def _start(stack: DevStack) -> str:
    ports = stack.ports
    (stack.data_dir / "logs").mkdir(parents=True, exist_ok=True)
    _step("starting embedded Postgres")
    admin_dsn = start_postgres(stack.data_dir / "pg", stack.services, keep=True)
    _step("starting embedded Redis")
    redis_url = start_redis(stack.data_dir / "redis", stack.services)
    _step("applying migrations")
    dsn = await _ensure_database(admin_dsn, "abgate")
    secret_env = _persistent_secrets(stack.data_dir)
    env = {
        **os.environ,
        **secret_env,
        "ABGATE_DATABASE_URL": dsn,
        "ABGATE_REDIS_URL": redis_url,
        "ABGATE_GATEWAY_URL": f"http://127.0.0.1:{ports.gateway}",
        "ABGATE_ALLOW_INSECURE_UPSTREAM": "1",
        "ABGATE_SPOOL_DIR": str(stack.data_dir / "spool"),
        "PYTHONUNBUFFERED": "1",
    }
    _step("starting mock upstreams (two partner checkpoints and a stand-in gateway)")
    for name, port, extra in (
        ("gateway", ports.gateway, ["--model-prefix", "gateway", "--latency-ms", "20",
                                    "--wording", "Hello from the production gateway model."]),
        ("partner-a", ports.partner_a, ["--model-prefix", "ckpt-a", "--latency-ms", "80",
                                        "--chunk-interval-ms", "30",
                                        "--wording", "Checkpoint A here: concise and direct."]),
        ("partner-b", ports.partner_b, ["--model-prefix", "ckpt-b", "--latency-ms", "150",
                                        "--chunk-interval-ms", "45",
                                        "--wording", "Checkpoint B speaking, a little chattier "
                                        "and a little slower."]),
    ):
        _spawn(stack, ["mock-upstream", "--host", "127.0.0.1", "--port", str(port), *extra],
               env, name)
    _step(f"starting the admin app on :{ports.admin}")
    _spawn(stack, ["admin", "--host", "127.0.0.1", "--port", str(ports.admin)], env, "admin")
    _step(f"starting the proxy on :{ports.proxy}")
    _spawn(stack, ["proxy", "--host", "127.0.0.1", "--port", str(ports.proxy)], env, "proxy")
    for port in (ports.gateway, ports.partner_a, ports.partner_b):
        await _wait_ready(f"http://127.0.0.1:{port}/_mock/healthz")
    await _wait_ready(f"http://127.0.0.1:{ports.admin}/readyz")
    _step("seeding the demo experiment")
    await _seed_demo(f"http://127.0.0.1:{ports.admin}", secret_env["ABGATE_ADMIN_TOKEN"], ports)
    await _wait_ready(f"http://127.0.0.1:{ports.proxy}/readyz")
    return secret_env["ABGATE_ADMIN_TOKEN"]


def _watch(stack: DevStack) -> int:
    """Block until Ctrl-C/SIGTERM or a child dies; returns the exit code."""
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stop:
        for name, child in stack.children:
            if child.poll() is not None:
                print(f"abgate dev: a child process exited ({name}, code "
                      f"{child.returncode}); see {stack.data_dir}/logs", file=sys.stderr)
                return 1
        time.sleep(0.3)
    return 0


def command_dev(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="abgate dev", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=".abgate-dev", type=Path)
    parser.add_argument("--proxy-port", type=int, default=8080)
    parser.add_argument("--admin-port", type=int, default=8081)
    parser.add_argument("--mock-port", type=int, default=9100,
                        help="first of three ports for the gateway stand-in and two partners")
    parser.add_argument("--exit-when-ready", action="store_true",
                        help="start, print the banner and stop (for tests and CI)")
    args = parser.parse_args(argv)
    ports = Ports(args.proxy_port, args.admin_port, args.mock_port, args.mock_port + 1,
                  args.mock_port + 2)
    stack = DevStack(args.data_dir.resolve(), ports)
    stack.data_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        token = asyncio.run(_start(stack))
        print(_banner(stack, token), flush=True)
        _step(f"ready in {time.monotonic() - started:.1f}s")
        return 0 if args.exit_when_ready else _watch(stack)
    except (RuntimeError, OSError) as exc:
        print(f"abgate dev: {exc} (logs in {stack.data_dir}/logs)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        _step("stopping")
        stack.stop()
