"""Embedded Postgres and Redis: start, reuse, stop, and recovery from a killed owner."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest
import redis

from abgate.embedded import (
    EmbeddedError,
    EmbeddedServices,
    _as_user,
    _grant_traverse,
    _postgres_install,
    _postgres_user,
    _redis_server_binary,
    start_postgres,
    start_redis,
)

pytestmark = pytest.mark.slow


def _query(dsn: str, sql: str) -> object:
    async def run() -> object:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()

    return asyncio.run(run())


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_gone(pid: int, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _ping(url: str) -> bool:
    with redis.Redis.from_url(url) as client:
        return bool(client.ping())


def _socket_host(dsn: str) -> Path:
    return Path(parse_qs(urlsplit(dsn).query)["host"][0])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One initialized, stopped cluster; tests get copies (initdb takes seconds)."""
    pgdata = tmp_path_factory.mktemp("template") / "pg"
    services = EmbeddedServices()
    start_postgres(pgdata, services, keep=True)
    services.stop()
    return pgdata


@pytest.fixture
def pgdata(cluster: Path, tmp_path: Path) -> Path:
    target = tmp_path / "pg"
    subprocess.run(["cp", "-a", str(cluster), str(target)], check=True)  # keeps the owner
    return target


@pytest.fixture
def services() -> Iterator[EmbeddedServices]:
    started = EmbeddedServices()
    yield started
    started.stop()


def _spawn_detached_postgres(pgdata: Path) -> subprocess.Popen[bytes]:
    """A server on ``pgdata`` that nobody owns, like one left by an older launcher."""
    install = _postgres_install()
    _grant_traverse(pgdata)  # pytest's temporary directories are private
    process = subprocess.Popen(
        [str(install / "bin" / "postgres"), "-D", str(pgdata), "-k", str(pgdata),
         "-c", "listen_addresses="],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/",
        start_new_session=True, **_as_user(_postgres_user()),
    )
    deadline = time.monotonic() + 30
    pid_file = pgdata / "postmaster.pid"
    while not (pid_file.exists()
               and [s.strip() for s in pid_file.read_text().splitlines()[7:8]] == ["ready"]):
        assert time.monotonic() < deadline, "the detached server did not start"
        time.sleep(0.05)
    return process


def test_postgres_data_survives_a_restart_when_kept(
    pgdata: Path, services: EmbeddedServices
) -> None:
    dsn = start_postgres(pgdata, services, keep=True)
    _query(dsn, "CREATE TABLE kept AS SELECT 42 AS answer")
    services.stop()
    dsn = start_postgres(pgdata, services, keep=True)
    assert _query(dsn, "SELECT answer FROM kept") == 42


def test_postgres_not_kept_deletes_its_directory_on_stop(
    pgdata: Path, services: EmbeddedServices
) -> None:
    start_postgres(pgdata, services, keep=False)
    services.stop()
    assert not pgdata.exists()
    assert not pgdata.with_name("pg.lock").exists()


def test_stop_twice_is_harmless(pgdata: Path, services: EmbeddedServices) -> None:
    start_postgres(pgdata, services, keep=True)
    services.stop()
    services.stop()


def test_a_directory_in_use_is_refused_naming_it_and_the_holder(
    pgdata: Path, services: EmbeddedServices
) -> None:
    start_postgres(pgdata, services, keep=True)
    with pytest.raises(EmbeddedError, match=f"{pgdata} is in use by another process "
                                            rf"\(pid {os.getpid()}\)"):
        start_postgres(pgdata, EmbeddedServices(), keep=True)


def test_a_non_empty_directory_without_a_cluster_is_refused(
    tmp_path: Path, services: EmbeddedServices
) -> None:
    (tmp_path / "pg").mkdir()
    (tmp_path / "pg" / "notes.txt").write_text("mine")
    with pytest.raises(EmbeddedError, match="holds no Postgres cluster"):
        start_postgres(tmp_path / "pg", services, keep=True)
    assert (tmp_path / "pg" / "notes.txt").read_text() == "mine"


def test_a_stale_postmaster_pid_of_a_dead_process_is_cleared(
    pgdata: Path, services: EmbeddedServices
) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    (pgdata / "postmaster.pid").write_text(
        f"{dead.pid}\n{pgdata}\n1700000000\n5432\n{pgdata}\n\n  1 2\nready\n"
    )
    dsn = start_postgres(pgdata, services, keep=True)
    assert _query(dsn, "SELECT 1") == 1


def test_a_stale_postmaster_pid_naming_another_live_program_is_cleared(
    pgdata: Path, services: EmbeddedServices
) -> None:
    (pgdata / "postmaster.pid").write_text(
        f"{os.getpid()}\n{pgdata}\n1700000000\n5432\n{pgdata}\n\n  1 2\nready\n"
    )
    dsn = start_postgres(pgdata, services, keep=True)  # and we were not signalled
    assert _query(dsn, "SELECT 1") == 1


def test_a_postgres_left_running_on_the_directory_is_replaced(
    pgdata: Path, services: EmbeddedServices
) -> None:
    leftover = _spawn_detached_postgres(pgdata)
    try:
        dsn = start_postgres(pgdata, services, keep=True)
        assert leftover.wait(timeout=20) == 0  # a fast shutdown, not a kill
        assert _query(dsn, "SELECT pg_backend_pid() > 0") is True
    finally:
        if leftover.poll() is None:
            leftover.kill()
            leftover.wait()


def test_a_long_directory_path_gets_a_short_socket_directory(
    cluster: Path, tmp_path: Path, services: EmbeddedServices
) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60) / "pg"
    deep.parent.mkdir(parents=True)
    subprocess.run(["cp", "-a", str(cluster), str(deep)], check=True)
    dsn = start_postgres(deep, services, keep=True)
    redis_url = start_redis(deep.with_name("redis"), services)
    socket_dir = _socket_host(dsn)
    assert not socket_dir.is_relative_to(deep)
    assert _query(dsn, "SELECT 1") == 1
    assert _ping(redis_url)
    services.stop()
    assert not socket_dir.exists()


def test_servers_stop_when_their_owner_is_killed(tmp_path: Path, cluster: Path) -> None:
    subprocess.run(["cp", "-a", str(cluster), str(tmp_path / "pg")], check=True)
    owner = subprocess.Popen(
        [sys.executable, "-c", (
            "import sys, time\n"
            "from pathlib import Path\n"
            "from abgate.embedded import EmbeddedServices, start_postgres, start_redis\n"
            "s = EmbeddedServices()\n"
            f"start_postgres(Path({str(tmp_path / 'pg')!r}), s, keep=True)\n"
            f"start_redis(Path({str(tmp_path / 'redis')!r}), s)\n"
            "print('up', flush=True)\n"
            "time.sleep(120)\n"
        )],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip() == "up"
        postgres_pid = int((tmp_path / "pg" / "postmaster.pid").read_text().split()[0])
        redis_pid = int((tmp_path / "redis" / "redis.pid").read_text())
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
    assert _wait_gone(postgres_pid)
    assert _wait_gone(redis_pid)


def test_redis_starts_over_a_stale_socket_and_pid_file(
    tmp_path: Path, services: EmbeddedServices
) -> None:
    data = tmp_path / "redis"
    data.mkdir()
    (data / "redis.sock").write_text("")  # a killed run's socket is just a file
    (data / "redis.pid").write_text(str(os.getpid()))  # a pid that is not a redis-server
    url = start_redis(data, services)
    assert _ping(url)


def _leftover_redis(data: Path, *extra: str) -> subprocess.Popen[bytes]:
    """A Redis on ``data``'s socket, as a killed run leaves it, answering once started."""
    socket_path = data / "redis.sock"
    leftover = subprocess.Popen(
        [_redis_server_binary(), "--port", "0", "--unixsocket", str(socket_path),
         "--save", "", "--daemonize", "no", *extra],
        stdout=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.monotonic() + 20
    while not socket_path.exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return leftover


def _assert_replaced(
    data: Path, leftover: subprocess.Popen[bytes], services: EmbeddedServices
) -> None:
    try:
        url = start_redis(data, services)
        assert leftover.wait(timeout=20) == 0
        assert _ping(url)
    finally:
        if leftover.poll() is None:
            leftover.kill()
            leftover.wait()


def test_a_redis_left_running_on_the_directory_is_replaced(
    tmp_path: Path, services: EmbeddedServices
) -> None:
    data = tmp_path / "redis"
    data.mkdir()
    leftover = _leftover_redis(data, "--pidfile", str(data / "redis.pid"))
    _assert_replaced(data, leftover, services)


def test_a_redis_that_has_not_written_its_pid_file_yet_is_replaced(
    tmp_path: Path, services: EmbeddedServices
) -> None:
    data = tmp_path / "redis"
    data.mkdir()
    leftover = _leftover_redis(data)  # no pid file: the moment before Redis writes it
    _assert_replaced(data, leftover, services)


def test_redis_is_memory_only(tmp_path: Path, services: EmbeddedServices) -> None:
    url = start_redis(tmp_path / "redis", services)
    with redis.Redis.from_url(url) as client:
        client.set("k", "v")
    services.stop()
    url = start_redis(tmp_path / "redis", services)
    with redis.Redis.from_url(url) as client:
        assert client.get("k") is None
