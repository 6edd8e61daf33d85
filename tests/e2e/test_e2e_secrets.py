"""A partner API key given to the admin API never comes back out of abgate anywhere.

Looked for: every admin answer (successes and rejections), the audit table,
every proxy answer, both apps' /metrics, both apps' log records at DEBUG, the
usage and request rows, and the stored prompt blobs. The key is also looked
for in pieces, since "no part of a key" is the contract.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import asyncpg
import pytest
from e2e_support import (
    CHAT,
    MACHINE_HEADER,
    PARTNER_KEY,
    AdminClient,
    StartApp,
    chat,
    eventually,
    upstream,
)

from abgate.config import Settings
from abgate.mock_upstream import MockServer

ROTATED_KEY = "sk-rotated-E2E-Wm3Yq8RtZk6Nc1Xv"
MACHINES = [f"machine-{n}" for n in range(12)]


def _pieces(key: str) -> list[str]:
    """The key, its random core and the core's halves (base62, so no hash or uuid has them)."""
    core = key.rsplit("-", 1)[1]
    return [key, core, core[: len(core) // 2], core[len(core) // 2 :]]


def _leaks(places: dict[str, str | bytes]) -> list[str]:
    """``place: piece`` for every piece of either key found in any place."""
    found = []
    for place, text in places.items():
        haystack = text.encode() if isinstance(text, str) else text
        for key in (PARTNER_KEY, ROTATED_KEY):
            found += [f"{place}: {piece}" for piece in _pieces(key) if piece.encode() in haystack]
    return found


async def _admin_mistakes(admin: AdminClient, variant_id: int) -> None:
    """Rejected calls that carry a key: their error messages must not quote it."""
    attempts: list[dict[str, Any]] = [
        {
            "path": f"/api/variants/{variant_id}/versions",
            "json": {
                "upstream": {
                    "internal_id": "x",
                    "base_url": "http://127.0.0.1:9/v1",
                    "api_kind": "chat_completions",
                    "api_key": ROTATED_KEY,
                }
            },
        },
        {
            "path": f"/api/variants/{variant_id}/versions",
            "json": {
                "upstream": {
                    "internal_id": "x",
                    "base_url": "http://127.0.0.1:9/v1",
                    "api_kind": "chat_completions",
                },
                "api_key": ROTATED_KEY + "\x00",
            },
        },
        {
            "path": f"/api/variants/{variant_id}/rotate-key",
            "json": {"api_key": ROTATED_KEY, "effective_at": "not a time"},
        },
        {
            "path": f"/api/variants/{variant_id}/rotate-key",
            "data": b'{"api_key": "' + ROTATED_KEY.encode() + b'", ',
        },
    ]
    for attempt in attempts:
        reply = await admin.call(
            "POST", attempt["path"], attempt.get("json"), data=attempt.get("data")
        )
        assert reply.status == 400, reply.text


async def _proxy_traffic(client: aiohttp.ClientSession, proxy_url: str) -> list[bytes]:
    """Plain, streamed and refused experiment calls; each answer with its headers."""
    answers = []
    bodies = [chat(stream=False), chat(stream=True), chat(provider={"zdr": True})]
    for machine in MACHINES:
        for body in bodies:
            async with client.post(
                proxy_url + CHAT, json=body, headers={MACHINE_HEADER: machine}
            ) as response:
                assert response.status in (200, 400)
                answers.append(repr(dict(response.headers)).encode() + await response.read())
    return answers


async def test_a_partner_key_set_through_the_admin_api_never_leaves_abgate(
    admin: AdminClient,
    start_proxy: StartApp,
    e2e_settings: Settings,
    client: aiohttp.ClientSession,
    db: asyncpg.Connection,
    mock_a: MockServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    experiment = await admin.live_experiment(
        [("a", 1, upstream(mock_a, "ckpt-a-1")), ("b", 1, upstream(mock_a, "ckpt-b-1"))],
        api_key=PARTNER_KEY,
    )
    variant_a, variant_b = experiment.variants
    await _admin_mistakes(admin, variant_b.id)
    await admin.ok(
        "POST", f"/api/variants/{variant_b.id}/rotate-key", {"api_key": ROTATED_KEY}, status=201
    )
    await admin.add_version(variant_a.id, upstream(mock_a, "ckpt-a-2"))  # keeps the key
    proxy = await start_proxy(e2e_settings)

    answers = await _proxy_traffic(client, proxy.url)

    served = len(mock_a.requests)
    # Both keys really were in play: the partner received each of them.
    assert {r.headers["authorization"] for r in mock_a.requests} == {
        f"Bearer {PARTNER_KEY}",
        f"Bearer {ROTATED_KEY}",
    }

    async def evidence_stored() -> list[dict[str, Any]] | None:
        found = await admin.ok("GET", f"/api/requests?experiment_id={experiment.id}&limit=100")
        rows: list[dict[str, Any]] = found["requests"]
        complete = len(rows) == served and all(r["body_state"] == "available" for r in rows)
        return rows if complete else None

    requests = await eventually(evidence_stored, timeout=5.0)
    for path in (
        "/api/experiments",
        f"/api/experiments/{experiment.id}",
        "/api/audit",
        f"/api/experiments/{experiment.id}/stats",
        f"/api/requests/{requests[0]['usage_id']}/prompt",
    ):
        await admin.ok("GET", path)
    async with client.get(admin.url + "/metrics") as response:
        admin_metrics = await response.text()
    async with client.get(proxy.url + "/metrics") as response:
        proxy_metrics = await response.text()
    audit = await db.fetch("SELECT * FROM audit_log")
    rows = await db.fetch(
        "SELECT u.*, r.* FROM usage u JOIN model_experiment_request r ON r.usage_id = u.id"
    )
    blobs = await db.fetch("SELECT sha256, content FROM prompt_blob")
    assert audit and len(rows) == served and blobs

    places: dict[str, str | bytes] = {
        "admin answers": "\n".join(admin.transcript),
        "audit table": repr([dict(row) for row in audit]),
        "proxy answers": b"\n".join(answers),
        "admin /metrics": admin_metrics,
        "proxy /metrics": proxy_metrics,
        "logs": caplog.text + repr([record.args for record in caplog.records]),
        "usage and request rows": repr([dict(row) for row in rows]),
        "prompt blobs": b"\n".join(row["content"] for row in blobs),
    }
    assert _leaks(places) == []
    admin_answers = "\n".join(admin.transcript)
    assert "encrypted_api_key" not in admin_answers
    assert "authTag" not in admin_answers
