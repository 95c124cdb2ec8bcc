"""The real service for load scripts: `python -m service serve` in a subprocess on a model bundle,
its resident memory read from /proc (with several workers, theirs too), its Prometheus counters
read from /metrics.

The bundle is the shipped model for the backend when its weights exist, else a randomly
initialised model of the same size in a temporary directory: latency and memory do not depend on
the weights' values, only on the model's shape.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from service.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 300  # loading torch and warming up on a busy 2-core box
RSS_EVERY_S = 0.25


@dataclass(frozen=True)
class ModelSource:
    path: Path
    weights: str  # "shipped" or "random"


@contextmanager
def model_bundle(backend: str = "mha", norm: str = "rmsnorm") -> Iterator[ModelSource]:
    """The shipped model for backend and norm, else a random-init one of the default size."""
    # torch only here, when a model is needed
    from preprocessing.features import FeatureConfig
    from rfmodel.bundle import WEIGHTS_FILE, model_config_for, save_bundle, shipped_model_dir
    from rfmodel.classifier import RFClassifier
    from rfmodel.data import CLASSES

    shipped = shipped_model_dir(backend, norm)
    if (shipped / WEIGHTS_FILE).is_file():
        yield ModelSource(shipped, "shipped")
        return
    features = FeatureConfig()
    config = model_config_for(features, len(CLASSES), attn_backend=backend, norm=norm)
    with tempfile.TemporaryDirectory(prefix="rfcls-bundle-") as tmp:
        path = save_bundle(Path(tmp) / f"{backend}-{norm}", RFClassifier(config), features, CLASSES)
        yield ModelSource(path, "random")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def terminate(process: subprocess.Popen, timeout_s: float) -> int:
    """SIGTERM (the server drains its requests), SIGKILL if it has not exited within timeout_s;
    returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


class ServiceProcess:
    """`python -m service serve` with the given RFCLS_* settings; the rest of RFCLS_* is cleared so
    the caller's shell cannot change what is measured."""

    def __init__(self, settings: dict[str, str], log_path: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("RFCLS_")}
        env.update({"RFCLS_PORT": str(self.port), "RFCLS_LOG_LEVEL": "warning", **settings})
        self._log = log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service", "serve"],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.log_path = log_path

    def __enter__(self) -> ServiceProcess:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited: {self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz/ready", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"the service was not ready within {START_TIMEOUT_S} s")

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> int:
        code = terminate(self.process, timeout_s=60)
        self._log.close()
        return code

    def rss_bytes(self) -> int:
        """The server's and its workers' (RFCLS_WORKERS > 1), pages they share counted in each."""
        return sum(rss_bytes(pid) for pid in [self.process.pid, *descendants(self.process.pid)])


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (Linux /proc); 0 once it has exited."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:  # a worker that exited after it was listed
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0  # a zombie: exited, not yet reaped


def descendants(pid: int) -> list[int]:
    """The children of a process, their children and so on (Linux /proc)."""
    children = [
        int(child)
        for task in Path(f"/proc/{pid}/task").glob("*")
        for child in _read(task / "children").split()
    ]
    return [p for child in children for p in (child, *descendants(child))]


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:  # exited meanwhile
        return ""


class RssSampler:
    """The server's resident memory every RSS_EVERY_S seconds, from a thread of this process."""

    def __init__(self, service: ServiceProcess):
        self.service = service
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.started = time.perf_counter()

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(RSS_EVERY_S):
            self.samples.append((time.perf_counter() - self.started, self.service.rss_bytes()))


class _GivenSettings(Settings):
    """Settings from the arguments only: this process's own RFCLS_* variables never reach the
    server (ServiceProcess clears them), so they must not count here either."""

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, **other_sources):
        return (init_settings,)


def add_setting_argument(p: argparse.ArgumentParser, applies_to: str) -> None:
    p.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="RFCLS_NAME=VALUE",
        help=f"a server setting other than its default, for {applies_to} (repeatable), e.g. "
        "RFCLS_CUDA_GRAPHS=false or RFCLS_WORKERS=2",
    )


def given_text(given: dict[str, str]) -> str:
    """The server's settings in a report's words."""
    if not given:
        return "default settings"
    return "default settings but " + ", ".join(f"{name}={value}" for name, value in given.items())


def setting_pairs(pairs: list[str]) -> dict[str, str]:
    """--setting RFCLS_NAME=VALUE arguments -> server settings; a malformed one ends the run."""
    settings = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.startswith(ENV_PREFIX):
            raise SystemExit(f"--setting: {pair!r} is not {ENV_PREFIX}NAME=VALUE")
        settings[name] = value
    return settings


def settings_of(env: dict[str, str]) -> Settings:
    """The settings a ServiceProcess started with these RFCLS_* variables runs with: the
    service's defaults and these."""
    return _GivenSettings(**{k.removeprefix(ENV_PREFIX).lower(): v for k, v in env.items()})


@dataclass
class WatchedService:
    service: ServiceProcess
    rss: RssSampler
    model: ModelSource


@contextmanager
def watched_service(backend: str, settings: dict[str, str], name: str) -> Iterator[WatchedService]:
    """`rfcls serve` on backend's model (model_bundle) with settings, its memory sampled; the
    server's log goes to <tmp>/rfcls-<name>-server.log."""
    log = Path(tempfile.gettempdir()) / f"rfcls-{name}-server.log"
    env = {**settings, "RFCLS_ATTN_BACKEND": backend}
    with (
        model_bundle(backend) as model,
        ServiceProcess({**env, "RFCLS_MODEL_DIR": str(model.path)}, log) as service,
        RssSampler(service) as rss,
    ):
        yield WatchedService(service, rss, model)


Series = tuple[str, tuple[tuple[str, str], ...]]


def scrape(url: str) -> dict[Series, float]:
    """Every sample of /metrics, keyed by (name, sorted labels)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def series(name: str, **labels: str) -> Series:
    return name, tuple(sorted(labels.items()))
