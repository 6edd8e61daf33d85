"""The Dockerfile and .dockerignore (no Docker engine here: parsed and exercised piecewise)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp import web
from deploy_support import (
    DEPLOY,
    REPO,
    DockerIgnore,
    Instruction,
    build_context_files,
    builder_copy_sources,
    find,
    load_dockerfile,
    load_dockerignore,
    load_one,
    render,
)

IMAGE_UID = "10001"


def healthcheck() -> Instruction:
    (instruction,) = load_dockerfile().final("HEALTHCHECK")
    return instruction


# --------------------------------------------------------------------------- stages and runtime


def test_builder_and_runtime_are_separate_stages_on_python_3_11_slim() -> None:
    dockerfile = load_dockerfile()
    assert len(dockerfile.stages) == 2
    builder, runtime = (dockerfile.resolve(s) for s in dockerfile.stages)
    assert builder == "python:3.11-slim AS builder"
    assert runtime == "python:3.11-slim"


def test_runtime_takes_only_the_built_venv_from_the_builder() -> None:
    dockerfile = load_dockerfile()
    copies = dockerfile.final("COPY")
    assert [c.value for c in copies] == ["--from=builder /opt/abgate /opt/abgate"]
    assert dockerfile.final_env()["PATH"].startswith("/opt/abgate/bin:")


def test_builder_builds_wheels_and_installs_abgate_from_them_offline() -> None:
    (run,) = load_dockerfile().in_stage(0, "RUN")
    assert "pip wheel --wheel-dir /wheels ." in run.value
    assert "install --no-index --find-links /wheels abgate" in run.value
    assert "abgate --help" in run.value, "the build fails if the CLI cannot start"


def test_runtime_runs_as_a_numeric_non_root_user() -> None:
    users = load_dockerfile().final("USER")
    assert users, "the runtime stage must switch away from root"
    uid, _, gid = users[-1].value.partition(":")
    assert uid == IMAGE_UID and gid == IMAGE_UID  # numeric: Kubernetes can verify non-root


def test_user_is_created_with_the_uid_the_manifests_run_as() -> None:
    (run,) = load_dockerfile().final("RUN")
    assert f"--uid {IMAGE_UID}" in run.value
    deployment = find(render(DEPLOY / "overlays" / "example"), "Deployment", "abgate-admin")
    assert str(deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"]) == IMAGE_UID


def test_entrypoint_is_the_cli_and_the_default_command_is_the_proxy() -> None:
    dockerfile = load_dockerfile()
    (entrypoint,) = dockerfile.final("ENTRYPOINT")
    (cmd,) = dockerfile.final("CMD")
    assert entrypoint.exec_form() == ["abgate"]
    assert cmd.exec_form()[0] == "proxy"
    assert cmd.exec_form()[cmd.exec_form().index("--host") + 1] == "0.0.0.0"


def test_exposes_the_proxy_and_admin_ports() -> None:
    (expose,) = load_dockerfile().final("EXPOSE")
    assert expose.value.split() == ["8080", "8081"]


def test_writes_are_confined_to_tmp_and_the_spool_volume() -> None:
    dockerfile = load_dockerfile()
    env = dockerfile.final_env()
    (volume,) = dockerfile.final("VOLUME")
    assert volume.exec_form() == ["/var/lib/abgate"]
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/")
    assert env["HOME"] == "/tmp"
    assert env["ABGATE_SPOOL_DIR"].startswith("/var/lib/abgate/")


def test_spool_default_matches_the_kubernetes_config() -> None:
    config = load_one(DEPLOY / "base" / "configmap.yaml")["data"]
    assert load_dockerfile().final_env()["ABGATE_SPOOL_DIR"] == config["ABGATE_SPOOL_DIR"]


# --------------------------------------------------------------------------- healthcheck


def test_healthcheck_uses_python_stdlib_against_the_health_port() -> None:
    instruction = healthcheck()
    command = instruction.exec_form()
    assert command[:2] == ["python", "-c"]
    assert "urllib.request" in command[2]
    assert "ABGATE_HEALTH_PORT" in command[2] and "/healthz" in command[2]
    assert load_dockerfile().final_env()["ABGATE_HEALTH_PORT"] == "8080"
    options = instruction.options()
    assert {"interval", "timeout", "start-period", "retries"} <= set(options)


def test_compose_and_the_gateway_placeholder_reuse_the_image_healthcheck() -> None:
    code = healthcheck().exec_form()[2]
    compose = load_one(REPO / "docker-compose.yml")
    assert compose["x-healthcheck"]["test"] == ["CMD", "python", "-c", code]
    deployment = find(render(DEPLOY / "overlays" / "example"), "Deployment", "llm-gateway")
    gateway = deployment["spec"]["template"]["spec"]["containers"][0]
    assert gateway["readinessProbe"]["exec"]["command"] == ["python", "-c", code]
    assert gateway["livenessProbe"]["exec"]["command"] == ["python", "-c", code]


@dataclass
class HealthServer:
    port: int
    status: int = 200


@pytest.fixture
async def health_server() -> AsyncIterator[HealthServer]:
    server = HealthServer(port=0)

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(status=server.status, text="ok" if server.status == 200 else "no")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/_mock/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.port = runner.addresses[0][1]
    yield server
    await runner.cleanup()


async def run_healthcheck(port: int, **extra_env: str) -> int:
    code = healthcheck().exec_form()[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABGATE_HEALTH_")}
    env.update(
        ABGATE_HEALTH_PORT=str(port),
        # An inherited proxy setting must not reroute the probe.
        HTTP_PROXY="http://127.0.0.1:9",
        http_proxy="http://127.0.0.1:9",
        **extra_env,
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    return await asyncio.wait_for(process.wait(), timeout=20)


async def test_healthcheck_passes_when_healthz_answers_200(health_server: HealthServer) -> None:
    assert await run_healthcheck(health_server.port) == 0


async def test_healthcheck_fails_when_healthz_answers_503(health_server: HealthServer) -> None:
    health_server.status = 503
    assert await run_healthcheck(health_server.port) == 1


async def test_healthcheck_fails_when_nothing_listens(health_server: HealthServer) -> None:
    port = health_server.port
    # A port just released by a server we own is not listening.
    closed = web.AppRunner(web.Application())
    await closed.setup()
    site = web.TCPSite(closed, "127.0.0.1", 0)
    await site.start()
    free_port = closed.addresses[0][1]
    await closed.cleanup()
    assert free_port != port
    assert await run_healthcheck(free_port) == 1


async def test_healthcheck_follows_the_health_path_override(health_server: HealthServer) -> None:
    assert await run_healthcheck(health_server.port, ABGATE_HEALTH_PATH="/_mock/healthz") == 0
    assert await run_healthcheck(health_server.port, ABGATE_HEALTH_PATH="/nope") == 1


# --------------------------------------------------------------------------- build context


def test_dockerignore_keeps_everything_the_builder_copies() -> None:
    context = build_context_files()
    for source in builder_copy_sources():
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"
        assert any(f == source or f.startswith(source + "/") for f in context), source


def test_dockerignore_keeps_every_packaged_file() -> None:
    context = set(build_context_files())
    packaged = [
        *REPO.glob("abgate/*.py"),
        *REPO.glob("proxy/*.py"),
        *REPO.glob("admin/*.py"),
        *REPO.glob("admin/static/*"),
        *REPO.glob("sql/*.sql"),
        REPO / "pyproject.toml",
        REPO / "README.md",
    ]
    missing = [p.relative_to(REPO).as_posix() for p in packaged
               if p.relative_to(REPO).as_posix() not in context]
    assert not missing


def test_dockerignore_leaves_out_local_state_tests_and_bytecode() -> None:
    ignore = load_dockerignore()
    for path in (
        ".git/config",
        ".venv/bin/python",
        "tests/conftest.py",
        "deploy/base/admin.yaml",
        ".abgate-dev/pg/PG_VERSION",
        "abgate/__pycache__/cli.cpython-311.pyc",
        "proxy/records.pyc",
        "bench/results/run.json",
        "docker-compose.yml",
    ):
        assert ignore.excludes(path), path


def test_dockerignore_matching_follows_docker_rules() -> None:
    ignore = DockerIgnore.parse("*\n!src/\nsrc/**/secret*\n!src/keep/secret.txt\n")
    assert ignore.excludes("README.md")
    assert not ignore.excludes("src/app.py")
    assert ignore.excludes("src/a/b/secret.key")
    assert not ignore.excludes("src/keep/secret.txt")
    assert not DockerIgnore.parse("").excludes("anything")
