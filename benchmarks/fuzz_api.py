"""The long fuzz run: schemathesis generates requests for every operation of the service's own
OpenAPI schema and sends them to the real server (`rfcls serve`, a subprocess).

    python -m benchmarks.fuzz_api                      # 500 examples per operation
    python -m benchmarks.fuzz_api --examples 5000 --seed 1

CI runs the bounded version (tests/service/test_fuzz_api.py, 25 examples per operation). Fails
(exit 1) on any 5xx, on a response that breaks the schema of a status the schema documents, or on
an error body that is not the protocol's JSON error; prints each failing request to reproduce.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

import httpx
import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from schemathesis.checks import Failure, FailureGroup
from schemathesis.specs.openapi.checks import response_schema_conformance

from benchmarks.cli import DOCS, script_main
from benchmarks.environment import command_line, versions
from benchmarks.live_service import ServiceProcess, model_bundle
from rfmodel.cli_args import positive_int

# Refusals (4xx) carry the protocol's error body, which the schema does not describe.
SCHEMA_CHECKED_STATUSES = (200,)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--examples", type=positive_int, default=500, help="requests per operation")
    p.add_argument("--seed", type=int, default=0, help="hypothesis seed, for a repeatable run")
    p.add_argument("--backend", default="mha", help="attention backend to serve (default mha)")
    p.add_argument(
        "--out", type=Path, default=DOCS / "fuzz-api.md", help="where the summary is written"
    )


def problem(case, response) -> str | None:
    """Why this answer is wrong, or None."""
    if response.status_code >= 500:
        return f"{response.status_code}: {response.text[:300]}"
    if response.status_code >= 400:
        try:
            error = response.json()["error"]
        except (ValueError, KeyError, TypeError):
            return f"{response.status_code} without a JSON error: {response.text[:300]}"
        if case.path.startswith("/v2"):
            ok = isinstance(error, str) and bool(error)
        else:
            ok = isinstance(error, dict) and set(error) == {"code", "message", "field"}
        return None if ok else f"{response.status_code}, malformed error body: {error!r}"
    if response.status_code in SCHEMA_CHECKED_STATUSES:
        try:
            case.validate_response(response, checks=[response_schema_conformance])
        except (Failure, FailureGroup) as exc:
            return f"breaks the response schema: {str(exc)[:300]}"
    return None


def served_model(case, known: dict[str, str]):
    """The case with its path naming the served model, so its body reaches the model's code
    rather than only the 404 for an unknown model."""
    for name, value in known.items():
        if name in (case.path_parameters or {}):
            case.path_parameters[name] = value
    return case


def fuzz_operation(
    operation, url: str, examples: int, run_seed: int, known: dict[str, str]
) -> tuple[Counter, list]:
    statuses: Counter[int] = Counter()
    failures: list[str] = []

    @seed(run_seed)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        case=st.one_of(
            operation.as_strategy(),
            operation.as_strategy().map(lambda case: served_model(case, known)),
        )
    )
    def check(case) -> None:
        response = case.call(base_url=url, timeout=30)
        statuses[response.status_code] += 1
        if (why := problem(case, response)) is not None:
            failures.append(f"{why}\n    reproduce: {case.as_curl_command()}")

    check()
    return statuses, failures


def run(args: argparse.Namespace) -> int:
    log = Path(tempfile.gettempdir()) / "rfcls-fuzz-server.log"
    failed = 0
    rows = []
    with (
        model_bundle(args.backend) as model,
        ServiceProcess(
            {"RFCLS_MODEL_DIR": str(model.path), "RFCLS_ATTN_BACKEND": args.backend}, log
        ) as service,
    ):
        # the schema the server itself serves, so the run fuzzes what is deployed
        raw = httpx.get(f"{service.url}/openapi.json", timeout=10).json()
        served = httpx.get(f"{service.url}/v2/models/rfcls", timeout=10).json()
        known = {"name": served["name"], "model_version": served["versions"][0]}
        for result in schemathesis.openapi.from_dict(raw).get_all_operations():
            operation = result.ok()
            statuses, failures = fuzz_operation(
                operation, service.url, args.examples, args.seed, known
            )
            shown = ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()))
            print(f"{operation.label}: {shown}; {len(failures)} failures", flush=True)
            rows.append(f"| `{operation.label}` | {shown} | {len(failures)} |")
            for failure in failures[:10]:
                print(f"  {failure}")
            failed += len(failures)
        if service.process.poll() is not None:
            print(f"the server died; its log: {log}")
            return 1
    verdict = f"{'FAIL' if failed else 'PASS'}: {failed} failing requests"
    print(verdict)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        "\n".join(
            [
                "# Fuzzing the API (schemathesis)",
                "",
                f"Command: `{command_line()}`",
                "",
                f"- {model.weights} {args.backend} model; versions: "
                + ", ".join(
                    f"{k} {v}" for k, v in versions(schemathesis=schemathesis.__version__).items()
                ),
                f"- {verdict}",
                "",
                "| operation | answers by status | failures |",
                "| --- | --- | ---: |",
                *rows,
                "",
            ]
        )
    )
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    return script_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
