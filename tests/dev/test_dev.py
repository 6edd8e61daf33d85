"""``abgate dev`` end to end: a real subprocess with embedded Postgres and Redis.

The running demo is shared by the tests that only look at it; the tests that
stop or kill a run start their own.
"""

from __future__ import annotations

import asyncio
import re
import signal
import socket
from pathlib import Path

import aiohttp
import orjson
import pytest
from dev_support import (
    EXIT_FOOTER,
    INTERACTIVE_FOOTER,
    DevRun,
    free_ports,
    survivors,
)

from abgate.dev import DEMO_MODEL, GATEWAY_WORDING, PARTNERS
from abgate.embedded import EmbeddedServices, start_postgres, with_database

pytestmark = pytest.mark.slow

STEPS = (
    "checking ports",
    "using data directory",
    "starting mock upstreams",
    "starting embedded Postgres",
    "starting embedded Redis",
    "applying migrations",
    "starting the admin app",
    "seeding the demo experiment",
    "starting the proxy",
    "ready in",
)


def _chat(model: str) -> dict[str, object]:
    return {"model": model, "stream": True, "messages": [{"role": "user", "content": "Hello!"}]}


async def _stream(run: DevRun, model: str, machine: str) -> tuple[bytes, list[bytes], bytes]:
    """(raw response headers, each body read as it arrived, whole body)."""
    async with aiohttp.ClientSession() as session, session.post(
        f"{run.proxy_url}/v1/chat/completions", json=_chat(model),
        headers={"x-machine-id": machine},
    ) as resp:
        assert resp.status == 200, await resp.text()
        headers = b"\n".join(name + b": " + value for name, value in resp.raw_headers)
        reads = [chunk async for chunk in resp.content.iter_any()]
    return headers, reads, b"".join(reads)


def _events(body: bytes) -> list[dict[str, object]]:
    return [orjson.loads(line[len(b"data: "):]) for line in body.split(b"\n")
            if line.startswith(b"data: {")]


def _text(body: bytes) -> str:
    return "".join(
        choice["delta"].get("content") or ""  # type: ignore[index,union-attr]
        for event in _events(body) for choice in event["choices"]  # type: ignore[attr-defined]
    )


def _revealing(run: DevRun) -> list[bytes]:
    """Byte strings that would tell a client which checkpoint served it."""
    found = [b"ckpt-a", b"ckpt-b", b"partner/", b"partner-a", b"partner-b", b"sk-demo"]
    for port in run.ports.partners:
        found += [f"127.0.0.1:{port}".encode(), f"localhost:{port}".encode()]
    return found


def test_progress_is_reported_step_by_step(demo_run: DevRun) -> None:
    step_lines = [line for line in demo_run.lines if line.startswith("==> ")]
    positions = [next((i for i, line in enumerate(step_lines) if step in line), -1)
                 for step in STEPS]
    assert -1 not in positions, demo_run.output
    assert positions == sorted(positions)


def test_banner_gives_urls_token_and_copy_paste_snippets(demo_run: DevRun) -> None:
    out = demo_run.output
    assert f"Admin UI     {demo_run.admin_url}/ui/" in out
    assert re.fullmatch(r"abg_dev_[A-Za-z0-9_-]{32}", demo_run.token)
    assert f"curl -N {demo_run.proxy_url}/v1/chat/completions" in out
    assert f'"model": "{DEMO_MODEL}", "stream": true' in out
    assert f'OpenAI(base_url="{demo_run.proxy_url}/v1"' in out
    assert f"{demo_run.admin_url}/api/experiments/{demo_run.experiment_id}/stats" in out
    assert out.rstrip().endswith(INTERACTIVE_FOOTER)


def test_banner_never_shows_partner_keys_or_checkpoints(demo_run: DevRun) -> None:
    banner = demo_run.output.encode()
    assert [s for s in _revealing(demo_run) if s in banner] == []


async def test_demo_model_streams_chunk_by_chunk_under_its_public_id(demo_run: DevRun) -> None:
    _, reads, body = await _stream(demo_run, DEMO_MODEL, "laptop-1")
    events = _events(body)
    assert len(events) >= 10
    assert {event["model"] for event in events} == {DEMO_MODEL}
    assert body.rstrip().endswith(b"data: [DONE]")
    # The mock partners pause between chunks: a buffering proxy would deliver one read.
    assert len(reads) > 1
    assert b"[DONE]" not in reads[0]


async def test_no_byte_of_a_demo_response_names_a_checkpoint(demo_run: DevRun) -> None:
    headers, _, body = await _stream(demo_run, DEMO_MODEL, "laptop-2")
    leaked = [s for s in _revealing(demo_run) if s in headers or s in body]
    assert leaked == []


async def test_both_checkpoints_serve_the_demo(demo_run: DevRun) -> None:
    wordings = {partner.wording.split()[0] for partner in PARTNERS}
    seen: set[str] = set()
    for batch in range(5):  # subjects are bucketed 50/50: 8 per batch find both at once
        results = await asyncio.gather(
            *(_stream(demo_run, DEMO_MODEL, f"machine-{batch}-{i}") for i in range(8))
        )
        seen |= {_text(body).split()[0] for _, _, body in results}
        if seen == wordings:
            break
    assert seen == wordings


async def test_other_models_pass_through_to_the_gateway(demo_run: DevRun) -> None:
    _, reads, body = await _stream(demo_run, "gpt-4o-mini", "laptop-1")
    assert {event["model"] for event in _events(body)} == {"gpt-4o-mini"}
    assert _text(body).startswith(GATEWAY_WORDING)
    assert len(reads) > 1


async def test_admin_ui_answers(demo_run: DevRun) -> None:
    async with aiohttp.ClientSession() as session, session.get(
        f"{demo_run.admin_url}/ui/"
    ) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"


async def _total_requests(session: aiohttp.ClientSession, run: DevRun) -> tuple[int, set[str]]:
    url = f"{run.admin_url}/api/experiments/{run.experiment_id}/stats"
    async with session.get(url, headers={"Authorization": f"Bearer {run.token}"}) as resp:
        assert resp.status == 200
        stats = await resp.json()
    versions = stats["versions"]
    return sum(v["totals"]["requests"] for v in versions), {v["label"] for v in versions}


async def test_stats_count_a_request_made_through_the_proxy(demo_run: DevRun) -> None:
    async with aiohttp.ClientSession() as session:
        before, labels = await _total_requests(session, demo_run)
        await _stream(demo_run, DEMO_MODEL, "stats-subject")
        for _ in range(100):  # the recorder writes in batches after the response ends
            after, _ = await _total_requests(session, demo_run)
            if after > before:
                break
            await asyncio.sleep(0.1)
    assert after == before + 1
    assert labels == {partner.label for partner in PARTNERS}


def test_a_second_run_on_the_same_data_directory_is_refused(demo_run: DevRun) -> None:
    second = DevRun.start(demo_run.data_dir, free_ports(), "--exit-when-ready")
    assert second.finish() == 1
    assert f"{demo_run.data_dir} is in use by another process" in second.output
    assert "starting mock upstreams" not in second.output


def test_a_port_in_use_is_named_before_anything_starts(tmp_path: Path) -> None:
    ports = free_ports()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports.admin))
        taken.listen()
        run = DevRun.start(tmp_path / "data", ports, "--exit-when-ready")
        assert run.finish() == 1
    assert f"port {ports.admin} (admin app) is already in use" in run.output
    assert "--admin-port" in run.output
    assert not (tmp_path / "data" / "pg").exists()


def test_ctrl_c_stops_every_process_and_exits_0(tmp_path: Path) -> None:
    run = DevRun.start(tmp_path / "data", free_ports())
    try:
        run.wait_for_line(INTERACTIVE_FOOTER)
        started = run.descendants()
        assert {p.name() for p in started} >= {"postgres", "redis-server"}
        run.process.send_signal(signal.SIGINT)
        assert run.finish() == 0
    finally:
        run.stop()
    assert survivors(started, run.data_dir) == []
    assert "stopped in" in run.output


def _count_demo_experiments(data_dir: Path) -> int:
    import asyncpg

    services = EmbeddedServices()
    try:
        admin_dsn = start_postgres(data_dir / "pg", services, keep=True)

        async def count() -> int:
            conn = await asyncpg.connect(with_database(admin_dsn, "abgate"))
            try:
                return int(await conn.fetchval(
                    "SELECT count(*) FROM model_experiment WHERE public_model_id = $1",
                    DEMO_MODEL))
            finally:
                await conn.close()

        return asyncio.run(count())
    finally:
        services.stop()


def test_after_a_sigkill_nothing_is_left_and_the_next_run_reuses_the_data(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    first = DevRun.start(data_dir, free_ports())
    try:
        first.wait_for_line(INTERACTIVE_FOOTER)
        started = first.descendants()
        first.process.kill()
        first.process.wait()
    finally:
        first.stop()
    assert survivors(started, data_dir) == []

    second = DevRun.start(data_dir, free_ports(), "--exit-when-ready")
    second.wait_for_line(EXIT_FOOTER)
    assert second.finish() == 0
    assert second.token == first.token
    assert second.experiment_id == first.experiment_id
    assert "first run" not in second.output
    assert _count_demo_experiments(data_dir) == 1


def test_ctrl_c_while_starting_stops_what_was_started(tmp_path: Path) -> None:
    run = DevRun.start(tmp_path / "data", free_ports())
    try:
        run.wait_for_line("applying migrations")
        started = run.descendants()
        run.process.send_signal(signal.SIGINT)
        assert run.finish() == 0
    finally:
        run.stop()
    assert survivors(started, run.data_dir) == []
    assert "abgate dev is ready" not in run.output
