"""What the recorder writes for one experimented request: a usage row and a request row."""

from __future__ import annotations

import os
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from asyncpg.pgproto.pgproto import UUID as FastUUID

__all__ = ["RequestRecord", "new_usage_id"]

_IDS_PER_READ = 256


class _UsageIds:
    """Random (version 4) UUIDs from one ``os.urandom`` call per 256 of them.

    ``uuid.uuid4()`` makes a getrandom() system call per id, on the request
    path, and ``uuid.UUID`` is built in Python (~0.9 µs); asyncpg's C UUID,
    a ``uuid.UUID`` subclass it encodes without conversion, takes 0.07 µs.
    The version and variant bits are set for the whole pool at once. The pool
    is emptied in a forked child, so two processes never hand out the same ids.
    """

    __slots__ = ("_at", "_pool")

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0

    def __call__(self) -> uuid.UUID:
        at = self._at
        if at == len(self._pool):
            self._pool, at = _random_v4_bytes(_IDS_PER_READ), 0
        self._at = at + 16
        return FastUUID(self._pool[at : at + 16])

    def forget(self) -> None:
        self._pool, self._at = b"", 0


def _random_v4_bytes(count: int) -> bytes:
    """``count`` random UUIDs' bytes with RFC 4122 version 4 and variant bits set."""
    pool = bytearray(os.urandom(16 * count))
    for at in range(0, len(pool), 16):
        pool[at + 6] = (pool[at + 6] & 0x0F) | 0x40  # version 4
        pool[at + 8] = (pool[at + 8] & 0x3F) | 0x80  # variant RFC 4122
    return bytes(pool)


new_usage_id = _UsageIds()
os.register_at_fork(after_in_child=new_usage_id.forget)


@dataclass(slots=True)
class RequestRecord:
    # usage
    created_at: datetime
    request_kind: str  # chat_completions | responses | messages
    upstream_model: str  # the internal id actually called
    status_code: int
    user_id: str | None = None
    has_error: bool = False
    cancelled: bool = False
    streamed: bool = False
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    latency_ms: int = 0
    ttft_ms: int | None = None
    cost_microdollars: int = 0
    market_cost_microdollars: int = 0
    # model_experiment_request
    variant_version_id: int = 0
    allocation_subject: str = "ip"  # user | machine | ip
    subject_value: str = ""
    client_request_id: str | None = None
    system_prompt_sha256: str = "__absent__"
    request_body_sha256: str = "__failed__"
    was_truncated: bool = False
    # Prompt evidence content for the prompt store (not persisted in these rows).
    prompt_body: bytes | None = field(default=None, repr=False)
    prompt_system: bytes | None = field(default=None, repr=False)
    usage_id: uuid.UUID = field(default_factory=new_usage_id)

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict for the spool file (bytes fields are dropped)."""
        data = asdict(self)
        data.pop("prompt_body")
        data.pop("prompt_system")
        data["usage_id"] = str(self.usage_id)
        data["created_at"] = self.created_at.isoformat()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RequestRecord:
        values = dict(data)
        values["usage_id"] = uuid.UUID(values["usage_id"])
        values["created_at"] = datetime.fromisoformat(values["created_at"])
        return cls(**values)
