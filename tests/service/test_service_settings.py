"""Settings: RFCLS_* variables and `rfcls serve` flags, one source of truth, clear refusals."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

import pytest
import torch
from live_servers import ROOT, build_tiny_bundle

from service import loading
from service.settings import Settings, SettingsError, env_name, load_settings


@pytest.fixture
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("RFCLS_"):
            monkeypatch.delenv(name)
    return monkeypatch


def serve(*args: str, env: dict[str, str] | None = None, timeout: float = 60):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("RFCLS_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "service", "serve", *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_defaults(clean_env):
    s = load_settings()
    assert (s.attn_backend, s.norm, s.device, s.host, s.port) == (
        "mha",
        "rmsnorm",
        "auto",
        "127.0.0.1",
        8000,
    )
    assert s.latency_budget_ms == 30 and s.effective_deadline_ms == 120
    assert s.effective_max_queue_wait_ms == pytest.approx(6)
    assert s.effective_max_queue_wait_ceiling_ms == pytest.approx(15)
    assert s.api_key is None and s.cors_origin_list == []
    assert s.workers == 1


def test_environment_and_flags(clean_env):
    clean_env.setenv("RFCLS_ATTN_BACKEND", "latte")
    clean_env.setenv("RFCLS_LATENCY_BUDGET_MS", "20")
    clean_env.setenv("RFCLS_CORS_ORIGINS", "https://a.example, https://b.example")
    clean_env.setenv("RFCLS_LOG_LEVEL", "WARNING")
    s = load_settings(port=9001)
    assert s.attn_backend == "latte" and s.port == 9001 and s.log_level == "warning"
    assert s.effective_deadline_ms == 80 and s.effective_max_queue_wait_ms == pytest.approx(20 / 5)
    assert s.cors_origin_list == ["https://a.example", "https://b.example"]
    assert load_settings(attn_backend="gqa").attn_backend == "gqa"  # a flag wins


def test_warm_up_lengths_from_the_environment_or_a_flag_within_the_model_and_max_samples(
    clean_env,
):
    assert load_settings().warmup_lengths(nfft=256) == [4096, 32768]
    clean_env.setenv("RFCLS_EXTRA_WARMUP_SAMPLES", "8192, 100,4096,300000")
    s = load_settings()
    assert s.extra_warmup_samples == (8192, 100, 4096, 300000)
    # under the FFT's length, or over max_samples, no request can have it
    assert s.warmup_lengths(nfft=256) == [4096, 8192, 32768]
    assert load_settings(max_samples="20000").warmup_lengths(nfft=256) == [4096, 8192, 20000]
    assert load_settings(extra_warmup_samples="").warmup_lengths(nfft=256) == [32768]
    clean_env.setenv("RFCLS_EXTRA_WARMUP_SAMPLES", "4096,0")
    with pytest.raises(SettingsError, match="RFCLS_EXTRA_WARMUP_SAMPLES='4096,0' is not valid"):
        load_settings()
    clean_env.setenv("RFCLS_EXTRA_WARMUP_SAMPLES", "4k")
    with pytest.raises(SettingsError, match="RFCLS_EXTRA_WARMUP_SAMPLES='4k' is not valid"):
        load_settings()


def test_the_queue_wait_ceiling_is_never_below_the_limit(clean_env):
    clean_env.setenv("RFCLS_MAX_QUEUE_WAIT_MS", "30000")  # admit everything: the ceiling follows
    assert load_settings().effective_max_queue_wait_ceiling_ms == 30000
    clean_env.setenv("RFCLS_MAX_QUEUE_WAIT_CEILING_MS", "20")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert str(err.value) == (
        "RFCLS_MAX_QUEUE_WAIT_CEILING_MS='20' is not valid: "
        "Value error, must be at least the queue-wait limit, 30000 ms"
    )
    clean_env.delenv("RFCLS_MAX_QUEUE_WAIT_MS")
    clean_env.setenv("RFCLS_LATENCY_BUDGET_MS", "200")  # its default limit: a fifth, 40 ms
    with pytest.raises(SettingsError, match="at least the queue-wait limit, 40 ms"):
        load_settings()
    clean_env.setenv("RFCLS_MAX_QUEUE_WAIT_CEILING_MS", "40")  # = the limit: it holds still
    assert load_settings().effective_max_queue_wait_ceiling_ms == 40


def test_invalid_values_name_the_variable_and_the_valid_values(clean_env):
    clean_env.setenv("RFCLS_ATTN_BACKEND", "transformer")
    clean_env.setenv("RFCLS_MAX_BATCH", "0")
    with pytest.raises(SettingsError) as err:
        load_settings()
    lines = str(err.value).splitlines()
    assert lines[0] == (
        "RFCLS_ATTN_BACKEND='transformer' is not valid; "
        "valid values: 'mha', 'flash', 'gqa', 'latent', 'mla' or 'latte'"
    )
    assert lines[1].startswith("RFCLS_MAX_BATCH='0' is not valid")
    with pytest.raises(SettingsError) as err:
        load_settings(device="tpu")  # a flag's error names the flag
    assert "--device='tpu' is not valid; valid values: 'auto', 'cpu' or 'cuda'" in str(err.value)


@pytest.mark.parametrize("value", ["inf", "nan"])
def test_numbers_must_be_finite(clean_env, value):
    clean_env.setenv("RFCLS_LATENCY_BUDGET_MS", value)
    with pytest.raises(SettingsError, match=r"^RFCLS_LATENCY_BUDGET_MS=.* finite number"):
        load_settings()


def test_workers_must_be_at_least_one(clean_env):
    clean_env.setenv("RFCLS_WORKERS", "0")
    with pytest.raises(SettingsError, match=r"^RFCLS_WORKERS='0' is not valid: .*greater than"):
        load_settings()
    with pytest.raises(
        SettingsError, match=r"^--workers='-1' is not valid: .*greater than or equal to 1"
    ):
        load_settings(workers="-1")
    assert load_settings(workers="4").workers == 4


def test_help_lists_every_setting():
    result = serve("--help")
    assert result.returncode == 0
    for name in Settings.model_fields:
        assert env_name(name) in result.stdout, name
    assert "--max-wait-ms" in result.stdout and "--api-key" not in result.stdout


def test_an_unknown_value_stops_the_start_without_a_traceback():
    result = serve(env={"RFCLS_ATTN_BACKEND": "foo"})
    assert result.returncode == 2
    assert "RFCLS_ATTN_BACKEND='foo' is not valid; valid values: 'mha'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_weights_of_another_backend_stop_the_start(tmp_path, workers):
    bundle = build_tiny_bundle(tmp_path / "gqa", backend="gqa")
    env = {"RFCLS_MODEL_DIR": str(bundle), "RFCLS_ATTN_BACKEND": "mha", "RFCLS_PORT": "0"}
    # a worker that cannot start stops them all rather than being started again and again
    result = serve(env={**env, "RFCLS_WORKERS": workers})
    assert result.returncode == 2
    assert "cannot load the model" in result.stderr and "'gqa'" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_backend_and_norm_without_shipped_weights_name_the_shipped_ones():
    result = serve(env={"RFCLS_ATTN_BACKEND": "gqa", "RFCLS_NORM": "layernorm"})
    assert result.returncode == 2
    assert "no shipped weights for gqa with layernorm" in result.stderr
    assert "mha-layernorm" in result.stderr and "RFCLS_MODEL_DIR" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_frame_limit_below_one_fft_stops_the_start(tiny_bundle):
    result = serve(env={"RFCLS_MODEL_DIR": str(tiny_bundle), "RFCLS_MAX_SAMPLES": "10"})
    assert result.returncode == 2
    assert "max_samples 10 is below the model's FFT size" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_asking_for_cuda_without_it_stops_the_start(tiny_bundle):
    result = serve(env={"RFCLS_MODEL_DIR": str(tiny_bundle), "RFCLS_DEVICE": "cuda"})
    assert result.returncode == 2
    assert "RFCLS_DEVICE=cuda, but torch sees no CUDA device" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("usable", "workers", "threads"), [(2, 1, 1), (8, 1, 7), (8, 2, 3), (8, 4, 1), (4, 8, 1)]
)
def test_default_torch_threads_leave_each_worker_a_core_of_the_usable_ones(
    monkeypatch, usable, workers, threads
):
    # usable_cpus: the affinity capped by a container's CPU quota (tests/rfmodel/test_cpus.py)
    monkeypatch.setattr(loading, "usable_cpus", lambda: usable)
    assert loading.default_torch_threads(workers) == threads


def test_keep_alive_outlasts_a_load_balancers_idle_timeout(clean_env):
    from service.server import uvicorn_config

    assert uvicorn_config(load_settings(), app=None).timeout_keep_alive > 60  # AWS ALB's
    clean_env.setenv("RFCLS_KEEP_ALIVE_S", "350")
    assert uvicorn_config(load_settings(), app=None).timeout_keep_alive == 350


def test_the_head_limit_reaches_uvicorn_whichever_protocol_runs(clean_env):
    from service.protocol.head_limit import HeadLimitProtocol
    from service.server import uvicorn_config

    config = uvicorn_config(load_settings(), app=None)
    assert config.http is HeadLimitProtocol
    assert config.h11_max_incomplete_event_size == 64 * 2**10  # h11's limit for the same thing
    clean_env.setenv("RFCLS_MAX_HEADER_BYTES", "8192")
    assert uvicorn_config(load_settings(), app=None).h11_max_incomplete_event_size == 8192
    assert load_settings().body_timeout_s == 30


def test_sigterm_is_handled_from_the_start_not_only_once_uvicorn_runs(clean_env, monkeypatch):
    """As PID 1 in a container a signal without a handler is ignored, so a SIGTERM during the
    model's load would wait for SIGKILL; the handler is in place before the load begins."""
    from service import server

    seen = {}

    def load_server(settings):
        seen["handler"] = signal.getsignal(signal.SIGTERM)
        return None

    monkeypatch.setattr(server, "load_server", load_server)
    before = signal.getsignal(signal.SIGTERM)
    try:
        assert server.run(argparse.Namespace()) == 2  # every setting from its default
    finally:
        handler = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, before)
    assert seen["handler"] is handler and callable(handler)
    with pytest.raises(SystemExit) as stopped:
        handler(signal.SIGTERM, None)
    assert stopped.value.code == 0
