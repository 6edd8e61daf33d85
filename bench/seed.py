"""Active experiments for the benchmark, created through the admin API.

The admin API is the product's own path (validation, audit, routing-version
bump and push), so it is tried first. If the admin app cannot be used, the same
rows are written with SQL and the routing version bumped with
:func:`abgate.routing_protocol.bump_version`; the report says which path ran.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from abgate.crypto import KeyRing
from abgate.db import connect
from abgate.routing_protocol import bump_version
from abgate.upstream import parse_upstream

__all__ = ["ExperimentSpec", "seed_via_admin", "seed_via_sql"]

BENCH_API_KEY = "sk-bench-not-a-secret"


@dataclass(frozen=True)
class ExperimentSpec:
    """One preview id whose two weighted variants both point at ``base_url``."""

    public_model_id: str
    base_url: str  # e.g. http://127.0.0.1:9100/v1
    weights: tuple[int, int] = (3, 1)

    def upstream(self, label: str) -> dict[str, Any]:
        return {"internal_id": f"partner/ckpt-{label}", "base_url": self.base_url,
                "api_kind": "chat_completions"}


async def seed_via_admin(admin_url: str, token: str, specs: Sequence[ExperimentSpec]) -> None:
    """Create, fill and activate each experiment with the admin HTTP API."""
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(admin_url, headers=headers) as api:

        async def call(method: str, path: str, body: Any = None) -> Any:
            async with api.request(method, path, json=body) as resp:
                text = await resp.text()
                if resp.status >= 400:
                    raise RuntimeError(f"admin API {method} {path} -> {resp.status}: {text[:300]}")
                return await resp.json() if text else None

        for spec in specs:
            experiment = await call("POST", "/api/experiments", {
                "public_model_id": spec.public_model_id,
                "name": f"bench {spec.public_model_id}",
            })
            for label, weight in zip(("a", "b"), spec.weights, strict=True):
                variant = await call("POST", f"/api/experiments/{experiment['id']}/variants",
                                     {"label": label, "weight": weight})
                await call("POST", f"/api/variants/{variant['id']}/versions",
                           {"upstream": spec.upstream(label), "api_key": BENCH_API_KEY})
            await call("POST", f"/api/experiments/{experiment['id']}/activate")


async def seed_via_sql(database_url: str, keyring: KeyRing,
                       specs: Sequence[ExperimentSpec]) -> None:
    """The same experiments written directly, one transaction each."""
    conn = await connect(database_url)
    try:
        for spec in specs:
            async with conn.transaction():
                experiment_id = uuid.uuid4()
                await conn.execute(
                    "INSERT INTO model_experiment (id, public_model_id, name, status, started_at)"
                    " VALUES ($1, $2, $3, 'active', now())",
                    experiment_id, spec.public_model_id, f"bench {spec.public_model_id}")
                for label, weight in zip(("a", "b"), spec.weights, strict=True):
                    variant_id = await conn.fetchval(
                        "INSERT INTO model_experiment_variant (experiment_id, label, weight) "
                        "VALUES ($1, $2, $3) RETURNING id", experiment_id, label, weight)
                    upstream = parse_upstream(spec.upstream(label), allow_insecure=True)
                    await conn.execute(
                        "INSERT INTO model_experiment_variant_version "
                        "(variant_id, upstream, encrypted_api_key) VALUES ($1, $2, $3)",
                        variant_id, upstream.to_json(), keyring.encrypt(BENCH_API_KEY))
                await bump_version(conn, spec.public_model_id)
    finally:
        await conn.close()
