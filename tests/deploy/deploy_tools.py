"""Helpers for the offline deploy checks: locating the external tools, running them, and the
metric names docs/architecture.md fixes for the service."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RULES_FILE = DEPLOY / "prometheus" / "rules" / "rfcls.rules.yml"


def tool(name: str) -> str:
    """The path of an external tool. Missing here it skips the test; in CI (CI=true), where
    .ci/install-tools.sh installs every one of them, a missing tool fails it."""
    path = shutil.which(name)
    if path is None:
        message = f"`{name}` is not installed: run `bash .ci/install-tools.sh` as root"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def run(args: list[str], timeout: float = 120, **kwargs) -> subprocess.CompletedProcess[str]:
    """Runs a tool and fails the test with its output when it exits non-zero."""
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, args))} exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


def check_promql(exprs: dict[str, str], tmp_path: Path) -> None:
    """Parses PromQL expressions with promtool, as recording rules named after their keys."""
    rules = {
        "groups": [{"name": "check", "rules": [{"record": k, "expr": v} for k, v in exprs.items()]}]
    }
    path = tmp_path / "exprs.rules.yml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    run([tool("promtool"), "check", "rules", str(path)])


def contract_metrics() -> dict[str, str]:
    """{metric name: type} from the service-metrics table of docs/architecture.md."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("### service metrics", 1)[1]
    metrics: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2:
            continue
        names = re.findall(r"`(rfcls_\w+)`", cells[0])
        kind = cells[1].split(" ", 1)[0].rstrip(",")
        metrics.update(dict.fromkeys(names, kind))
    assert metrics, "no metrics table found in docs/architecture.md"
    return metrics


HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")
# rfcls metric names, bare or inside a recording rule's level:metric:operation name
METRIC_NAME = re.compile(r"\b(?:[a-z_]+:)?rfcls_[a-z0-9_]+(?::[a-z0-9_]+)?\b")


def recorded_names() -> set[str]:
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    return {r["record"] for g in groups for r in g["rules"] if "record" in r}


def unknown_metrics(exprs: list[str]) -> set[str]:
    """rfcls metric names in `exprs` that are neither series the service exports (per the
    contract) nor names our recording rules produce."""
    exported: set[str] = set()
    for name, kind in contract_metrics().items():
        if kind == "histogram":
            exported.update(name + suffix for suffix in HISTOGRAM_SERIES)
        else:
            exported.add(name)
    known = exported | recorded_names()
    used = {m for e in exprs for m in METRIC_NAME.findall(e)}
    return used - known


def load_yaml_documents(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]
