"""docker-compose.yml: the laptop stack (no Docker engine here, so checked as data)."""

from __future__ import annotations

from typing import Any

import pytest
from deploy_support import REPO, load_one

from abgate.config import ConfigError, Settings

ABGATE_SERVICES = ("migrate", "gateway", "partner-a", "partner-b", "proxy", "admin")
MOCKS = ("gateway", "partner-a", "partner-b")


def compose() -> dict[str, Any]:
    document = load_one(REPO / "docker-compose.yml")
    assert isinstance(document, dict)
    return document


def services() -> dict[str, dict[str, Any]]:
    return dict(compose()["services"])


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_stack_has_the_databases_the_one_shot_migration_the_apps_and_the_mocks() -> None:
    found = services()
    assert set(found) == {"postgres", "redis", *ABGATE_SERVICES}
    assert found["postgres"]["image"] == "postgres:16"
    assert found["redis"]["image"] == "redis:7"
    for name in ABGATE_SERVICES:
        assert found[name]["image"] == "abgate:local", name
        assert found[name]["build"]["context"] == ".", name


def test_every_long_running_service_has_a_healthcheck() -> None:
    for name, service in services().items():
        if name == "migrate":
            continue
        check = service["healthcheck"]
        assert check["test"][0] == "CMD", name
        assert {"interval", "timeout", "retries"} <= set(check), name


def test_migration_runs_once_after_postgres_is_healthy() -> None:
    migrate = services()["migrate"]
    assert migrate["restart"] == "no"
    assert migrate["healthcheck"] == {"disable": True}
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    script = migrate["entrypoint"][-1]
    assert script == "abgate migrate up && abgate partitions ensure --ahead 3"
    assert migrate["entrypoint"][:2] == ["sh", "-ec"]


@pytest.mark.parametrize("name", ["proxy", "admin"])
def test_apps_start_after_a_successful_migration_and_healthy_dependencies(name: str) -> None:
    depends = services()[name]["depends_on"]
    assert depends["migrate"] == {"condition": "service_completed_successfully"}
    assert depends["redis"] == {"condition": "service_healthy"}


def test_every_health_condition_waits_on_a_service_with_a_healthcheck() -> None:
    found = services()
    for name, service in found.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in found, f"{name} depends on unknown {dependency}"
            if condition["condition"] == "service_healthy":
                assert "test" in found[dependency]["healthcheck"], f"{name} -> {dependency}"


def test_proxy_passes_through_to_the_gateway_mock() -> None:
    found = services()
    proxy_env = found["proxy"]["environment"]
    gateway_port = flag(found["gateway"]["command"], "--port")
    assert proxy_env["ABGATE_GATEWAY_URL"] == f"http://gateway:{gateway_port}"
    assert found["proxy"]["depends_on"]["gateway"] == {"condition": "service_healthy"}


@pytest.mark.parametrize("name", MOCKS)
def test_mock_upstreams_listen_on_all_interfaces_and_are_probed_on_their_port(name: str) -> None:
    service = services()[name]
    command = service["command"]
    assert command[0] == "mock-upstream"
    assert flag(command, "--host") == "0.0.0.0"
    assert service["environment"]["ABGATE_HEALTH_PORT"] == flag(command, "--port")
    assert service["environment"]["ABGATE_HEALTH_PATH"] == "/_mock/healthz"


@pytest.mark.parametrize(("name", "port"), [("proxy", "8080"), ("admin", "8081")])
def test_apps_listen_publish_and_are_probed_on_their_port(name: str, port: str) -> None:
    service = services()[name]
    assert service["command"][0] == name
    assert flag(service["command"], "--port") == port
    assert flag(service["command"], "--host") == "0.0.0.0"
    assert service["ports"] == [f"{port}:{port}"]
    assert service["environment"]["ABGATE_HEALTH_PORT"] == port


def test_partner_mocks_are_distinct_checkpoints() -> None:
    found = services()
    a, b = found["partner-a"]["command"], found["partner-b"]["command"]
    assert flag(a, "--port") != flag(b, "--port")
    assert flag(a, "--model-prefix") != flag(b, "--model-prefix")
    assert flag(a, "--wording") != flag(b, "--wording")


@pytest.mark.parametrize("name", ABGATE_SERVICES)
def test_abgate_containers_run_read_only_with_tmpfs_for_tmp_and_metrics(name: str) -> None:
    service = services()[name]
    assert service["read_only"] is True
    assert {"/tmp", "/tmp/abgate-prometheus"} <= set(service["tmpfs"])
    assert "user" not in service, "the image's non-root user applies"


def test_proxy_spool_lives_on_a_named_volume() -> None:
    document = compose()
    proxy = document["services"]["proxy"]
    (volume,) = proxy["volumes"]
    name, _, mount = volume.partition(":")
    assert name in document["volumes"]
    assert proxy["environment"]["ABGATE_SPOOL_DIR"].startswith(mount + "/")


@pytest.mark.parametrize("name", ["migrate", "proxy", "admin"])
def test_app_environment_is_accepted_by_settings(name: str) -> None:
    env = {k: str(v) for k, v in services()[name]["environment"].items()}
    try:
        settings = Settings.from_env(env)
    except ConfigError as exc:
        pytest.fail(f"{name}: {exc}")
    assert settings.database_url is not None and "@postgres:5432/" in settings.database_url


def test_app_database_credentials_match_the_postgres_service() -> None:
    found = services()
    postgres = found["postgres"]["environment"]
    expected = (
        f"postgresql://{postgres['POSTGRES_USER']}:{postgres['POSTGRES_PASSWORD']}"
        f"@postgres:5432/{postgres['POSTGRES_DB']}"
    )
    for name in ("migrate", "proxy", "admin"):
        assert found[name]["environment"]["ABGATE_DATABASE_URL"] == expected, name


def test_laptop_credentials_are_marked_as_laptop_only() -> None:
    found = services()
    assert "laptop-only" in found["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert "laptop" in found["admin"]["environment"]["ABGATE_ADMIN_TOKEN"]
    assert found["proxy"]["environment"]["ABGATE_ENCRYPTION_KEYS"].startswith("laptop-fake:")
