"""The image's build step, without Docker: the wheel the builder stage makes from the
build context (.dockerignore + the Dockerfile's COPY lines) is complete and its CLI
migrates a real database the way the migration Job does."""

from __future__ import annotations

import asyncio
import shutil
import sys
import zipfile
from pathlib import Path

import pytest
from deploy_support import REPO, build_context_files, builder_copy_sources

BUILD_TIMEOUT_S = 300
# Building the wheel sets up an isolated build environment from the package index.
pytestmark = pytest.mark.slow
CLI = "import sys; from abgate.cli import main; sys.exit(main())"


def make_build_context(target: Path) -> None:
    """What the builder stage sees in /src: COPY'd paths, minus what .dockerignore drops."""
    sources = builder_copy_sources()
    for relative in build_context_files():
        if any(relative == s or relative.startswith(s + "/") for s in sources):
            destination = target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / relative, destination)


async def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *args, cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=BUILD_TIMEOUT_S)
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project wheel, built like the Dockerfile's `pip wheel .` (isolated build)."""
    context = tmp_path_factory.mktemp("context")
    out = tmp_path_factory.mktemp("wheels")
    make_build_context(context)
    code, output = asyncio.run(
        run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
            "--wheel-dir", str(out), ".", cwd=context)
    )
    assert code == 0, output
    (built,) = out.glob("abgate-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel installed on its own (its dependencies come from the test venv)."""
    target = tmp_path_factory.mktemp("site")
    code, output = asyncio.run(
        run(sys.executable, "-m", "pip", "install", "--no-deps", "--no-index",
            "--disable-pip-version-check", "--target", str(target), str(wheel), cwd=target)
    )
    assert code == 0, output
    return target


def wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def test_wheel_ships_every_migration_file(wheel: Path) -> None:
    expected = {f"abgate/sql/{p.name}" for p in (REPO / "sql").glob("*.sql")}
    assert expected
    assert expected <= wheel_names(wheel)


def test_wheel_ships_the_proxy_and_admin_packages_and_the_ui(wheel: Path) -> None:
    names = wheel_names(wheel)
    for package in ("abgate", "proxy", "admin"):
        assert f"{package}/__init__.py" in names
    ui = (REPO / "admin" / "static").glob("*")
    static = {f"admin/static/{p.name}" for p in ui if p.is_file()}
    assert static <= names


def test_wheel_declares_the_abgate_console_script(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        (entry_points,) = [n for n in archive.namelist() if n.endswith("entry_points.txt")]
        text = archive.read(entry_points).decode()
    assert "abgate = abgate.cli:main" in text


def installed_env(site: Path, database_url: str) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(site),
        "PYTHONDONTWRITEBYTECODE": "1",
        "ABGATE_DATABASE_URL": database_url,
    }


async def test_installed_cli_is_the_wheel_not_the_checkout(installed: Path) -> None:
    code, output = await run(
        sys.executable, "-c", "import abgate.migrations as m; print(m.__file__)",
        cwd=installed, env=installed_env(installed, "postgresql://unused@127.0.0.1/x"),
    )
    assert code == 0, output
    assert output.strip().startswith(str(installed))


async def test_installed_cli_migrates_an_empty_database_like_the_migration_job(
    installed: Path, empty_database_url: str
) -> None:
    env = installed_env(installed, empty_database_url)
    for step in (["migrate", "up"], ["partitions", "ensure", "--ahead", "3"]):
        code, output = await run(sys.executable, "-c", CLI, *step, cwd=installed, env=env)
        assert code == 0, f"{step}: {output}"
    code, output = await run(sys.executable, "-c", CLI, "migrate", "status",
                             cwd=installed, env=env)
    assert code == 0, output
    versions = sorted({p.name.split("_", 1)[0] for p in (REPO / "sql").glob("*.up.sql")})
    lines = [line.split() for line in output.splitlines() if line.strip()]
    assert [line[0].split("_", 1)[0] for line in lines] == versions, output
    assert all(line[1] == "applied" for line in lines), output
