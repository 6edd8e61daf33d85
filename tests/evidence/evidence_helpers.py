"""Builders for the evidence tests: experiments, request records as the proxy makes them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from abgate.evidence_sink import batch_evidence
from proxy.evidence import capped, hash_request, system_prompt
from proxy.recorder import Recorder
from proxy.records import RequestRecord
from proxy.spool import Spool

ADMIN_TOKEN = "abg_evidence-admin-token"
VIEWER_TOKEN = "abg_evidence-viewer-token"
KEY = {"kid": "k1", "iv": "aXY=", "data": "ZGF0YQ==", "authTag": "dGFn"}


def auth(token: str = ADMIN_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Setup:
    experiment_id: uuid.UUID
    variant_ids: list[int]
    version_ids: list[int]  # one per variant, in variant order


async def experiment(
    db: asyncpg.Connection, weights: Sequence[int] = (1, 1), api_kind: str = "chat_completions",
    base_url: str = "https://api.partner.example/v1",
) -> Setup:
    experiment_id = await db.fetchval(
        "INSERT INTO model_experiment (public_model_id, name, status) "
        "VALUES ($1, 'evidence', 'active') RETURNING id", f"partner/preview-{uuid.uuid4().hex[:8]}")
    variant_ids, version_ids = [], []
    for index, weight in enumerate(weights):
        variant_id = await db.fetchval(
            "INSERT INTO model_experiment_variant (experiment_id, label, weight) "
            "VALUES ($1, $2, $3) RETURNING id", experiment_id, f"v{index}", weight)
        version_id = await new_version(db, variant_id, f"ckpt-{index}", api_kind, base_url)
        variant_ids.append(variant_id)
        version_ids.append(version_id)
    return Setup(experiment_id, variant_ids, version_ids)


async def new_version(db: asyncpg.Connection, variant_id: int, internal_id: str,
                      api_kind: str = "chat_completions",
                      base_url: str = "https://api.partner.example/v1") -> int:
    return int(await db.fetchval(
        "INSERT INTO model_experiment_variant_version (variant_id, upstream, encrypted_api_key) "
        "VALUES ($1, $2, $3) RETURNING id",
        variant_id, {"internal_id": internal_id, "base_url": base_url, "api_kind": api_kind},
        KEY))


def chat_body(system: str | None, user: str, **extra: Any) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    if system is not None:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": user})
    return {"model": "ckpt-0", "messages": messages, "user": "pseudonym-1", **extra}


def body_for(kind: str, system: str | None, user: str) -> dict[str, Any]:
    if kind == "chat_completions":
        return chat_body(system, user)
    if kind == "messages":
        body: dict[str, Any] = {"model": "ckpt-0", "max_tokens": 64,
                                "messages": [{"role": "user", "content": user}],
                                "metadata": {"user_id": "pseudonym-1"}}
        if system is not None:
            body["system"] = system
        return body
    body = {"model": "ckpt-0", "input": user, "user": "pseudonym-1"}
    if system is not None:
        body["instructions"] = system
    return body


def record(
    kind: str, body: dict[str, Any] | bytes, version_id: int, *,
    subject: tuple[str, str] = ("user", "alice"), client_request_id: str | None = None,
    created_at: datetime | None = None, **usage: Any,
) -> RequestRecord:
    """A record exactly as proxy/experiment.py builds it for ``body`` sent upstream."""
    sent = body if isinstance(body, bytes) else orjson.dumps(body)
    system = system_prompt(kind, orjson.loads(sent))
    body_sha, system_sha, truncated, _ = hash_request(sent, system)
    kind_of_subject, value = subject
    return RequestRecord(
        created_at=created_at or datetime.now(UTC),
        request_kind=kind,
        upstream_model="ckpt",
        status_code=usage.pop("status_code", 200),
        user_id=value if kind_of_subject == "user" else None,
        variant_version_id=version_id,
        allocation_subject=kind_of_subject,
        subject_value=value,
        client_request_id=client_request_id,
        system_prompt_sha256=system_sha,
        request_body_sha256=body_sha,
        was_truncated=truncated,
        prompt_body=capped(sent)[0],
        prompt_system=system,
        **usage,
    )


async def write(pool: asyncpg.Pool, records: Sequence[RequestRecord], spool_dir: Path,
                prompt_store: str = "postgres") -> None:
    """Write records through the real recorder and evidence sink, and wait for both."""
    # A generous write timeout: on a loaded CI machine a slow first insert must not
    # divert the batch to the spool, which carries no prompt content.
    recorder = Recorder(pool, Spool(str(spool_dir), 64 * 1024 * 1024), write_timeout_s=60.0)
    recorder.evidence = batch_evidence(prompt_store)
    await recorder.start()
    for item in records:
        recorder.record(item)
    await recorder.close(timeout=30)
