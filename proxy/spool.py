"""A local, append-only spool of request records for when Postgres is unreachable.

Layout: ``<directory>/<created_ns>-<pid>-<seq>.spool`` files of JSON lines
(:meth:`RequestRecord.to_json`), each with an optional ``<file>.offset`` sidecar
holding how far it has been replayed. Names sort in creation order, so replay
is oldest first.

Ownership: a process holds an exclusive ``flock`` on every file it owns for as
long as it lives, and only ever appends to a file it created. Locks vanish with
their process, so a file that can be locked belongs to a dead process and is
adopted (replayed, never appended to) by whoever locks it first. Unlike a
pid-liveness check this cannot be fooled by pid reuse. The directory must be on
a local filesystem of this host.

Crash safety: a batch is appended with one ``write`` and ``fsync``; a torn
trailing line (the process died mid-write) is skipped and counted. Replay
progress is committed per batch by atomically replacing the sidecar, so a
crash re-sends at most the batch in flight, which the recorder's
``ON CONFLICT DO NOTHING`` inserts absorb.

The methods do blocking file I/O and are thread-safe; the recorder runs the
larger ones in a worker thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from proxy.records import RequestRecord

__all__ = ["Spool", "SpoolCursor"]

log = logging.getLogger(__name__)

_SUFFIX = ".spool"
_OFFSET_SUFFIX = ".offset"
_TMP_PREFIX = ".tmp-"


@dataclass(slots=True)
class _File:
    path: Path
    fd: int  # holds the flock; appends go through it while the file is active
    size: int


@dataclass(frozen=True, slots=True)
class SpoolCursor:
    """Replay position: everything in ``path`` before ``offset`` has been delivered."""

    path: Path
    offset: int


class Spool:
    """Append-only JSON-lines spool with crash-safe, in-order replay."""

    def __init__(self, directory: str, max_bytes: int) -> None:
        self._dir = Path(directory)
        self._dir.mkdir(parents=True, exist_ok=True)
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._sealed: dict[Path, _File] = {}  # replayable, in no particular order
        self._active: _File | None = None
        self._seq = 0
        self._size = 0
        #: Lines skipped because they were torn or unreadable.
        self.corrupt_lines = 0
        self.adopt_orphans()

    @property
    def size_bytes(self) -> int:
        """Bytes on disk in files this spool owns (replayed files are deleted)."""
        return self._size

    @property
    def pending(self) -> bool:
        """True while any owned file still holds records to replay."""
        return self._size > 0

    # ------------------------------------------------------------------ writing

    def append(self, records: Sequence[RequestRecord]) -> int:
        """Write records durably; returns how many were accepted.

        The rest did not fit under ``max_bytes`` (or the disk failed); the
        caller counts and logs them as dropped.
        """
        lines: list[bytes] = []
        for record in records:
            try:
                lines.append(orjson.dumps(record.to_json()) + b"\n")
            except TypeError:
                log.error("record %s cannot be serialised; dropped", record.usage_id)
        with self._lock:
            room = self._max_bytes - self._size
            accepted: list[bytes] = []
            for line in lines:
                if len(line) > room:
                    break
                accepted.append(line)
                room -= len(line)
            if not accepted:
                return 0
            data = b"".join(accepted)
            try:
                active = self._active or self._create_active()
                _write_all(active.fd, data, active.size)
            except OSError as exc:
                log.error("spool write failed (%s); %d records not spooled", exc, len(lines))
                return 0
            active.size += len(data)
            self._size += len(data)
            return len(accepted)

    def _create_active(self) -> _File:
        # Lock under a temporary name, then rename: no other process can ever
        # see (and adopt) an unlocked file of a live process.
        self._seq += 1
        name = f"{time.time_ns():020d}-{os.getpid()}-{self._seq:06d}{_SUFFIX}"
        tmp = self._dir / f"{_TMP_PREFIX}{name}"
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path = self._dir / name
            os.replace(tmp, path)
            _fsync_dir(self._dir)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        self._active = _File(path, fd, 0)
        return self._active

    # ------------------------------------------------------------------ replay

    def replay_batches(
        self, batch_size: int
    ) -> Iterator[tuple[list[RequestRecord], SpoolCursor]]:
        """Yield spooled records oldest first, in batches, each with its cursor.

        Commit each batch's cursor once it is safely stored, before asking for
        the next one; stop iterating after a failure (the next call resumes at
        the last commit). Records appended meanwhile go to a new file that the
        next call replays.
        """
        with self._lock:
            if self._active is not None:
                self._sealed[self._active.path] = self._active
                self._active = None
            files = sorted(self._sealed.values(), key=lambda f: f.path.name)
        for file in files:
            yield from self._replay_file(file, batch_size)

    def _replay_file(
        self, file: _File, batch_size: int
    ) -> Iterator[tuple[list[RequestRecord], SpoolCursor]]:
        start = _read_offset(file.path)
        position = start
        batch: list[RequestRecord] = []
        with open(file.path, "rb") as reader:
            reader.seek(start)
            for line in reader:
                position += len(line)
                record = self._parse(file.path, line)
                if record is not None:
                    batch.append(record)
                if len(batch) >= batch_size:
                    yield batch, SpoolCursor(file.path, position)
                    batch = []
        if batch:
            yield batch, SpoolCursor(file.path, position)
        else:
            # Only unreadable lines (or nothing) after the last batch: finish the file.
            self.commit(SpoolCursor(file.path, position))

    def _parse(self, path: Path, line: bytes) -> RequestRecord | None:
        if not line.endswith(b"\n"):
            self.corrupt_lines += 1
            log.warning("skipping a torn trailing line in spool file %s", path.name)
            return None
        try:
            return RequestRecord.from_json(orjson.loads(line))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            self.corrupt_lines += 1
            log.warning("skipping an unreadable line in spool file %s", path.name)
            return None

    def commit(self, cursor: SpoolCursor) -> None:
        """Record that everything before ``cursor`` is stored; delete finished files."""
        with self._lock:
            file = self._sealed.get(cursor.path)
            if file is None:
                return
            if cursor.offset < file.size:
                _write_offset(cursor.path, cursor.offset)
                return
            # Data file first: a leftover sidecar alone is harmless and cleaned up.
            cursor.path.unlink(missing_ok=True)
            _offset_path(cursor.path).unlink(missing_ok=True)
            os.close(file.fd)
            del self._sealed[cursor.path]
            self._size -= file.size

    # ------------------------------------------------------------------ ownership

    def adopt_orphans(self) -> int:
        """Take over spool files of dead processes; returns how many were adopted."""
        adopted = 0
        with self._lock:
            owned = set(self._sealed)
            if self._active is not None:
                owned.add(self._active.path)
            for path in sorted(self._dir.iterdir()):
                if path in owned:
                    continue
                if path.name.endswith(_SUFFIX) and not path.name.startswith(_TMP_PREFIX):
                    file = _try_lock(path)
                    if file is not None:
                        self._sealed[path] = file
                        self._size += file.size
                        adopted += 1
                else:
                    _remove_if_abandoned(path)
        if adopted:
            log.warning("adopted %d spool file(s) left by stopped processes", adopted)
        return adopted

    def close(self) -> None:
        """Release this process's files (they stay on disk for the next owner)."""
        with self._lock:
            files = list(self._sealed.values())
            if self._active is not None:
                files.append(self._active)
            self._sealed.clear()
            self._active = None
            self._size = 0
        for file in files:
            os.close(file.fd)


def _try_lock(path: Path) -> _File | None:
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        stat = os.fstat(fd)
        # The previous owner may have finished and deleted it before we locked.
        if stat.st_nlink == 0:
            os.close(fd)
            return None
    except BlockingIOError:  # a live process owns it
        os.close(fd)
        return None
    except OSError:
        os.close(fd)
        raise
    return _File(path, fd, stat.st_size)


def _remove_if_abandoned(path: Path) -> None:
    """Clean up a sidecar without its data file, or a temp file of a dead process."""
    for suffix in (_OFFSET_SUFFIX, _OFFSET_SUFFIX + ".tmp"):
        if path.name.endswith(suffix):
            data = path.with_name(path.name[: -len(suffix)])
            if data.name.endswith(_SUFFIX) and not data.exists():
                path.unlink(missing_ok=True)
            return
    if path.name.startswith(_TMP_PREFIX) and path.name.endswith(_SUFFIX):
        file = _try_lock(path)
        if file is not None:  # never renamed, so never written
            path.unlink(missing_ok=True)
            os.close(file.fd)


def _write_all(fd: int, data: bytes, size_before: int) -> None:
    """Append ``data`` and fsync, or undo a partial append and raise."""
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except OSError:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, size_before)
        raise


def _offset_path(path: Path) -> Path:
    return path.with_name(path.name + _OFFSET_SUFFIX)


def _read_offset(path: Path) -> int:
    try:
        return max(0, int(_offset_path(path).read_text()))
    except (FileNotFoundError, ValueError):
        return 0


def _write_offset(path: Path, offset: int) -> None:
    target = _offset_path(path)
    tmp = target.with_name(target.name + ".tmp")
    with open(tmp, "w") as out:
        out.write(str(offset))
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, target)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
