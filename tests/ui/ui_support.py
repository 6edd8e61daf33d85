"""Helpers for the browser tests: page actions, an API shortcut for setup, traffic rows.

Page actions find controls by their accessible names (labels, button text), the
way an operator finds them; a renamed label breaks the test on purpose.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
from playwright.async_api import Locator, Page, expect

ADMIN_TOKEN = "abg_ui-test-bootstrap-token-5f0e7d"
API_KEY = "sk-ui-test-partner-key-7a1c39"
SCREENS_DIR = os.environ.get("ABGATE_UI_SCREENS_DIR")


def upstream(base_url: str, internal_id: str, api_kind: str = "chat_completions") -> dict[str, Any]:
    return {"internal_id": internal_id, "base_url": base_url, "api_kind": api_kind}


async def screen(page: Page, name: str) -> None:
    """Save a full-page screenshot for review when ABGATE_UI_SCREENS_DIR is set."""
    if SCREENS_DIR:
        Path(SCREENS_DIR).mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(Path(SCREENS_DIR) / f"{name}.png"), full_page=True)


# -- page actions -------------------------------------------------------------------


async def sign_in(page: Page, base_url: str, token: str = ADMIN_TOKEN, path: str = "/") -> None:
    await page.goto(f"{base_url}{path}")
    await page.get_by_label("Admin token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Experiments", level=1)).to_be_visible()


async def create_experiment(page: Page, public_model_id: str, name: str,
                            description: str = "") -> str:
    """Create through the dialog; returns the new experiment's id (from the URL)."""
    await page.get_by_role("button", name="New experiment").click()
    dialog = page.get_by_role("dialog", name="New experiment")
    await dialog.get_by_label("Public model id").fill(public_model_id)
    await dialog.get_by_label("Name", exact=True).fill(name)
    if description:
        await dialog.get_by_label("Description (optional)").fill(description)
    await dialog.get_by_role("button", name="Create experiment").click()
    await expect(page.get_by_role("heading", name=name, level=1)).to_be_visible()
    match = re.search(r"#/experiments/([0-9a-f-]{36})", page.url)
    assert match, page.url
    return match.group(1)


async def open_experiment(page: Page, base_url: str, experiment_id: str, tab: str = "") -> None:
    suffix = f"/{tab}" if tab else ""
    await page.goto(f"{base_url}/ui/#/experiments/{experiment_id}{suffix}")


def variant_card(page: Page, label: str) -> Locator:
    return page.get_by_role("article", name=f"Variant {label}")


def flash(page: Page) -> Locator:
    return page.get_by_role("status").filter(has_text=re.compile(r"\S")).first


async def add_variant(page: Page, label: str, weight: int) -> None:
    form = page.get_by_role("form", name="Add a variant")
    await form.get_by_label("Label").fill(label)
    await form.get_by_label("Weight (1 to 10000)").fill(str(weight))
    await form.get_by_role("button", name="Add variant").click()
    await expect(variant_card(page, label)).to_be_visible()


async def open_hot_swap(page: Page, label: str) -> Locator:
    await variant_card(page, label).get_by_role("button", name="Hot-swap…").click()
    dialog = page.get_by_role("dialog", name=f'New version for "{label}"')
    await expect(dialog).to_be_visible()
    return dialog


async def hot_swap(page: Page, label: str, new_upstream: dict[str, Any],
                   api_key: str | None) -> None:
    dialog = await open_hot_swap(page, label)
    await dialog.get_by_label("Upstream (JSON)").fill(orjson.dumps(new_upstream).decode())
    if api_key is not None:
        await dialog.get_by_label(re.compile("API key")).fill(api_key)
    await dialog.get_by_role("button", name="Create version").click()
    await expect(dialog).to_be_hidden()
    card = variant_card(page, label)
    await expect(card.get_by_text(new_upstream["internal_id"], exact=True).first).to_be_visible()


async def lifecycle(page: Page, name: str) -> None:
    await lifecycle_button(page, name).click()


def lifecycle_button(page: Page, name: str) -> Locator:
    toolbar = page.get_by_role("toolbar", name="Lifecycle")
    return toolbar.get_by_role("button", name=name, exact=True)


# -- setup through the API -------------------------------------------------------------


class AdminApi:
    """Direct API calls for test setup (what the test is not about)."""

    def __init__(self, base_url: str, token: str = ADMIN_TOKEN) -> None:
        self.base_url = base_url
        self.token = token

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with aiohttp.ClientSession() as session, session.request(
            method, self.base_url + path, json=body, headers=headers
        ) as response:
            text = await response.text()
            assert response.status < 300, f"{method} {path}: {response.status} {text}"
            return orjson.loads(text) if text else None

    async def experiment(self, public_model_id: str, name: str) -> dict[str, Any]:
        created: dict[str, Any] = await self.call(
            "POST", "/api/experiments", {"public_model_id": public_model_id, "name": name}
        )
        return created

    async def variant(self, experiment_id: str, label: str, weight: int,
                      version: dict[str, Any] | None = None) -> dict[str, Any]:
        created: dict[str, Any] = await self.call(
            "POST", f"/api/experiments/{experiment_id}/variants", {"label": label, "weight": weight}
        )
        if version is not None:
            created["current_version"] = await self.call(
                "POST", f"/api/variants/{created['id']}/versions",
                {"upstream": version, "api_key": API_KEY},
            )
        return created

    async def ready_experiment(self, base_url: str, name: str = "Ready") -> dict[str, Any]:
        """A draft with variants A (weight 1) and B (weight 1), each with a version."""
        exp = await self.experiment(f"partner/preview-{uuid.uuid4().hex[:8]}", name)
        exp["variants"] = [
            await self.variant(exp["id"], "A", 1, upstream(base_url, "ckpt-a")),
            await self.variant(exp["id"], "B", 1, upstream(base_url, "ckpt-b")),
        ]
        return exp


# -- traffic rows ----------------------------------------------------------------------


async def insert_requests(
    conn: asyncpg.Connection,
    version_id: int,
    *,
    subjects: int,
    errors: int = 0,
    latency_ms: int = 120,
    spread: timedelta = timedelta(minutes=20),
) -> None:
    """Recorded traffic for one version: one request per subject, the first
    ``errors`` of them failed, spread evenly over the last ``spread``."""
    now = datetime.now(UTC)
    for i in range(subjects):
        created_at = now - spread + spread * (i + 1) / subjects
        usage_id = uuid.uuid4()
        failed = i < errors
        await conn.execute(
            "INSERT INTO usage (id, created_at, request_kind, upstream_model, status_code, "
            "has_error, latency_ms, ttft_ms, input_tokens, output_tokens) "
            "VALUES ($1, $2, 'chat_completions', 'ckpt', $3, $4, $5, $6, 40, 12)",
            usage_id, created_at, 500 if failed else 200, failed, latency_ms + i % 7,
            latency_ms // 3,
        )
        await conn.execute(
            "INSERT INTO model_experiment_request (usage_id, created_at, variant_version_id, "
            "allocation_subject, subject_value, client_request_id, request_kind, "
            "system_prompt_sha256, request_body_sha256) "
            "VALUES ($1, $2, $3, 'machine', $4, $5, 'chat_completions', '__absent__', $6)",
            usage_id, created_at, version_id, f"machine-{version_id}-{i}",
            f"req-{usage_id.hex[:12]}", hashlib.sha256(usage_id.bytes).hexdigest(),
        )


async def chat_through_proxy(proxy_url: str, public_model_id: str, count: int) -> list[int]:
    """``count`` chat completions from ``count`` different machines; their statuses."""
    statuses = []
    async with aiohttp.ClientSession() as session:
        for i in range(count):
            body = {"model": public_model_id,
                    "messages": [{"role": "user", "content": f"ui test prompt {i}"}]}
            headers = {"x-machine-id": f"machine-{i}", "x-client-request-id": f"ui-req-{i}"}
            async with session.post(f"{proxy_url}/v1/chat/completions", json=body,
                                    headers=headers) as response:
                await response.read()
                statuses.append(response.status)
    return statuses


async def wait_for_request_rows(conn: asyncpg.Connection, count: int,
                                timeout_s: float = 10.0) -> None:
    """Wait until the proxy's recorder has written ``count`` request rows."""
    async with asyncio.timeout(timeout_s):
        while await conn.fetchval("SELECT count(*) FROM model_experiment_request") < count:
            await asyncio.sleep(0.05)
