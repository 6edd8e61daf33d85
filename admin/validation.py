"""Request parsing for the admin API, sans-I/O.

Each function takes decoded JSON (or query/path text) and returns a typed value
or raises :class:`~admin.errors.BadRequest` with a message naming the field.
Bodies are strict: an unknown field is an error, so a typo never silently does
nothing. Strings are also checked to be storable in Postgres (no NUL).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from abgate.upstream import Upstream, UpstreamError, parse_upstream, shown_field_name
from admin.errors import BadRequest, NotFound

__all__ = [
    "ArchiveChange",
    "AuditQuery",
    "ExperimentChanges",
    "ExperimentCreate",
    "VariantCreate",
    "VersionCreate",
    "parse_archive",
    "parse_archived_filter",
    "parse_audit_query",
    "parse_experiment_create",
    "parse_experiment_id",
    "parse_experiment_patch",
    "parse_rotate_key",
    "parse_variant_create",
    "parse_variant_id",
    "parse_variant_patch",
    "parse_version_create",
]

NAME_MAX = 200
DESCRIPTION_MAX = 2000
LABEL_MAX = 64
WEIGHT_MIN, WEIGHT_MAX = 1, 10_000
PUBLIC_MODEL_ID_MAX = 200
API_KEY_MAX = 4096
AUDIT_LIMIT_MAX, AUDIT_LIMIT_DEFAULT = 200, 50
_BIGINT_MAX = 2**63 - 1

# JSON-safe and unambiguous in a request's "model" field and in Redis keys.
PUBLIC_MODEL_ID_RE = re.compile(r"[A-Za-z0-9._:/@+-]{1,200}")
_DIGITS_RE = re.compile(r"[0-9]{1,19}")


@dataclass(frozen=True)
class ExperimentCreate:
    public_model_id: str
    name: str
    description: str


@dataclass(frozen=True)
class ExperimentChanges:
    """Fields a PATCH sets; None means "leave as is"."""

    name: str | None = None
    description: str | None = None
    public_model_id: str | None = None


@dataclass(frozen=True)
class VariantCreate:
    label: str
    weight: int


@dataclass(frozen=True)
class VersionCreate:
    upstream: Upstream
    api_key: str | None  # None: keep the prior version's key
    effective_at: datetime | None  # None: now


@dataclass(frozen=True)
class ArchiveChange:
    archived: bool


@dataclass(frozen=True)
class AuditQuery:
    experiment_id: uuid.UUID | None
    limit: int
    before_id: int | None  # the cursor: entries with a smaller id


def _object(
    body: Any, allowed: tuple[str, ...], required: tuple[str, ...] = ()
) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise BadRequest("request body must be a JSON object")
    unknown = sorted(k for k in body if k not in allowed)
    if unknown:
        raise BadRequest(
            f"unknown field {shown_field_name(unknown[0])!r} (allowed: {', '.join(allowed)})"
        )
    for name in required:
        if name not in body:
            raise BadRequest(f"{name} is required")
    return body


def _text(value: Any, name: str, minimum: int, maximum: int) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string")
    if not minimum <= len(value) <= maximum:
        if minimum == 0:
            raise BadRequest(f"{name} must be at most {maximum} characters")
        raise BadRequest(f"{name} must be {minimum}-{maximum} characters")
    if "\x00" in value:
        raise BadRequest(f"{name} must not contain NUL characters")
    if minimum > 0 and not value.strip():
        raise BadRequest(f"{name} must not be blank")
    return value


def _name(value: Any) -> str:
    return _text(value, "name", 1, NAME_MAX)


def _description(value: Any) -> str:
    return _text(value, "description", 0, DESCRIPTION_MAX)


def _public_model_id(value: Any) -> str:
    if not isinstance(value, str):
        raise BadRequest("public_model_id must be a string")
    if not PUBLIC_MODEL_ID_RE.fullmatch(value):
        raise BadRequest(
            "public_model_id must be 1-200 characters from A-Z a-z 0-9 . _ : / @ + -"
        )
    return value


def _label(value: Any) -> str:
    return _text(value, "label", 1, LABEL_MAX)


def _weight(value: Any) -> int:
    # bool is an int subclass; true is not a weight.
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest("weight must be an integer")
    if not WEIGHT_MIN <= value <= WEIGHT_MAX:
        raise BadRequest(f"weight must be between {WEIGHT_MIN} and {WEIGHT_MAX}")
    return value


def _api_key(value: Any) -> str:
    # The message never quotes the value.
    if not isinstance(value, str):
        raise BadRequest("api_key must be a string")
    if not 1 <= len(value) <= API_KEY_MAX:
        raise BadRequest(f"api_key must be 1-{API_KEY_MAX} characters")
    if "\x00" in value:
        raise BadRequest("api_key must not contain NUL characters")
    return value


def _timestamp(value: Any, name: str) -> datetime:
    if not isinstance(value, str) or len(value) > 64:
        raise BadRequest(f"{name} must be an ISO 8601 timestamp string")
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"{name} must be an ISO 8601 timestamp") from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise BadRequest(f"{name} must include a UTC offset (e.g. 2030-01-01T00:00:00Z)")
    return parsed


def parse_experiment_id(text: str) -> uuid.UUID:
    """A path id; anything that is not a UUID names no experiment (404)."""
    try:
        return uuid.UUID(text)
    except ValueError:
        raise NotFound("experiment not found") from None


def parse_variant_id(text: str) -> int:
    """A path id; anything that is not a positive bigint names no variant (404)."""
    if not _DIGITS_RE.fullmatch(text) or not 0 < int(text) <= _BIGINT_MAX:
        raise NotFound("variant not found")
    return int(text)


def parse_experiment_create(body: Any) -> ExperimentCreate:
    fields = _object(body, ("public_model_id", "name", "description"),
                     ("public_model_id", "name"))
    return ExperimentCreate(
        public_model_id=_public_model_id(fields["public_model_id"]),
        name=_name(fields["name"]),
        description=_description(fields.get("description", "")),
    )


def parse_experiment_patch(body: Any) -> ExperimentChanges:
    fields = _object(body, ("name", "description", "public_model_id"))
    return ExperimentChanges(
        name=_name(fields["name"]) if "name" in fields else None,
        description=_description(fields["description"]) if "description" in fields else None,
        public_model_id=(
            _public_model_id(fields["public_model_id"]) if "public_model_id" in fields else None
        ),
    )


def parse_variant_create(body: Any) -> VariantCreate:
    fields = _object(body, ("label", "weight"), ("label", "weight"))
    return VariantCreate(label=_label(fields["label"]), weight=_weight(fields["weight"]))


def parse_variant_patch(body: Any) -> str:
    fields = _object(body, ("label",), ("label",))
    return _label(fields["label"])


def parse_version_create(body: Any, *, allow_insecure: bool) -> VersionCreate:
    fields = _object(body, ("upstream", "api_key", "effective_at"), ("upstream",))
    try:
        upstream = parse_upstream(fields["upstream"], allow_insecure=allow_insecure)
    except UpstreamError as exc:
        raise BadRequest(str(exc)) from None
    api_key = fields.get("api_key")
    effective_at = fields.get("effective_at")
    return VersionCreate(
        upstream=upstream,
        api_key=_api_key(api_key) if api_key is not None else None,
        effective_at=(
            _timestamp(effective_at, "effective_at") if effective_at is not None else None
        ),
    )


def parse_rotate_key(body: Any) -> tuple[str, datetime | None]:
    fields = _object(body, ("api_key", "effective_at"), ("api_key",))
    effective_at = fields.get("effective_at")
    return (
        _api_key(fields["api_key"]),
        _timestamp(effective_at, "effective_at") if effective_at is not None else None,
    )


def parse_archive(body: Any) -> ArchiveChange:
    fields = _object(body, ("archived",), ("archived",))
    if not isinstance(fields["archived"], bool):
        raise BadRequest("archived must be true or false")
    return ArchiveChange(archived=fields["archived"])


def parse_archived_filter(value: str | None) -> bool | None:
    """``archived`` query value: False (default), True, or None for all."""
    if value is None or value == "false":
        return False
    if value == "true":
        return True
    if value == "all":
        return None
    raise BadRequest("archived must be false, true or all")


def parse_audit_query(query: Mapping[str, str]) -> AuditQuery:
    experiment_id: uuid.UUID | None = None
    if query.get("experiment_id"):
        try:
            experiment_id = uuid.UUID(query["experiment_id"])
        except ValueError:
            raise BadRequest("experiment_id must be a UUID") from None
    limit = AUDIT_LIMIT_DEFAULT
    if "limit" in query:
        text = query["limit"]
        if not _DIGITS_RE.fullmatch(text) or not 1 <= int(text) <= AUDIT_LIMIT_MAX:
            raise BadRequest(f"limit must be an integer from 1 to {AUDIT_LIMIT_MAX}")
        limit = int(text)
    before_id: int | None = None
    if query.get("cursor"):
        text = query["cursor"]
        if not _DIGITS_RE.fullmatch(text) or not 0 < int(text) <= _BIGINT_MAX:
            raise BadRequest("cursor is not valid; use next_cursor from a previous page")
        before_id = int(text)
    return AuditQuery(experiment_id=experiment_id, limit=limit, before_id=before_id)
