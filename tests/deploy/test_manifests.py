"""The Kubernetes kit under deploy/: structure, schema, security posture and wiring.

Overlays are rendered by a strict reader of the kustomize subset the kit uses
(deploy_support.render) and validated against the Kubernetes OpenAPI schemas
shipped by the kubernetes-validate package.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from deploy_support import (
    DEPLOY,
    IMAGE_SETTINGS,
    OVERLAYS,
    REPO,
    SECRET_SETTINGS,
    Resource,
    all_containers,
    containers_of,
    find,
    kustomization_dirs,
    load_documents,
    load_one,
    pod_spec,
    pod_template_metadata,
    render,
    selects,
    workloads,
)
from kubernetes_validate import utils as k8s_validate

from abgate.config import ConfigError, Settings

KUBERNETES_VERSION = "1.30.0"
CUSTOM_KINDS = frozenset({"ServiceMonitor", "PrometheusRule"})
LONG_RUNNING = frozenset({"Deployment", "StatefulSet", "DaemonSet"})
SIDECAR = DEPLOY / "overlays" / "example"
STANDALONE = DEPLOY / "overlays" / "example-standalone"

overlays = pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)


def rendered(overlay: Path) -> list[Resource]:
    return render(overlay)


def long_running_containers(resources: list[Resource]) -> list[tuple[str, Resource]]:
    return [
        (f"{r['kind']}/{r['metadata']['name']}/{c['name']}", c)
        for r, spec in workloads(resources)
        if r["kind"] in LONG_RUNNING
        for c in spec["containers"]
    ]


def abgate_role(container: Resource) -> str:
    return str(container.get("args", ["?"])[0])


def example_secret() -> dict[str, str]:
    secret = load_one(SIDECAR / "common" / "secret.yaml")
    return dict(secret["stringData"])


def config_map_data(resources: list[Resource], name: str) -> dict[str, str]:
    return dict(find(resources, "ConfigMap", name)["data"])


def container_environment(resources: list[Resource], container: Resource) -> dict[str, str]:
    """The container's environment as the kubelet would build it from the example objects."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert "configMapRef" in source, "envFrom is only for ConfigMaps"
        env.update(config_map_data(resources, source["configMapRef"]["name"]))
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
            continue
        ref = var["valueFrom"]["secretKeyRef"]
        secret = find(resources, "Secret", ref["name"])
        data = secret.get("stringData", {})
        if ref["key"] in data:
            env[var["name"]] = data[ref["key"]]
        else:
            assert ref.get("optional"), f"{var['name']}: key {ref['key']} missing"
    return env


# --------------------------------------------------------------------------- files and structure


def test_every_yaml_file_in_the_kit_parses() -> None:
    files = [*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml"), REPO / "docker-compose.yml"]
    assert len(files) >= 20
    for path in files:
        documents = load_documents(path)
        assert documents, f"{path} has no YAML document"
        assert all(isinstance(doc, dict) for doc in documents), path


def test_every_resource_a_kustomization_lists_exists() -> None:
    dirs = kustomization_dirs()
    assert {d.relative_to(DEPLOY).as_posix() for d in dirs} >= {
        "base",
        "sidecar",
        "standalone",
        "overlays/example",
        "overlays/example-standalone",
    }
    for directory in dirs:
        kustomization = load_one(directory / "kustomization.yaml")
        assert kustomization["kind"] == "Kustomization"
        for entry in kustomization["resources"]:
            target = directory / entry
            assert target.is_file() or (target / "kustomization.yaml").is_file(), (
                f"{directory.relative_to(REPO)} lists {entry}, which does not exist"
            )


def test_every_manifest_file_is_listed_by_its_kustomization() -> None:
    for directory in kustomization_dirs():
        listed = set(load_one(directory / "kustomization.yaml")["resources"])
        for path in directory.glob("*.yaml"):
            if path.name != "kustomization.yaml":
                assert path.name in listed, f"{path.relative_to(REPO)} is never deployed"


def test_the_renderer_refuses_a_kustomization_field_it_does_not_understand(
    tmp_path: Path,
) -> None:
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources: []\npatches: []\n"
    )
    with pytest.raises(ValueError, match="patches"):
        render(tmp_path)


@overlays
def test_overlay_renders_each_resource_once(overlay: Path) -> None:
    keys = [(r["kind"], r["metadata"]["name"]) for r in rendered(overlay)]
    assert len(keys) == len(set(keys)), sorted(keys)


@overlays
def test_overlay_puts_every_namespaced_resource_in_its_namespace(overlay: Path) -> None:
    resources = rendered(overlay)
    namespaces = {r["metadata"]["name"] for r in resources if r["kind"] == "Namespace"}
    assert namespaces == {"abgate"}
    for resource in resources:
        if resource["kind"] != "Namespace":
            assert resource["metadata"]["namespace"] == "abgate", resource["metadata"]["name"]


@overlays
def test_overlay_deploys_admin_proxy_jobs_and_monitoring(overlay: Path) -> None:
    kinds = {r["kind"] for r in rendered(overlay)}
    assert kinds >= {
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "Job",
        "CronJob",
        "ConfigMap",
        "Secret",
        "ServiceAccount",
        "ServiceMonitor",
        "PrometheusRule",
    }


# --------------------------------------------------------------------------- schema


@overlays
def test_built_in_resources_pass_the_kubernetes_schema_strictly(overlay: Path) -> None:
    for resource in rendered(overlay):
        if resource["kind"] in CUSTOM_KINDS:
            continue
        try:
            k8s_validate.validate(resource, KUBERNETES_VERSION, strict=True)
        except k8s_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{resource['kind']}/{resource['metadata']['name']}: {path}: {exc.message}")


def test_schema_validation_rejects_an_unknown_field() -> None:
    resource = find(rendered(SIDECAR), "Deployment", "abgate-admin")
    resource["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    with pytest.raises(k8s_validate.ValidationError):
        k8s_validate.validate(resource, KUBERNETES_VERSION, strict=True)


@overlays
def test_service_monitors_scrape_metrics_from_a_named_port_of_a_selected_service(
    overlay: Path,
) -> None:
    resources = rendered(overlay)
    monitors = [r for r in resources if r["kind"] == "ServiceMonitor"]
    assert {m["metadata"]["name"] for m in monitors} == {"abgate-admin", "abgate-proxy"}
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        services = [
            s
            for s in resources
            if s["kind"] == "Service"
            and selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
        ]
        assert len(services) == 1, monitor["metadata"]["name"]
        port_names = {p["name"] for p in services[0]["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in port_names
            assert endpoint["path"] == "/metrics"


# --------------------------------------------------------------------------- probes


@overlays
def test_every_long_running_container_has_readiness_and_liveness_probes(overlay: Path) -> None:
    for name, container in long_running_containers(rendered(overlay)):
        assert "readinessProbe" in container, name
        assert "livenessProbe" in container, name


@overlays
def test_abgate_servers_are_ready_on_readyz_and_live_on_healthz_of_their_port(
    overlay: Path,
) -> None:
    servers = [
        (n, c) for n, c in long_running_containers(rendered(overlay))
        if abgate_role(c) in ("proxy", "admin")
    ]
    assert {abgate_role(c) for _, c in servers} == {"proxy", "admin"}
    for name, container in servers:
        port = container["args"][container["args"].index("--port") + 1]
        ports = {p["name"]: str(p["containerPort"]) for p in container["ports"]}
        readiness = container["readinessProbe"]["httpGet"]
        liveness = container["livenessProbe"]["httpGet"]
        assert readiness["path"] == "/readyz", name
        assert liveness["path"] == "/healthz", name
        assert ports[readiness["port"]] == port and ports[liveness["port"]] == port, name


def test_the_loopback_gateway_placeholder_is_probed_from_inside_the_pod() -> None:
    gateway = next(
        c for c in find(rendered(SIDECAR), "Deployment", "llm-gateway")["spec"]["template"][
            "spec"]["containers"] if c["name"] == "gateway"
    )
    env = {e["name"]: e["value"] for e in gateway["env"]}
    assert gateway["args"][gateway["args"].index("--host") + 1] == "127.0.0.1"
    assert env["ABGATE_HEALTH_PORT"] == gateway["args"][gateway["args"].index("--port") + 1]
    assert env["ABGATE_HEALTH_PATH"] == "/_mock/healthz"
    for probe in ("readinessProbe", "livenessProbe"):
        assert gateway[probe]["exec"]["command"][:2] == ["python", "-c"]


# --------------------------------------------------------------------------- security posture


@overlays
def test_every_pod_runs_as_the_image_user_and_never_as_root(overlay: Path) -> None:
    for resource, spec in workloads(rendered(overlay)):
        pod = spec["securityContext"]
        name = resource["metadata"]["name"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["runAsUser"] == 10001 and pod["runAsGroup"] == 10001, name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name


@overlays
def test_every_container_has_a_read_only_root_and_no_capabilities(overlay: Path) -> None:
    containers = list(all_containers(rendered(overlay)))
    assert len(containers) >= 5
    for container in containers:
        context = container["securityContext"]
        assert context["runAsNonRoot"] is True, container["name"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["capabilities"]["drop"] == ["ALL"], container["name"]
        assert "add" not in context["capabilities"], container["name"]


@overlays
def test_every_container_writes_only_to_empty_dir_volumes(overlay: Path) -> None:
    for resource, spec in workloads(rendered(overlay)):
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert all("emptyDir" in v for v in volumes.values()), resource["metadata"]["name"]
        for container in containers_of(spec):
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert "/tmp" in mounts, container["name"]
            assert set(mounts.values()) <= set(volumes), container["name"]


@overlays
def test_abgate_servers_mount_their_metrics_dir_and_the_proxy_its_spool(overlay: Path) -> None:
    resources = rendered(overlay)
    config = config_map_data(resources, "abgate-config")
    for name, container in long_running_containers(resources):
        role = abgate_role(container)
        if role not in ("proxy", "admin"):
            continue
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/tmp/abgate-prometheus" in mounts, name
        if role == "proxy":
            assert config["ABGATE_SPOOL_DIR"] in mounts, name


@overlays
def test_every_container_requests_cpu_and_memory_and_caps_memory(overlay: Path) -> None:
    for container in all_containers(rendered(overlay)):
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]), container["name"]
        assert "memory" in resources["limits"], container["name"]


@overlays
def test_every_container_runs_the_overlay_image(overlay: Path) -> None:
    images = {c["image"] for c in all_containers(rendered(overlay))}
    assert images == {"registry.example.com/abgate:0.1.0"}


# --------------------------------------------------------------------------- config and secrets


@overlays
def test_secret_settings_come_only_from_secret_key_refs(overlay: Path) -> None:
    resources = rendered(overlay)
    for container in all_containers(resources):
        for source in container.get("envFrom", []):
            assert "secretRef" not in source, container["name"]
        for var in container.get("env", []):
            if var["name"] in SECRET_SETTINGS:
                assert "value" not in var, var["name"]
                assert set(var["valueFrom"]) == {"secretKeyRef"}, var["name"]
                assert var["valueFrom"]["secretKeyRef"]["name"] == "abgate-secrets"
    for config_map in (r for r in resources if r["kind"] == "ConfigMap"):
        assert not set(config_map["data"]) & SECRET_SETTINGS


@overlays
def test_every_required_secret_key_exists_in_the_example_secret(overlay: Path) -> None:
    keys = set(example_secret())
    for container in all_containers(rendered(overlay)):
        for var in container.get("env", []):
            ref = var.get("valueFrom", {}).get("secretKeyRef")
            if ref and not ref.get("optional"):
                assert ref["key"] in keys, f"{container['name']}: {ref['key']}"


def test_example_secret_values_are_obvious_placeholders() -> None:
    secret = load_one(SIDECAR / "common" / "secret.yaml")
    text = (SIDECAR / "common" / "secret.yaml").read_text()
    assert "FAKE PLACEHOLDER VALUES" in text
    assert "data" not in secret, "base64 data would hide what the values are"
    for key, value in secret["stringData"].items():
        if key == "encryption-keys":
            assert value.startswith("example-fake:"), key
        else:
            assert "CHANGE-ME" in value, key


def test_every_abgate_variable_in_the_kit_is_a_known_setting() -> None:
    config_source = (REPO / "abgate" / "config.py").read_text()
    known = set(re.findall(r"ABGATE_[A-Z_]+", config_source)) | IMAGE_SETTINGS
    files = [*DEPLOY.rglob("*.yaml"), REPO / "docker-compose.yml", REPO / "Dockerfile"]
    used = {name for path in files for name in re.findall(r"ABGATE_[A-Z_]+", path.read_text())}
    assert used, "the kit sets no ABGATE_ variable at all"
    assert used <= known, f"not read by abgate: {sorted(used - known)}"


@overlays
def test_example_environment_of_every_container_is_accepted_by_settings(overlay: Path) -> None:
    resources = rendered(overlay)
    for container in all_containers(resources):
        env = container_environment(resources, container)
        try:
            Settings.from_env(env, require_database=abgate_role(container) != "mock-upstream")
        except ConfigError as exc:
            pytest.fail(f"{container['name']}: {exc}")


def test_settings_reject_the_example_environment_with_a_broken_key() -> None:
    resources = rendered(SIDECAR)
    admin = find(resources, "Deployment", "abgate-admin")["spec"]["template"]["spec"][
        "containers"][0]
    env = container_environment(resources, admin)
    env["ABGATE_ENCRYPTION_KEYS"] = "example-fake:dG9vLXNob3J0"
    with pytest.raises(ConfigError, match="ABGATE_ENCRYPTION_KEYS"):
        Settings.from_env(env)


# --------------------------------------------------------------------------- wiring


def test_sidecar_service_sends_clients_to_the_proxy_not_the_gateway() -> None:
    resources = rendered(SIDECAR)
    deployment = find(resources, "Deployment", "llm-gateway")
    service = find(resources, "Service", "llm-gateway")
    spec = deployment["spec"]["template"]["spec"]
    by_name = {c["name"]: c for c in spec["containers"]}
    proxy = by_name["abgate-proxy"]
    assert abgate_role(proxy) == "proxy"
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selects(service["spec"]["selector"], pod_labels)
    proxy_ports = {p["name"]: p["containerPort"] for p in proxy["ports"]}
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in proxy_ports
        assert proxy_ports[port["targetPort"]] == 8080
    gateway = by_name["gateway"]
    assert "ports" not in gateway, "the gateway must not be reachable around the proxy"
    gateway_url = {e["name"]: e.get("value") for e in proxy["env"]}["ABGATE_GATEWAY_URL"]
    gateway_port = gateway["args"][gateway["args"].index("--port") + 1]
    assert gateway_url == f"http://127.0.0.1:{gateway_port}"


def test_standalone_proxy_has_its_own_deployment_and_service() -> None:
    resources = rendered(STANDALONE)
    assert not [r for r in resources if r["metadata"]["name"] == "llm-gateway"]
    deployment = find(resources, "Deployment", "abgate-proxy")
    service = find(resources, "Service", "abgate-proxy")
    (proxy,) = deployment["spec"]["template"]["spec"]["containers"]
    assert abgate_role(proxy) == "proxy"
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selects(service["spec"]["selector"], pod_labels)
    assert service["spec"]["ports"][0]["targetPort"] == proxy["ports"][0]["name"]
    gateway_url = {e["name"]: e.get("value") for e in proxy["env"]}["ABGATE_GATEWAY_URL"]
    assert not gateway_url.startswith("http://127.0.0.1")


@overlays
def test_services_and_disruption_budgets_select_pods_of_exactly_one_deployment(
    overlay: Path,
) -> None:
    resources = rendered(overlay)
    deployments = [r for r in resources if r["kind"] == "Deployment"]

    def matching(selector: dict[str, str]) -> list[str]:
        return [
            d["metadata"]["name"]
            for d in deployments
            if selects(selector, d["spec"]["template"]["metadata"]["labels"])
        ]

    for service in (r for r in resources if r["kind"] == "Service"):
        assert len(matching(service["spec"]["selector"])) == 1, service["metadata"]["name"]
    budgets = [r for r in resources if r["kind"] == "PodDisruptionBudget"]
    assert len(budgets) == len(deployments)
    for budget in budgets:
        assert len(matching(budget["spec"]["selector"]["matchLabels"])) == 1
    for deployment in deployments:
        assert deployment["spec"]["replicas"] >= 2, "a PDB over one replica blocks drains"


@overlays
def test_the_proxy_is_autoscaled_on_cpu(overlay: Path) -> None:
    resources = rendered(overlay)
    (hpa,) = [r for r in resources if r["kind"] == "HorizontalPodAutoscaler"]
    target = find(resources, "Deployment", hpa["spec"]["scaleTargetRef"]["name"])
    roles = {abgate_role(c) for c in target["spec"]["template"]["spec"]["containers"]}
    assert "proxy" in roles
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert hpa["spec"]["minReplicas"] >= 2


@overlays
def test_termination_grace_covers_the_pre_stop_pause_and_the_drain(overlay: Path) -> None:
    resources = rendered(overlay)
    drain = float(config_map_data(resources, "abgate-config")["ABGATE_DRAIN_S"])
    for resource, spec in workloads(resources):
        for container in spec["containers"]:
            if abgate_role(container) != "proxy":
                continue
            pause = float(container["lifecycle"]["preStop"]["exec"]["command"][1])
            assert spec["terminationGracePeriodSeconds"] > pause + drain, resource["metadata"]


def test_migration_job_applies_migrations_before_ensuring_partitions() -> None:
    job = find(rendered(SIDECAR), "Job", "abgate-migrate")
    spec = job["spec"]["template"]["spec"]
    assert [c["args"] for c in spec["initContainers"]] == [["migrate", "up"]]
    assert [c["args"] for c in spec["containers"]] == [["partitions", "ensure", "--ahead", "3"]]
    assert spec["restartPolicy"] == "Never"
    assert job["spec"]["backoffLimit"] >= 1


def test_cron_job_keeps_partitions_three_months_ahead_without_overlapping_runs() -> None:
    cron = find(rendered(SIDECAR), "CronJob", "abgate-partitions")
    spec = pod_spec(cron)
    assert spec is not None
    assert [c["args"] for c in spec["containers"]] == [["partitions", "ensure", "--ahead", "3"]]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert len(cron["spec"]["schedule"].split()) == 5


@overlays
def test_abgate_server_pods_carry_scrape_annotations_for_their_metrics_port(
    overlay: Path,
) -> None:
    resources = rendered(overlay)
    for resource, spec in workloads(resources):
        servers = [c for c in spec["containers"] if abgate_role(c) in ("proxy", "admin")]
        if not servers:
            continue
        annotations: dict[str, Any] = pod_template_metadata(resource)["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/path"] == "/metrics"
        ports = {str(p["containerPort"]) for c in servers for p in c["ports"]}
        assert annotations["prometheus.io/port"] in ports
