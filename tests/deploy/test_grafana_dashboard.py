"""The Grafana dashboard deploy/grafana/abgate-proxy.json."""

from __future__ import annotations

import json
from typing import Any

from deploy_support import DEPLOY, known_metric_names, referenced_metrics

DASHBOARD = DEPLOY / "grafana" / "abgate-proxy.json"

# Every proxy metric an operator looks at has a panel.
PROXY_METRICS = {
    "abgate_requests_total",
    "abgate_request_duration_seconds",
    "abgate_overhead_seconds",
    "abgate_upstream_ttft_seconds",
    "abgate_tokens_total",
    "abgate_config_lookups_total",
    "abgate_config_version",
    "abgate_recorder_rows_total",
    "abgate_recorder_queue_depth",
    "abgate_in_flight_requests",
}


def dashboard() -> dict[str, Any]:
    loaded = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def graph_panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def test_dashboard_loads_with_a_stable_uid_and_title() -> None:
    board = dashboard()
    assert board["uid"] == "abgate-proxy"
    assert board["title"]
    assert isinstance(board["schemaVersion"], int)


def test_every_panel_queries_through_the_datasource_variable() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in graph_panels():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_every_panel_target_reads_only_metrics_abgate_exposes() -> None:
    known = known_metric_names()
    panels = graph_panels()
    assert len(panels) >= 10
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            metrics = referenced_metrics(target["expr"])
            assert metrics, f"{panel['title']}: {target['expr']}"
            assert metrics <= known, f"{panel['title']}: unknown {sorted(metrics - known)}"


def test_every_proxy_metric_has_a_panel() -> None:
    shown = {
        metric
        for panel in graph_panels()
        for target in panel["targets"]
        for metric in referenced_metrics(target["expr"])
    }
    assert shown >= PROXY_METRICS


def test_duration_panel_shows_p50_and_p99() -> None:
    (panel,) = [p for p in graph_panels() if p["title"].startswith("Request duration")]
    exprs = [t["expr"] for t in panel["targets"]]
    assert any(e.startswith("histogram_quantile(0.5,") for e in exprs)
    assert any(e.startswith("histogram_quantile(0.99,") for e in exprs)


def test_variant_panels_split_by_variant() -> None:
    for panel in graph_panels():
        for target in panel["targets"]:
            if referenced_metrics(target["expr"]) & {
                "abgate_upstream_ttft_seconds",
                "abgate_tokens_total",
            }:
                assert "variant" in target["expr"], panel["title"]
                assert "{{variant}}" in target["legendFormat"], panel["title"]


def test_panel_ids_and_target_ref_ids_are_unique() -> None:
    ids = [p["id"] for p in dashboard()["panels"]]
    assert len(ids) == len(set(ids))
    for panel in graph_panels():
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]


def test_panels_do_not_overlap_on_the_grid() -> None:
    taken: set[tuple[int, int]] = set()
    for panel in dashboard()["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, panel["title"]
        taken |= cells
