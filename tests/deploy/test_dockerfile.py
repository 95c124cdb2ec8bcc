"""The Dockerfile and its build context, checked without a Docker engine: hadolint, the runtime
contract (user, signals, health check, settings), the torch pin, and what the context sends."""

from __future__ import annotations

import http.server
import json
import os
import re
import subprocess
import sys
import threading
import tomllib

import pytest
from deploy_tools import ROOT, run, tool

DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (k, _) in enumerate(steps) if k == "FROM")
    return steps[last_from:]


def only(stage: list[tuple[str, str]], keyword: str) -> str:
    (value,) = [v for k, v in stage if k == keyword]
    return value


def build_args() -> dict[str, str]:
    return dict(v.split("=", 1) for k, v in instructions() if k == "ARG" and "=" in v)


def test_hadolint_is_clean():
    run([tool("hadolint"), str(DOCKERFILE)])


def test_hadolint_can_fail():
    """hadolint runs with its default failure threshold, so a warning fails it."""
    result = subprocess.run(
        [tool("hadolint"), "-"], input="FROM python\n", capture_output=True, text=True
    )
    assert result.returncode != 0 and "DL3006" in result.stdout


def test_multi_stage_on_slim_python_311():
    froms = [v for k, v in instructions() if k == "FROM"]
    assert len(froms) >= 2
    assert all(f.startswith("${PYTHON_IMAGE}") for f in froms)
    assert re.fullmatch(r"python:3\.11[.\d]*-slim(-\w+)?", build_args()["PYTHON_IMAGE"])
    python = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert python == ">=3.11"


def test_torch_build_arg_matches_the_lock():
    lock = (ROOT / "requirements" / "lock.txt").read_text().splitlines()
    (pin,) = [line for line in lock if line.startswith("torch==")]
    assert build_args()["TORCH_VERSION"] == pin.removeprefix("torch==")
    assert build_args()["TORCH_VARIANT"] == "cpu"
    install = [v for k, v in instructions() if k == "RUN" and "--constraint" in v]
    assert install and "requirements/lock.txt" in install[0]


def test_runtime_stage_contract():
    stage = final_stage()
    assert only(stage, "USER") == "10001:10001"
    # exec form, so SIGTERM reaches the server itself rather than a shell
    assert json.loads(only(stage, "ENTRYPOINT")) == ["rfcls"]
    assert json.loads(only(stage, "CMD")) == ["serve"]
    env = " ".join(v for k, v in stage if k == "ENV")
    assert "RFCLS_HOST=0.0.0.0" in env.split()
    assert "HOME=/tmp" in env.split()
    healthcheck = only(stage, "HEALTHCHECK")
    command = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert command[:2] == ["python", "-c"] and "/healthz/ready" in command[2]
    assert "EXPOSE" in {k for k, _ in stage}


@pytest.mark.parametrize("status", [200, 503])
def test_healthcheck_command_follows_readiness(status: int):
    """The HEALTHCHECK's own Python line, run against a stub that answers `status`."""

    class Probe(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(status if self.path == "/healthz/ready" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Probe)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        command = json.loads(only(final_stage(), "HEALTHCHECK").split(" CMD ", 1)[1])
        env = {**os.environ, "RFCLS_PORT": str(server.server_address[1])}
        result = subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True)
    finally:
        server.shutdown()
    assert (result.returncode == 0) == (status == 200)


def dockerignore_excludes(path: str) -> bool:
    """Docker's rule: the last matching pattern wins, `!` re-includes, and a pattern matching a
    directory applies to everything under it; `*` stays within one path element, `**` spans."""
    excluded = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(re.fullmatch(regex, p) for p in prefixes):
            excluded = not negate
    return excluded


def copied_paths() -> set[str]:
    return {v.split()[0] for k, v in instructions() if k == "COPY" and not v.startswith("--from")}


def test_context_sends_the_packages_the_lock_and_the_weights():
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]["find"]["include"]
    for pattern in packages:
        package = pattern.rstrip("*")
        assert package in copied_paths(), f"{package} is installed but not copied"
        assert not dockerignore_excludes(f"{package}/__init__.py")
    for needed in (
        "pyproject.toml",
        "README.md",  # pyproject's readme: the build reads it
        "requirements/lock.txt",
        "rfmodel/weights/mha-rmsnorm/model.safetensors",
        "rfmodel/weights/mha-rmsnorm/config.json",
    ):
        assert not dockerignore_excludes(needed), needed
    for left_out in (
        ".venv/bin/python",
        ".git/HEAD",
        "tests/test_readme.py",
        "runs/mha/checkpoint.pt",
        "rfmodel/__pycache__/bundle.cpython-311.pyc",
        "deploy/k8s/base/deployment.yaml",
    ):
        assert dockerignore_excludes(left_out), left_out


def test_a_cuda_image_has_the_c_compiler_triton_needs_and_a_cpu_image_does_not_pay_for_it():
    runs = [v for k, v in final_stage() if k == "RUN" and "gcc" in v]
    assert len(runs) == 1
    assert '"${TORCH_VARIANT}" != cpu' in runs[0] and "libc6-dev" in runs[0]


def test_dependencies_are_installed_before_the_code_is_copied():
    """Their layer then stays cached when only the code changes; the project's own install adds
    nothing to it (`--no-deps`), and `pip check` still checks the whole set."""
    steps = instructions()
    packages = {"preprocessing", "rfmodel", "service", "benchmarks"}
    first_code = min(
        i for i, (k, v) in enumerate(steps) if k == "COPY" and v.split()[0] in packages
    )
    installs = [(i, v) for i, (k, v) in enumerate(steps) if k == "RUN" and "pip install" in v]
    dependencies = [i for i, v in installs if "--requirement" in v and "--constraint" in v]
    assert dependencies and dependencies[0] < first_code
    (project,) = [v for i, v in installs if i > first_code]
    assert "--no-deps" in project and "pip check" in project
