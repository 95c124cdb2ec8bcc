"""Every YAML file under deploy/ passes yamllint with deploy/.yamllint, warnings included."""

from __future__ import annotations

from deploy_tools import DEPLOY, run, tool


def test_yamllint_strict_on_deploy():
    files = sorted(
        str(p) for p in DEPLOY.rglob("*") if p.suffix in {".yml", ".yaml"} and p.is_file()
    )
    assert len(files) >= 10
    run([tool("yamllint"), "--strict", "-c", str(DEPLOY / ".yamllint"), *files])
