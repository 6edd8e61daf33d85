"""Alert rules: deploy/prometheus/alerts.yml and its PrometheusRule twin.

promtool (Debian package ``prometheus``) checks the rule syntax and runs the
rule unit tests in deploy/prometheus/alerts.test.yml.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from deploy_support import (
    DEPLOY,
    code_metric_names,
    known_metric_names,
    load_one,
    referenced_metrics,
)

ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus" / "alerts.test.yml"
PROMETHEUS_RULE = DEPLOY / "base" / "prometheusrule.yaml"

# The conditions operators must be paged for, by the metric that shows each.
REQUIRED_ALERTS = {
    "AbgateExperimentSRMFailing": "abgate_experiment_srm_ok",
    "AbgateRecorderSpilling": "abgate_recorder_rows_total",
    "AbgateRecorderDropping": "abgate_recorder_rows_total",
    "AbgateConfigPropagationStale": "abgate_routing_last_sync_age_seconds",
    "AbgateVariantErrorRateHigh": "abgate_requests_total",
    "AbgateProxyOverheadP99High": "abgate_overhead_seconds",
}


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool not found: apt-get install prometheus (Debian package)"
    return path


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], capture_output=True, text=True, timeout=60, check=False
    )


def alert_rules() -> dict[str, dict[str, object]]:
    groups = load_one(ALERTS)["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


def test_prometheus_rule_carries_exactly_the_groups_of_alerts_yml() -> None:
    rule = load_one(PROMETHEUS_RULE)
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == load_one(ALERTS)["groups"]


def test_every_required_alert_exists_and_watches_its_metric() -> None:
    rules = alert_rules()
    assert set(rules) == set(REQUIRED_ALERTS)
    for name, metric in REQUIRED_ALERTS.items():
        assert metric in referenced_metrics(str(rules[name]["expr"])), name


def test_every_alert_expression_reads_only_metrics_abgate_exposes() -> None:
    known = known_metric_names()
    for name, rule in alert_rules().items():
        metrics = referenced_metrics(str(rule["expr"]))
        assert metrics, f"{name} reads no abgate metric"
        assert metrics <= known, f"{name}: unknown {sorted(metrics - known)}"


def test_the_proxy_and_admin_metrics_the_kit_relies_on_exist_in_the_code() -> None:
    in_code = code_metric_names()
    assert {
        "abgate_requests_total",
        "abgate_request_duration_seconds",
        "abgate_upstream_ttft_seconds",
        "abgate_overhead_seconds",
        "abgate_in_flight_requests",
        "abgate_tokens_total",
        "abgate_config_lookups_total",
        "abgate_config_version",
        "abgate_recorder_rows_total",
        "abgate_recorder_queue_depth",
        "abgate_admin_requests_total",
        "abgate_admin_publish_failures_total",
    } <= set(in_code)
    assert in_code["abgate_overhead_seconds"] == "histogram"


def test_a_misspelled_metric_is_reported_as_unknown() -> None:
    assert referenced_metrics("rate(abgate_request_total[5m])") == {"abgate_request_total"}
    assert "abgate_request_total" not in known_metric_names()


def test_histogram_series_count_as_their_metric() -> None:
    expr = "histogram_quantile(0.99, sum by (le) (rate(abgate_overhead_seconds_bucket[5m])))"
    assert referenced_metrics(expr) == {"abgate_overhead_seconds"}


def test_every_alert_has_a_severity_a_summary_and_a_description() -> None:
    for name, rule in alert_rules().items():
        labels = rule["labels"]
        annotations = rule["annotations"]
        assert isinstance(labels, dict) and labels["severity"] in ("warning", "critical"), name
        assert isinstance(annotations, dict), name
        assert annotations["summary"] and annotations["description"], name


def test_evidence_loss_pages_as_critical() -> None:
    labels = alert_rules()["AbgateRecorderDropping"]["labels"]
    assert isinstance(labels, dict) and labels["severity"] == "critical"


def test_alerts_yml_passes_promtool_check_rules() -> None:
    result = run_promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_rule_spec_passes_promtool_check_rules(tmp_path: Path) -> None:
    spec = tmp_path / "prometheusrule-spec.yml"
    spec.write_text(yaml.safe_dump(load_one(PROMETHEUS_RULE)["spec"]))
    result = run_promtool("check", "rules", str(spec))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rejects_a_broken_expression(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "groups:\n  - name: x\n    rules:\n"
        "      - alert: Broken\n        expr: rate(abgate_requests_total[5m] > 0\n"
    )
    assert run_promtool("check", "rules", str(broken)).returncode != 0


def test_alert_unit_tests_pass_promtool_test_rules() -> None:
    result = run_promtool("test", "rules", str(ALERT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_unit_tests_cover_every_alert() -> None:
    tested = {
        case["alertname"]
        for test in load_one(ALERT_TESTS)["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert tested == set(alert_rules())


@pytest.mark.parametrize(
    ("alert", "mutation"),
    [
        ("AbgateVariantErrorRateHigh", ("> 0.05", "> 0.5")),
        ("AbgateProxyOverheadP99High", ("> 0.005", "> 0.05")),
        ("AbgateExperimentSRMFailing", ("== 0", "== 1")),
    ],
)
def test_alert_unit_tests_fail_when_a_threshold_changes(
    tmp_path: Path, alert: str, mutation: tuple[str, str]
) -> None:
    document = load_one(ALERTS)
    for group in document["groups"]:
        for rule in group["rules"]:
            if rule["alert"] == alert:
                assert mutation[0] in rule["expr"]
                rule["expr"] = rule["expr"].replace(*mutation)
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(document))
    (tmp_path / "alerts.test.yml").write_text(ALERT_TESTS.read_text())
    result = run_promtool("test", "rules", str(tmp_path / "alerts.test.yml"))
    assert result.returncode != 0
    assert alert in result.stdout + result.stderr
