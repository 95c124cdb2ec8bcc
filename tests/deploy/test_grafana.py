"""The Grafana dashboard: every PromQL expression parses (promtool) and uses only metrics the
service exports or the rules record; the panels the runbook relies on are there; provisioning
points where compose mounts the files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from deploy_tools import DEPLOY, check_promql, unknown_metrics

GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "rfcls.json"
# values Grafana substitutes before a query reaches Prometheus
GRAFANA_INTERVALS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def exprs() -> dict[str, str]:
    """{panel title / refId: PromQL as Prometheus receives it}, template variables substituted."""
    variables = {v["name"] for v in dashboard()["templating"]["list"]}
    found = {}
    for panel in panels():
        for target in panel["targets"]:
            expr = target["expr"]
            for name, value in GRAFANA_INTERVALS.items():
                expr = expr.replace(name, value)
            for name in variables:
                # multi-value variables expand to a regex alternation; .* stands for All
                expr = re.sub(rf"\$\{{?{name}\}}?\b", ".*", expr)
            assert "$" not in expr, f"unsubstituted variable in {panel['title']}: {expr}"
            found[f"{panel['title']} / {target['refId']}"] = expr
    return found


def test_every_panel_expression_is_valid_promql(tmp_path: Path):
    queries = exprs()
    assert len(queries) >= 10
    check_promql({f"dashboard_expr_{k}": e for k, e in enumerate(queries.values())}, tmp_path)


def test_dashboard_uses_only_exported_or_recorded_metrics():
    assert unknown_metrics(list(exprs().values())) == set()


def test_template_variable_queries_use_exported_metrics():
    queries = [
        v["query"]["query"] for v in dashboard()["templating"]["list"] if v["type"] == "query"
    ]
    assert queries and unknown_metrics(queries) == set()


def test_dashboard_shows_what_the_runbook_needs():
    used = " ".join(exprs().values())
    for metric in (
        "backend:rfcls_request_duration_seconds:p50_rate5m",
        "backend:rfcls_request_duration_seconds:p99_rate5m",
        "rfcls_latency_budget_seconds",  # the budget line beside p50/p99
        "backend:rfcls_request_duration_over_budget:ratio_rate5m",
        "rfcls_requests_total",
        "rfcls_batch_size_bucket",
        "rfcls_queue_depth",
        "rfcls_queue_wait_limit_seconds",
        "rfcls_inflight_requests",
        "rfcls_rejections_total",
        "backend:rfcls_requests_failed:ratio_rate5m",
        "rfcls_signal_snr_db_bucket",  # input drift: what the air looks like against training
        "backend:rfcls_signal_snr_above_trained:ratio_rate1h",
        "backend:rfcls_frames_without_signal:ratio_rate1h",
    ):
        assert metric in used, metric
    # per backend: every panel on a backend-labelled metric follows the backend variable
    for title, expr in exprs().items():
        if "rfcls_requests_total" in expr or "rfcls_request_duration" in expr:
            assert 'backend=~".*"' in expr, title


def test_panels_use_the_datasource_variable_and_do_not_overlap():
    seen: set[tuple[int, int]] = set()
    for panel in dashboard()["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        pos = panel["gridPos"]
        cells = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & seen, f"{panel['title']} overlaps another panel"
        assert pos["x"] + pos["w"] <= 24
        seen |= cells
    ids = [p["id"] for p in dashboard()["panels"]]
    assert len(ids) == len(set(ids))


def test_provisioning_matches_the_compose_mounts():
    compose = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    mounts = dict(
        v.rsplit(":", 1)[0].split(":", 1) for v in compose["services"]["grafana"]["volumes"]
    )
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "rfcls.yml").read_text())
    (dashboards_path,) = [p["options"]["path"] for p in provider["providers"]]
    assert mounts["../grafana/dashboards"] == dashboards_path
    assert mounts["../grafana/provisioning"] == "/etc/grafana/provisioning"
    datasources = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"]
    (prometheus,) = datasources
    assert prometheus["type"] == "prometheus"
    assert prometheus["url"] == "http://prometheus:9090"
    assert "prometheus" in compose["services"]
