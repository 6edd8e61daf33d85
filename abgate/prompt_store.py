"""The content-addressed prompt store: what was sent upstream, kept once.

Every blob is keyed by the SHA-256 (lowercase hex) of its own bytes. One
request's evidence is two blobs:

* the **system blob**, keyed by the row's ``system_prompt_sha256``: the system
  prompt exactly as the proxy serialised it (``proxy.evidence.system_prompt``).
  Requests that share a system prompt share this blob, so a large prompt
  repeated by every request is stored once.
* the **remainder blob**, referenced by the row's ``body_blob_sha256``: the sent
  body with the system prompt's bytes cut out, behind a one-line header that
  says where they were cut (:class:`Remainder`). The system prompt's JSON bytes
  occur verbatim in the orjson-serialised body (orjson is deterministic, and
  a JSON value's bytes cannot occur inside a string where quotes are escaped),
  so the cut is found with ``bytes.find``; for a chat request the system blob
  is a JSON array of the system/developer messages: its elements are cut as one
  piece when they occur next to each other, else each where it occurs.
  :func:`rebuild` puts the pieces back, which yields exactly the bytes whose
  SHA-256 is the row's ``request_body_sha256``. Correctness does not depend on
  *which* occurrence is cut, nor on pieces lying on element boundaries: the same
  bytes go back at the same offset. When a piece cannot be found (a body not serialised by orjson)
  nothing is cut: the remainder then holds the whole body, still exact.

Content is capped at :data:`MAX_CONTENT_BYTES` without splitting a UTF-8
character; a truncated body is stored as a ``.part`` (``truncated`` in the
header) and rebuilds to that prefix only.

Write path (:class:`PromptCapture`, used by the proxy recorder): the blobs are
written in the same transaction as the rows that reference them, before the
rows are inserted, so each row is written once, already pointing at its
remainder (``body_blob_sha256``) or, when its blobs could not be written,
with ``__failed__`` hashes (so is a row replayed from the spool, which keeps no
content). A row written with no capture at all (prompt store off) keeps its
hashes with no ``body_blob_sha256``, which readers report as ``failed`` too,
so a lost capture is always visible. The user's request never waits for any
of this.

Deletion (wipe-user, retention) and writing are serialised by a Postgres
advisory lock: writers hold it shared while they write blobs and point rows at
them, deleters hold it exclusively while they check references and delete. So a
blob is never deleted between being written and being referenced, for either
backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import tempfile
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

import asyncpg
import orjson
from prometheus_client import Counter

__all__ = [
    "ABSENT",
    "DELETED",
    "FAILED",
    "MAX_CONTENT_BYTES",
    "BlobStore",
    "Captured",
    "CorruptEvidence",
    "EvidenceDeleted",
    "EvidenceRef",
    "EvidenceUnavailable",
    "FileBlobStore",
    "PostgresBlobStore",
    "PromptCapture",
    "Remainder",
    "Split",
    "StoredBody",
    "cap_utf8",
    "delete_unreferenced",
    "deleting",
    "is_sha256",
    "load_bodies",
    "open_blob_store",
    "rebuild",
    "sha256_hex",
    "split",
    "uncaptured",
]

log = logging.getLogger("abgate.prompt_store")

MAX_CONTENT_BYTES = 4 * 1024 * 1024
ABSENT = "__absent__"
FAILED = "__failed__"
DELETED = "__deleted__"
_MAGIC = b"abgate-remainder/1 "
_SHA_RE = re.compile(r"[0-9a-f]{64}")
# Serialises blob writers (shared) against blob deleters (exclusive); any constant.
_BLOB_LOCK_KEY = 0x4A_B6_E5_1D_0B

CAPTURES = Counter(
    "abgate_prompt_captures_total",
    "Prompt evidence captures by result: stored | failed",
    ["result"],
)


class CorruptEvidence(ValueError):
    """A stored blob does not decode or does not match its hash."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_sha256(value: str | None) -> bool:
    return value is not None and _SHA_RE.fullmatch(value) is not None


def cap_utf8(content: bytes, limit: int = MAX_CONTENT_BYTES) -> tuple[bytes, bool]:
    """``content`` cut to at most ``limit`` bytes, never inside a UTF-8 character."""
    if limit < 0:
        raise ValueError("limit must be >= 0")
    if len(content) <= limit:
        return content, False
    cut = limit
    # content[cut] is the first byte dropped; a continuation byte (10xxxxxx) there
    # means its character started before the cut, so the cut moves back to it.
    for _ in range(3):
        if cut == 0 or content[cut] & 0xC0 != 0x80:
            break
        cut -= 1
    return content[:cut], True


# -- the remainder encoding (sans-I/O) -------------------------------------------


# Remainder and Split are built once per recorded request: slotted and not
# frozen, because a frozen dataclass sets each field with object.__setattr__.
@dataclass(slots=True)
class Remainder:
    """A body minus its system prompt: ``rest`` plus where the cut pieces go.

    Encoded as ``abgate-remainder/1 <JSON header>\\n<rest>``. The header is one
    line of compact JSON (which never contains a raw newline): ``system`` (the
    system blob's hash or null), ``layout`` (``whole``: the blob is the one
    piece; ``array``: the blob is ``[p1,p2,...]`` and each ``pN`` is a piece),
    ``spans`` (``[offset, length]`` of each piece in the rebuilt body, in
    order), ``length`` (of the rebuilt body) and ``truncated``.
    """

    system: str | None
    layout: str
    spans: tuple[tuple[int, int], ...]
    length: int
    truncated: bool
    rest: bytes

    def encode(self) -> bytes:
        header = {
            "system": self.system,
            "layout": self.layout,
            "spans": [list(span) for span in self.spans],
            "length": self.length,
            "truncated": self.truncated,
        }
        return b"".join((_MAGIC, orjson.dumps(header), b"\n", self.rest))

    @classmethod
    def decode(cls, data: bytes) -> Remainder:
        if not data.startswith(_MAGIC):
            raise CorruptEvidence("remainder blob has no abgate header")
        end = data.find(b"\n", len(_MAGIC))
        if end < 0:
            raise CorruptEvidence("remainder blob header is not terminated")
        try:
            header = orjson.loads(data[len(_MAGIC):end])
        except orjson.JSONDecodeError:
            raise CorruptEvidence("remainder blob header is not JSON") from None
        remainder = cls(
            system=header.get("system") if isinstance(header, dict) else None,
            layout=header.get("layout", "") if isinstance(header, dict) else "",
            spans=_spans(header.get("spans") if isinstance(header, dict) else None),
            length=_int(header.get("length") if isinstance(header, dict) else None),
            truncated=bool(header.get("truncated")) if isinstance(header, dict) else False,
            rest=data[end + 1:],
        )
        remainder.validate()
        return remainder

    def validate(self) -> None:
        if self.layout not in ("whole", "array"):
            raise CorruptEvidence("remainder layout must be whole or array")
        if self.spans and not is_sha256(self.system):
            raise CorruptEvidence("remainder cuts a system prompt but names no system blob")
        cursor = 0
        for offset, length in self.spans:
            if offset < cursor or length <= 0:
                raise CorruptEvidence("remainder spans overlap or are out of order")
            cursor = offset + length
        if cursor > self.length:
            raise CorruptEvidence("remainder spans reach past the body")
        if sum(length for _, length in self.spans) + len(self.rest) != self.length:
            raise CorruptEvidence("remainder length does not add up")


def _spans(value: object) -> tuple[tuple[int, int], ...]:
    if not isinstance(value, list):
        raise CorruptEvidence("remainder spans must be a list")
    spans = []
    for item in value:
        if not (isinstance(item, list) and len(item) == 2):
            raise CorruptEvidence("remainder span must be [offset, length]")
        spans.append((_int(item[0]), _int(item[1])))
    return tuple(spans)


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CorruptEvidence("remainder header has a bad number")
    return value


@dataclass(slots=True)
class Split:
    """The blobs of one request's evidence."""

    remainder: bytes  # encoded Remainder
    remainder_sha256: str
    system: bytes | None  # the system blob, when it is stored
    system_sha256: str | None


def _ways(system: bytes) -> Iterator[tuple[str, list[bytes]]]:
    """Ways to cut ``system`` out of a body, best first, each built only when tried.

    For a JSON array, its inside as one piece (one element, or elements sent
    next to each other, with no parsing), then each element apart; anything
    else whole. Any split of ``[p1,p2,...]`` rebuilds exactly, so the first way
    needs no proof that it lies on element boundaries. The whole array is not
    tried: where it occurs its inside does too, and a chat body's system
    messages are followed by others, so looking for the whole would scan the
    body in vain first.
    """
    if not (system.startswith(b"[") and system.endswith(b"]")) or len(system) <= 2:
        yield "whole", [system]
        return
    yield "array", [system[1:-1]]
    try:
        items = orjson.loads(system)
    except orjson.JSONDecodeError:
        return
    if isinstance(items, list) and len(items) > 1:
        pieces = [orjson.dumps(item) for item in items]
        # Only when the blob is exactly the compact array of these pieces can
        # rebuild() find them again by length.
        if b"[" + b",".join(pieces) + b"]" == system:
            yield "array", pieces


# A long piece is looked for by its first bytes, then compared where they occur:
# bytes.find with a 100 KB needle preprocesses and scans it (~1 ns a byte), a
# comparison is a memcmp. After a few false starts, bytes.find takes over.
_PROBE_BYTES = 256
_PROBE_TRIES = 8


def _find(content: bytes, piece: bytes, start: int) -> int:
    """``content.find(piece, start)``, faster for a long ``piece``."""
    if len(piece) <= _PROBE_BYTES:
        return content.find(piece, start)
    probe = piece[:_PROBE_BYTES]
    at = content.find(probe, start)
    for _ in range(_PROBE_TRIES):
        if at < 0 or content.startswith(piece, at):
            return at
        at = content.find(probe, at + 1)
    return -1 if at < 0 else content.find(piece, at)


def _find_spans(content: bytes, pieces: list[bytes]) -> list[tuple[int, int]] | None:
    spans = []
    start = 0
    for piece in pieces:
        offset = _find(content, piece, start)
        if offset < 0:
            return None
        spans.append((offset, len(piece)))
        start = offset + len(piece)
    return spans


def split(
    content: bytes,
    system: bytes | None,
    *,
    truncated: bool = False,
    system_sha256: str | None = None,
) -> Split:
    """Cut ``system`` out of ``content`` (the sent body, already capped).

    The system blob is kept only when it fits under the cap (a larger one is
    not content-addressable as a prefix); pieces are cut only when found.
    ``system_sha256`` is the blob's hash when the caller has already checked
    it (a wrong one would file the blob under another blob's key).
    """
    system_blob = system if system is not None and len(system) <= MAX_CONTENT_BYTES else None
    system_sha = None
    if system_blob is not None:
        system_sha = system_sha256 if system_sha256 is not None else sha256_hex(system_blob)
    layout = "whole"
    spans: tuple[tuple[int, int], ...] = ()
    if system_blob is not None:
        for way, pieces in _ways(system_blob):
            found = _find_spans(content, pieces)
            if found is not None:
                layout, spans = way, tuple(found)
                break
    kept = []
    cursor = 0
    for offset, length in spans:
        kept.append(content[cursor:offset])
        cursor = offset + length
    kept.append(content[cursor:])
    remainder = Remainder(
        system=system_sha if spans else None,
        layout=layout,
        spans=spans,
        length=len(content),
        truncated=truncated,
        rest=b"".join(kept),
    ).encode()
    return Split(remainder, sha256_hex(remainder), system_blob, system_sha)


def rebuild(remainder: Remainder, system_blob: bytes | None) -> bytes:
    """The body the remainder was cut from; ``system_blob`` is needed when it has spans."""
    if not remainder.spans:
        return remainder.rest
    if system_blob is None:
        raise CorruptEvidence("the system blob this body needs is missing")
    if sha256_hex(system_blob) != remainder.system:
        raise CorruptEvidence("the system blob does not match its hash")
    pieces = _cut_pieces(remainder, system_blob)
    out = bytearray()
    rest_at = 0
    cursor = 0
    for (offset, length), piece in zip(remainder.spans, pieces, strict=True):
        gap = offset - cursor
        out += remainder.rest[rest_at:rest_at + gap]
        rest_at += gap
        out += piece
        cursor = offset + length
    out += remainder.rest[rest_at:]
    return bytes(out)


def _cut_pieces(remainder: Remainder, blob: bytes) -> list[bytes]:
    if remainder.layout == "whole":
        if len(remainder.spans) != 1 or remainder.spans[0][1] != len(blob):
            raise CorruptEvidence("system span does not match the system blob")
        return [blob]
    if not (blob.startswith(b"[") and blob.endswith(b"]")):
        raise CorruptEvidence("array system blob is not a JSON array")
    pieces = []
    at = 1
    for index, (_, length) in enumerate(remainder.spans):
        pieces.append(blob[at:at + length])
        at += length
        separator = b"," if index < len(remainder.spans) - 1 else b"]"
        if blob[at:at + 1] != separator:
            raise CorruptEvidence("system spans do not match the system blob")
        at += 1
    if at != len(blob):
        raise CorruptEvidence("system spans do not cover the system blob")
    return pieces


# -- backends ----------------------------------------------------------------------


class BlobStore(Protocol):
    """Where blob bytes live. Keys are SHA-256 hex of the bytes."""

    kind: str

    async def put(self, conn: asyncpg.Connection, blobs: dict[str, bytes]) -> set[str]:
        """Store blobs (existing keys are kept); returns the keys now stored."""
        ...

    async def get(self, conn: asyncpg.Connection, keys: Iterable[str]) -> dict[str, bytes]:
        """The blobs that exist among ``keys``."""
        ...

    async def delete(self, conn: asyncpg.Connection, keys: Sequence[str]) -> int:
        """Delete ``keys`` (missing ones are ignored); returns how many were deleted."""
        ...

    async def keys_older_than(self, conn: asyncpg.Connection, moment: datetime) -> list[str]:
        """Keys of blobs written before ``moment`` (garbage collection candidates)."""
        ...


class PostgresBlobStore:
    """Blobs in the ``prompt_blob`` table, written in the caller's transaction."""

    kind = "postgres"

    async def put(self, conn: asyncpg.Connection, blobs: dict[str, bytes]) -> set[str]:
        if blobs:
            keys = list(blobs)
            await conn.execute(
                "INSERT INTO prompt_blob (sha256, content) "
                "SELECT * FROM unnest($1::text[], $2::bytea[]) ON CONFLICT (sha256) DO NOTHING",
                keys, [blobs[k] for k in keys],
            )
        return set(blobs)

    async def get(self, conn: asyncpg.Connection, keys: Iterable[str]) -> dict[str, bytes]:
        wanted = sorted(set(keys))
        if not wanted:
            return {}
        rows = await conn.fetch(
            "SELECT sha256, content FROM prompt_blob WHERE sha256 = ANY($1::text[])", wanted
        )
        return {row["sha256"]: bytes(row["content"]) for row in rows}

    async def delete(self, conn: asyncpg.Connection, keys: Sequence[str]) -> int:
        if not keys:
            return 0
        deleted = await conn.fetch(
            "DELETE FROM prompt_blob WHERE sha256 = ANY($1::text[]) RETURNING 1", list(keys)
        )
        return len(deleted)

    async def keys_older_than(self, conn: asyncpg.Connection, moment: datetime) -> list[str]:
        rows = await conn.fetch("SELECT sha256 FROM prompt_blob WHERE created_at < $1", moment)
        return [row["sha256"] for row in rows]


class FileBlobStore:
    """Blobs as files ``ROOT/ab/cd/<sha256>``; written atomically (temp file + rename).

    The directory must be shared by the proxies (writers) and the admin app and
    CLI (readers, deleters), e.g. one volume mounted by all of them.
    """

    kind = "fs"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        if not is_sha256(key):
            raise ValueError("blob keys are sha256 hex")
        return self.root / key[:2] / key[2:4] / key

    def _write(self, key: str, content: bytes) -> None:
        path = self._path(key)
        if path.exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _put_all(self, blobs: dict[str, bytes]) -> set[str]:
        stored = set()
        for key, content in blobs.items():
            try:
                self._write(key, content)
            except OSError as exc:
                log.warning("prompt blob write failed (%s: %s)", type(exc).__name__, exc.strerror)
                continue
            stored.add(key)
        return stored

    def _read_all(self, keys: Iterable[str]) -> dict[str, bytes]:
        found = {}
        for key in set(keys):
            with contextlib.suppress(FileNotFoundError):
                found[key] = self._path(key).read_bytes()
        return found

    def _delete_all(self, keys: Sequence[str]) -> int:
        deleted = 0
        for key in keys:
            with contextlib.suppress(FileNotFoundError):
                self._path(key).unlink()
                deleted += 1
        return deleted

    def _older(self, moment: datetime) -> list[str]:
        cutoff = moment.timestamp()
        keys = []
        for path in self.root.glob("??/??/*"):
            if is_sha256(path.name) and path.stat().st_mtime < cutoff:
                keys.append(path.name)
        return keys

    async def put(self, conn: asyncpg.Connection, blobs: dict[str, bytes]) -> set[str]:
        return await asyncio.to_thread(self._put_all, blobs)

    async def get(self, conn: asyncpg.Connection, keys: Iterable[str]) -> dict[str, bytes]:
        return await asyncio.to_thread(self._read_all, list(keys))

    async def delete(self, conn: asyncpg.Connection, keys: Sequence[str]) -> int:
        return await asyncio.to_thread(self._delete_all, list(keys))

    async def keys_older_than(self, conn: asyncpg.Connection, moment: datetime) -> list[str]:
        return await asyncio.to_thread(self._older, moment)


def open_blob_store(setting: str) -> BlobStore | None:
    """The store named by ``ABGATE_PROMPT_STORE`` (``Settings.prompt_store``); None for off."""
    if setting == "off":
        return None
    if setting == "postgres":
        return PostgresBlobStore()
    if setting.startswith("fs:") and len(setting) > 3:
        return FileBlobStore(setting[3:])
    raise ValueError("prompt store must be postgres, off or fs:PATH")


@contextlib.asynccontextmanager
async def deleting(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """A transaction in which no blob writer runs: check references, then delete."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _BLOB_LOCK_KEY)
        yield


_REFERENCED_SQL = """
SELECT k FROM unnest($1::text[]) AS k
WHERE EXISTS (SELECT 1 FROM model_experiment_request WHERE system_prompt_sha256 = k)
   OR EXISTS (SELECT 1 FROM model_experiment_request WHERE body_blob_sha256 = k)
"""


async def delete_unreferenced(
    conn: asyncpg.Connection, store: BlobStore, candidates: Iterable[str]
) -> int:
    """Delete the candidate blobs no request row references; returns how many.

    Runs in its own transaction holding the blob lock exclusively (see module doc).
    """
    keys = sorted({k for k in candidates if is_sha256(k)})
    if not keys:
        return 0
    async with deleting(conn):
        referenced = {row["k"] for row in await conn.fetch(_REFERENCED_SQL, keys)}
        orphans = [k for k in keys if k not in referenced]
        return await store.delete(conn, orphans)


# -- the recorder's capture ----------------------------------------------------------


class CapturedRequest(Protocol):
    """What the capture reads from a record (``proxy.records.RequestRecord``).

    The hashes must be those of ``prompt_body`` (whole, before any cap) and
    ``prompt_system``, as ``proxy.evidence.hash_request`` computes them from the
    same bytes: the capture files blobs under them without hashing again.
    """

    system_prompt_sha256: str
    request_body_sha256: str
    was_truncated: bool
    prompt_body: bytes | None
    prompt_system: bytes | None


@dataclass(slots=True)  # per row: not frozen, like Remainder
class Captured:
    """The evidence columns of one request row, as it is to be inserted."""

    system_prompt_sha256: str
    request_body_sha256: str
    body_blob_sha256: str | None  # None: no content stored (the hashes say why)


class PromptCapture:
    """Store each request's evidence in the transaction that inserts its row.

    Two steps, so the CPU work stays outside the transaction: :meth:`plan` (sans
    I/O) cuts each body into its blobs; :meth:`store`, called inside the
    recorder's batch transaction before the rows are inserted, takes the blob lock
    shared, writes the blobs in a savepoint and returns each row's columns. A
    row and the blobs it references therefore commit together: no second write
    of the row, and no window in which a wipe could orphan blobs. Blobs that
    could not be written turn their rows' hashes into ``__failed__``; the rows
    are written all the same.
    """

    def __init__(self, store: BlobStore) -> None:
        self._store = store

    def plan(self, records: Sequence[CapturedRequest]) -> list[Split | None]:
        return [_plan(r) for r in records]

    async def store(
        self,
        conn: asyncpg.Connection,
        records: Sequence[CapturedRequest],
        plans: Sequence[Split | None],
    ) -> list[Captured]:
        """Inside the caller's transaction: write the blobs, return each row's columns."""
        blobs: dict[str, bytes] = {}
        for split_ in plans:
            if split_ is not None:
                blobs[split_.remainder_sha256] = split_.remainder
                if split_.system is not None and split_.system_sha256 is not None:
                    blobs[split_.system_sha256] = split_.system
        stored: set[str] = set()
        if blobs:
            await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", _BLOB_LOCK_KEY)
            stored = await self._put(conn, blobs)
        return [_columns(r, p, stored) for r, p in zip(records, plans, strict=True)]

    @staticmethod
    def count(columns: Sequence[Captured]) -> None:
        """Count committed captures (call once the transaction has committed)."""
        stored = sum(1 for c in columns if c.body_blob_sha256 is not None)
        if stored:
            CAPTURES.labels("stored").inc(stored)
        if len(columns) > stored:
            CAPTURES.labels("failed").inc(len(columns) - stored)

    async def _put(self, conn: asyncpg.Connection, blobs: dict[str, bytes]) -> set[str]:
        try:
            async with conn.transaction():  # a savepoint: a failed put keeps the rows
                return await self._store.put(conn, blobs)
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("prompt blobs could not be stored (%s); marking %d blob(s) failed",
                        type(exc).__name__, len(blobs))
            return set()


def uncaptured(record: CapturedRequest) -> Captured:
    """The columns of a row whose evidence is not stored (prompt store off, or no capture).

    The hashes stay and ``body_blob_sha256`` is empty: readers report such a
    capture as failed, so a lost capture is always visible.
    """
    return Captured(record.system_prompt_sha256, record.request_body_sha256, None)


def _plan(record: CapturedRequest) -> Split | None:
    body = record.prompt_body
    if body is None or not is_sha256(record.request_body_sha256):
        return None
    content, cut = cap_utf8(body)
    truncated = record.was_truncated or cut
    system = record.prompt_system if is_sha256(record.system_prompt_sha256) else None
    # Not hashed again: the record's hashes are of these very bytes (see
    # CapturedRequest), and reading evidence back checks both hashes anyway.
    # Re-hashing here cost ~14% of the proxy's CPU for a 200 KB request.
    return split(
        content,
        system,
        truncated=truncated,
        system_sha256=record.system_prompt_sha256 if system is not None else None,
    )


def _columns(record: CapturedRequest, plan: Split | None, stored: set[str]) -> Captured:
    """The remainder key to reference, or the failure markers when the capture failed."""
    if plan is not None and plan.remainder_sha256 in stored and (
        plan.system_sha256 is None or plan.system_sha256 in stored
    ):
        return Captured(record.system_prompt_sha256, record.request_body_sha256,
                        plan.remainder_sha256)
    system = record.system_prompt_sha256
    return Captured(system if system == ABSENT else FAILED, FAILED, None)


# -- reading ------------------------------------------------------------------------


class EvidenceDeleted(Exception):
    """The request's evidence was wiped (``__deleted__``)."""


class EvidenceUnavailable(Exception):
    """The request's evidence was never captured, or its blobs are gone."""


@dataclass(frozen=True)
class StoredBody:
    content: bytes
    truncated: bool


@dataclass(frozen=True)
class EvidenceRef:
    """The columns of a request row that locate its evidence."""

    request_body_sha256: str
    body_blob_sha256: str | None


async def load_bodies(
    conn: asyncpg.Connection, store: BlobStore | None, refs: Sequence[EvidenceRef]
) -> list[StoredBody | Exception]:
    """Rebuild the sent bodies of ``refs`` with two blob reads for the whole batch.

    Each result is the body, or the exception that explains why there is none:
    :class:`EvidenceDeleted`, :class:`EvidenceUnavailable` or
    :class:`CorruptEvidence` (a blob that does not match its hash).
    """
    remainder_keys = {r.body_blob_sha256 for r in refs if r.body_blob_sha256 is not None}
    remainders = await store.get(conn, remainder_keys) if store is not None else {}
    decoded: dict[str, Remainder | CorruptEvidence] = {}
    for key, blob in remainders.items():
        try:
            if sha256_hex(blob) != key:
                raise CorruptEvidence("a remainder blob does not match its hash")
            decoded[key] = Remainder.decode(blob)
        except CorruptEvidence as exc:
            decoded[key] = exc
    system_keys = {
        r.system for r in decoded.values() if isinstance(r, Remainder) and r.system is not None
    }
    systems = await store.get(conn, system_keys) if store is not None and system_keys else {}
    return [_body_of(ref, decoded, systems) for ref in refs]


def _body_of(
    ref: EvidenceRef,
    decoded: dict[str, Remainder | CorruptEvidence],
    systems: dict[str, bytes],
) -> StoredBody | Exception:
    if ref.request_body_sha256 == DELETED:
        return EvidenceDeleted("the prompt evidence of this request was deleted")
    if ref.request_body_sha256 == FAILED or ref.body_blob_sha256 is None:
        return EvidenceUnavailable("the prompt evidence of this request was not captured")
    remainder = decoded.get(ref.body_blob_sha256)
    if remainder is None:
        return EvidenceUnavailable("the stored prompt evidence of this request is missing")
    if isinstance(remainder, CorruptEvidence):
        return remainder
    system = systems.get(remainder.system) if remainder.system is not None else None
    if remainder.spans and system is None:
        return EvidenceUnavailable("the stored system prompt of this request is missing")
    try:
        content = rebuild(remainder, system)
    except CorruptEvidence as exc:
        return exc
    if not remainder.truncated and sha256_hex(content) != ref.request_body_sha256:
        return CorruptEvidence("the rebuilt body does not match the request's hash")
    return StoredBody(content, remainder.truncated)
