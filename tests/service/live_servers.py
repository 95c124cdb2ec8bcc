"""Real servers for the service tests: `python -m service serve` in a subprocess, or uvicorn in a
thread around an app built in-process (for tests that need to control the model)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import torch
import uvicorn

from benchmarks.live_service import free_port, terminate
from preprocessing.features import FeatureConfig
from preprocessing.recording import recording_features
from rfmodel.bundle import model_config_for, save_bundle
from rfmodel.classifier import RFClassifier

ROOT = Path(__file__).resolve().parents[2]
TINY_CLASSES = ("noise", "tone", "bpsk", "qpsk", "fsk")


def build_tiny_bundle(path: Path, backend: str = "mha", seed: int = 0) -> Path:
    """A randomly initialised model small enough that a test server starts and answers in
    milliseconds; its labels are arbitrary, so tests check structure and consistency. It reads
    the recording's features too, both views, as the shipped models do."""
    features = FeatureConfig(nfft=64, hop=32, recording_segment=256)
    config = model_config_for(
        features,
        len(TINY_CLASSES),
        recording_hidden=8,
        d_model=16,
        n_layers=1,
        n_heads=2,
        n_kv_heads=1,
        attn_backend=backend,
        n_latents=4,
        kv_lora_rank=8,
        qk_rope_head_dim=4,
        qk_nope_head_dim=4,
        v_head_dim=4,
    )
    torch.manual_seed(seed)
    model = RFClassifier(config)
    # not zero as they start for training, so that a wrong recording vector changes the answer
    torch.nn.init.normal_(model.recording_head.weight)
    torch.nn.init.normal_(model.recording_mlp[-1].weight)
    # standardised as training leaves it, over noise: raw dB values would saturate the softmax
    noise = torch.randn(64, 1024, dtype=torch.complex64)
    model.fit_recording_norm(recording_features(noise, features))
    return save_bundle(path, model, features, TINY_CLASSES)


def wait_until(
    url: str, timeout: float, process: subprocess.Popen | None = None, probe: str = "ready"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/healthz/{probe}", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} not ready within {timeout} s")


class ServerProcess:
    """`python -m service serve` with RFCLS_* settings from `env`."""

    def __init__(self, env: dict[str, str]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("RFCLS_")}
        # float32 unless a test asks: answers are compared with a float32 reference, and auto
        # would serve bfloat16 on a CPU with native bf16
        base = {"RFCLS_PORT": str(self.port), "RFCLS_LOG_LEVEL": "warning"}
        full_env.update({**base, "RFCLS_PRECISION": "float32", **env})
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service", "serve"],
            cwd=ROOT,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def __enter__(self) -> ServerProcess:
        try:
            wait_until(self.url, timeout=60, process=self.process)
        except Exception:
            self.stop()
            raise RuntimeError(f"server did not start:\n{self.output()}") from None
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> int:
        return terminate(self.process, timeout_s=30)

    def output(self) -> str:
        return self.process.stdout.read() if self.process.stdout else ""


class ThreadServer:
    """uvicorn serving `app` from a thread of the test process."""

    def __init__(self, app, wait_ready: bool = True):
        self.probe = "ready" if wait_ready else "live"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        wait_until(self.url, timeout=30, probe=self.probe)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one series in Prometheus text exposition (labels in any order)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{{wanted}}} ") or (not labels and line.startswith(f"{name} ")):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(f"{name}{{{wanted}}}")
