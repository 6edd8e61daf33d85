"""``abgate proxy``: argument handling and the multi-worker process model (real subprocesses)."""

from __future__ import annotations

import asyncio
import gc
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from abgate.config import Settings
from abgate.mock_upstream import MockServer
from proxy.cli import GC_THRESHOLDS, _run_loop, command_proxy

_LISTENING = re.compile(rb"abgate proxy listening on http://127\.0\.0\.1:(\d+) \(2 workers\)")


def test_invalid_worker_count_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc_info:
        command_proxy(["--workers", "0"])
    assert exc_info.value.code == 2
    assert "--workers" in capsys.readouterr().err


def test_the_proxy_loop_runs_with_a_raised_young_generation_threshold() -> None:
    seen: list[tuple[int, int, int]] = []

    async def main() -> None:
        seen.append(gc.get_threshold())

    original = gc.get_threshold()
    try:
        assert _run_loop(main) == 0
    finally:
        gc.set_threshold(*original)
    assert seen == [GC_THRESHOLDS] and GC_THRESHOLDS[0] > original[0]


def _env(settings: Settings, mock: MockServer, tmp_path: Path) -> dict[str, str]:
    assert settings.database_url is not None and settings.redis_url is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABGATE_")}
    env.update(
        ABGATE_DATABASE_URL=settings.database_url,
        ABGATE_REDIS_URL=settings.redis_url,
        ABGATE_REDIS_NAMESPACE=settings.redis_namespace,
        ABGATE_GATEWAY_URL=mock.url,
        ABGATE_SPOOL_DIR=str(tmp_path / "spool"),
        ABGATE_DRAIN_S="2",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
    )
    return env


async def test_two_workers_serve_one_port_aggregate_metrics_and_stop_cleanly_on_sigterm(
    settings: Settings, mock: MockServer, tmp_path: Path, eventually: Any
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "abgate.cli",
        "proxy",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--workers",
        "2",
        env=_env(settings, mock, tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), timeout=60)
        match = _LISTENING.search(line)
        assert match, line
        url = f"http://127.0.0.1:{int(match.group(1))}"

        requests = 40
        # A fresh connection each time: the kernel spreads connections, not requests.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
            for _ in range(requests):
                async with s.get(url + "/_echo/x") as response:
                    assert response.status == 200

        counter_files = list((tmp_path / "metrics").glob("counter_*.db"))
        assert len({path.stem.split("_")[1] for path in counter_files}) == 2  # both served

        passthrough = (
            'abgate_requests_total{code="200",public_model_id="",route="passthrough",variant=""}'
        )

        async def all_counted() -> bool:
            # The worker that answers the scrape is exact; the other one's
            # per-request counts reach the shared files within a second.
            async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as r:
                text = (await r.read()).decode()
            return f"{passthrough} {float(requests)}" in text

        await eventually(all_counted, timeout=10)

        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=20) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
