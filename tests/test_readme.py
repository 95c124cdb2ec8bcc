"""The README's two opening commands are the project's contract with a fresh machine; CI must run
the test command exactly as written there."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```(?:bash|sh)\n(.+?)\n```", text, flags=re.S)[:2]


def test_readme_opens_with_serve_then_test_command():
    serve, test = readme_commands()
    assert "rfcls serve" in serve
    assert "pytest" in test
    assert "torch" not in serve + test or "torch==2.13.0" in serve + test


def test_ci_runs_the_readme_test_command_exactly():
    _, test = readme_commands()
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test in ci_lines


def test_lock_pins_cpu_torch():
    lock = (ROOT / "requirements" / "lock.txt").read_text().splitlines()
    assert "torch==2.13.0" in lock
