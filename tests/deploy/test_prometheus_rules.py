"""Prometheus config and rules: promtool's syntax checks and unit tests, the Kubernetes copy of the
rules, and the metric names every expression uses."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml
from deploy_tools import (
    DEPLOY,
    RULES_FILE,
    check_promql,
    load_yaml_documents,
    run,
    tool,
    unknown_metrics,
)

PROMETHEUS_DIR = DEPLOY / "prometheus"
PROMETHEUSRULE_FILE = DEPLOY / "k8s" / "base" / "prometheusrule.yaml"
ADAPTER_VALUES = DEPLOY / "k8s" / "prometheus-adapter" / "values.yaml"
BUDGET_S = 0.03  # the default RFCLS_LATENCY_BUDGET_MS; the rules' le="0.03" edge depends on it


def rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES_FILE.read_text())["groups"] for r in g["rules"]]


def test_promtool_checks_config_and_the_rule_files_it_loads():
    out = run([tool("promtool"), "check", "config", str(PROMETHEUS_DIR / "prometheus.yml")])
    # the config's rule_files glob must find the rules, or Prometheus would load none
    assert f"SUCCESS: {len(rules())} rules found" in out.stdout + out.stderr


def test_promtool_unit_tests_fire_and_hold_the_alerts():
    tests = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
    assert tests
    run([tool("promtool"), "test", "rules", *map(str, tests)], cwd=PROMETHEUS_DIR)


def test_every_alert_is_unit_tested_both_firing_and_silent():
    alerts = {r["alert"] for r in rules() if "alert" in r}
    firing, silent = set(), set()
    for path in (PROMETHEUS_DIR / "tests").glob("*.yml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check["exp_alerts"] else silent).add(check["alertname"])
    assert alerts - firing == set(), "alerts never shown to fire"
    assert alerts - silent == set(), "alerts never shown to stay silent"


def test_rules_use_only_contract_metrics():
    exprs = [r["expr"] for r in rules()]
    assert unknown_metrics(exprs) == set()


def test_latency_sli_uses_the_bucket_edge_at_the_budget():
    over_budget = [r for r in rules() if "over_budget" in r.get("record", "")]
    assert over_budget
    for rule in over_budget:
        assert re.findall(r'le="([^"]+)"', rule["expr"]) == [str(BUDGET_S)]


def test_input_drift_rules_read_the_top_of_the_trained_snr_range():
    from service.metrics import SNR_BUCKETS_DB, TRAINED_SNR_DB

    top = TRAINED_SNR_DB[1]
    assert top in SNR_BUCKETS_DB  # the histogram has an edge there for the rules to read
    drift = [r for r in rules() if "rfcls_signal_snr_db_bucket" in r["expr"]]
    assert drift
    for rule in drift:
        assert re.findall(r'le="([^"]+)"', rule["expr"]) == [str(top)]
    (alert,) = [r for r in rules() if r.get("alert") == "RfclsInputAboveTrainedSnr"]
    assert f"above {top:g} dB" in alert["annotations"]["description"]


def test_prometheusrule_holds_exactly_the_rules_file():
    (manifest,) = load_yaml_documents(PROMETHEUSRULE_FILE.read_text())
    assert manifest["kind"] == "PrometheusRule"
    assert manifest["spec"] == yaml.safe_load(RULES_FILE.read_text())
    # and the renderer agrees byte for byte, so re-running it after an edit is all it takes
    run([sys.executable, str(PROMETHEUS_DIR / "render_prometheusrule.py"), "--check"])


def test_prometheusrule_passes_promtool_as_a_rules_file(tmp_path: Path):
    (manifest,) = load_yaml_documents(PROMETHEUSRULE_FILE.read_text())
    path = tmp_path / "from-prometheusrule.yml"
    path.write_text(yaml.safe_dump(manifest["spec"], sort_keys=False))
    run([tool("promtool"), "check", "rules", str(path)])


def adapter_rules() -> list[dict]:
    return yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]


def render_adapter_query(rule: dict) -> str:
    """The query prometheus-adapter would send for one pod of the rfcls namespace."""
    series = rule["name"]["matches"].strip("^$")  # each rule matches one series by name
    return (
        rule["metricsQuery"]
        .replace("<<.Series>>", series)
        .replace("<<.LabelMatchers>>", 'namespace="rfcls",pod=~"rfcls-.*"')
        .replace("<<.GroupBy>>", "pod")
    )


def test_prometheus_adapter_queries_are_valid_promql_on_contract_metrics(tmp_path: Path):
    queries = {}
    for k, rule in enumerate(adapter_rules()):
        queries[f"adapter_series_{k}"] = rule["seriesQuery"]
        queries[f"adapter_metric_{k}"] = render_adapter_query(rule)
        assert "<<" not in queries[f"adapter_metric_{k}"], "a template variable was not rendered"
    check_promql(queries, tmp_path)
    assert unknown_metrics(list(queries.values())) == set()
