"""Query-string and path parameters of the evidence endpoints, sans-I/O.

Each parser takes the raw text and returns a typed value or raises
:class:`~admin.errors.BadRequest` naming the parameter (path ids raise
:class:`~admin.errors.NotFound`: an id that cannot exist names nothing).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from admin.errors import BadRequest, NotFound

__all__ = [
    "BIGINT_MAX",
    "ceil_hour",
    "floor_hour",
    "optional_id",
    "optional_text",
    "optional_timestamp",
    "optional_uuid",
    "parse_timestamp",
    "path_uuid",
]

BIGINT_MAX = 2**63 - 1
_DIGITS_RE = re.compile(r"[0-9]{1,19}")
_HOUR = timedelta(hours=1)


def parse_timestamp(value: str, name: str) -> datetime:
    """An ISO 8601 timestamp with a UTC offset (``Z`` accepted), as UTC."""
    if len(value) > 64:
        raise BadRequest(f"{name} must be an ISO 8601 timestamp")
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"{name} must be an ISO 8601 timestamp") from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise BadRequest(f"{name} must include a UTC offset (e.g. 2030-01-01T00:00:00Z)")
    return parsed.astimezone(UTC)


def optional_timestamp(query: Mapping[str, str], name: str) -> datetime | None:
    value = query.get(name)
    return parse_timestamp(value, name) if value else None


def optional_uuid(query: Mapping[str, str], name: str) -> uuid.UUID | None:
    value = query.get(name)
    if not value:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        raise BadRequest(f"{name} must be a UUID") from None


def optional_id(query: Mapping[str, str], name: str) -> int | None:
    value = query.get(name)
    if not value:
        return None
    if not _DIGITS_RE.fullmatch(value) or not 0 < int(value) <= BIGINT_MAX:
        raise BadRequest(f"{name} must be a positive integer id")
    return int(value)


def optional_text(query: Mapping[str, str], name: str, maximum: int) -> str | None:
    value = query.get(name)
    if value is None or value == "":
        return None
    if len(value) > maximum or "\x00" in value:
        raise BadRequest(f"{name} must be at most {maximum} characters, without NUL")
    return value


def path_uuid(text: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise NotFound(f"{what} not found") from None


def floor_hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def ceil_hour(moment: datetime) -> datetime:
    floored = floor_hour(moment)
    return floored if floored == moment else floored + _HOUR
