"""Service settings: every knob is an RFCLS_* environment variable (or the matching `rfcls serve`
flag), read once at start and passed down; nothing else in the service reads the environment."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.admission import LOWER_MARK

ENV_PREFIX = "RFCLS_"

AttnBackend = Literal["mha", "flash", "gqa", "latent", "mla", "latte"]
Norm = Literal["rmsnorm", "layernorm"]
Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "float32", "bfloat16"]
LogLevel = Literal["critical", "error", "warning", "info", "debug"]

# Warm-up frames have the length the latency budget is set for; on a GPU, batches of this length
# are served from CUDA graphs.
WARMUP_SAMPLES = 32_768
# Lengths warmed up (and on a GPU graphed) besides: the held-out set's recordings, the shipped
# model's own length. On an H100 such requests answered at a closed-loop p99 of 32 ms eager and
# 3.9 ms graphed (docs/benchmarks/service-load-cuda-h100-eager.md, -unfrozen.md).
EXTRA_WARMUP_SAMPLES = (4_096,)
# A request still queued after this many budgets means the service is overloaded: the client has
# long missed its deadline, and computing the answer would only delay the requests behind it.
DEADLINE_BUDGETS = 4
# The work ahead of an admitted request (what is left of the batch on the device, and the full
# batches queued) may take this share of the budget, and no batch holds more work than it: a
# request waits at most one share, then runs in its own batch, about another. The rest is margin
# for what the estimate does not see: HTTP, the GIL, a load generator on the same cores. At a
# third the 3x overload test on 2 cores gave an admitted p99 of 38 ms; at a fifth, 28 ms, at the
# same admitted rate (docs/reliability.md).
QUEUE_WAIT_SHARE = 1 / 5
# While answers stay well within the budget the limit may rise to this share (service/admission.py):
# below overload a fifth refused 8 % of the requests at 0.7x load.
QUEUE_WAIT_CEILING_SHARE = 1 / 2


def queue_wait_floor_ms(max_queue_wait_ms: float | None, latency_budget_ms: float) -> float:
    """RFCLS_MAX_QUEUE_WAIT_MS, or its default share of the budget."""
    if max_queue_wait_ms is not None:
        return max_queue_wait_ms
    return QUEUE_WAIT_SHARE * latency_budget_ms


class Settings(BaseSettings):
    # no inf or NaN for any number: an infinite budget or wait is no setting a server can keep
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", frozen=True, allow_inf_nan=False
    )

    attn_backend: AttnBackend = Field(
        "mha", description="attention backend; picks the matching shipped weights"
    )
    norm: Norm = Field("rmsnorm", description="normalisation of the shipped model (ablation)")
    latency_budget_ms: float = Field(30.0, gt=0, description="end-to-end latency budget (ms)")
    device: Device = Field("auto", description="where the model runs; auto = cuda if available")
    precision: Precision = Field(
        "auto",
        description="the model's weights and activations (the features stay float32): auto = "
        "bfloat16 on a CPU with native bf16 matmuls (AVX512-BF16 or AMX), where the model "
        "takes about two thirds of the time on the budget's 32,768-sample frames at the same "
        "held-out accuracy (but 1.1x on 4,096-sample ones), else float32",
    )
    model_dir: Path | None = Field(
        None, description="model bundle directory; overrides the shipped weights"
    )
    max_batch: int = Field(16, ge=1, le=1024, description="most frames in one model batch")
    max_wait_ms: float = Field(
        1.0, ge=0, description="longest wait for requests still arriving to join a batch (ms)"
    )
    max_queue: int = Field(256, ge=1, description="most requests waiting; more get 503")
    max_samples: int = Field(262_144, ge=1, description="most IQ samples in one frame")
    max_frames_per_request: int = Field(64, ge=1, description="most frames in one request")
    max_signals_per_frame: int = Field(
        8,
        ge=1,
        le=64,
        description="POST /v1/scan: most signals classified in one frame, the strongest",
    )
    max_body_bytes: int = Field(16 * 2**20, ge=1024, description="largest request body (bytes)")
    body_timeout_s: float = Field(
        30.0,
        gt=0,
        description="seconds from a request's headers to the end of its body; a body still "
        "arriving then is answered 408 and dropped, and its connection closed, so a client "
        "that holds back its last bytes cannot keep the memory of its body forever. A body of "
        "the default max_body_bytes (16 MiB) needs 4.5 Mbit/s to arrive in the default time; "
        "the usual 32,768-sample cf32 frame (256 KiB) 70 kbit/s",
    )
    max_header_bytes: int = Field(
        64 * 2**10,
        ge=1024,
        description="largest request head: the URL and the header fields, 4 bytes a field "
        "counted for its separators (and likewise a chunked body's trailer fields); a larger "
        "one is answered 431 and its connection closed, without reading more. Browsers and "
        "proxies send a few KiB; Node.js refuses past 16 KiB, nginx a field past 8 KiB",
    )
    max_json_body_bytes: int = Field(
        4 * 2**20,
        ge=1024,
        description="largest JSON in a request (bytes; v2's JSON header where the binary tensor "
        "extension carries the samples): JSON is parsed on the event loop, holding up the "
        "requests around it, at about 6 ms a MB of listed numbers on 2 vCPUs; larger recordings "
        "go as binary samples",
    )
    deadline_ms: float | None = Field(
        None,
        gt=0,
        description=f"drop requests queued longer (ms); default {DEADLINE_BUDGETS}x the budget",
    )
    max_queue_wait_ms: float | None = Field(
        None,
        gt=0,
        description="refuse (503) a request whose work ahead (what is left of the running batch "
        "and the full batches queued) would take longer (ms), and hold no more work in one "
        f"batch; default {QUEUE_WAIT_SHARE:.2g}x the budget. The limit under load: it rises "
        "toward max_queue_wait_ceiling_ms while answers are quick",
    )
    max_queue_wait_ceiling_ms: float | None = Field(
        None,
        gt=0,
        description="the highest the queue-wait limit rises to while the p99 of the answers "
        f"stays under {LOWER_MARK:g}x the budget (ms); default the larger of "
        f"{QUEUE_WAIT_CEILING_SHARE:.2g}x the budget and max_queue_wait_ms; equal to "
        "max_queue_wait_ms holds the limit fixed",
    )
    extra_warmup_samples: Annotated[tuple[int, ...], NoDecode] = Field(
        EXTRA_WARMUP_SAMPLES,
        description=f"frame lengths (samples, comma-separated) the warm-up runs at every batch "
        f"size besides the budget's {WARMUP_SAMPLES:,} (or max_samples if fewer), so that their "
        "first requests find the device ready; lengths under the FFT's or over max_samples are "
        "left out",
    )
    cuda_graphs: bool = Field(
        True,
        description="on a GPU, replay batches of frames of the warm-up lengths from CUDA graphs, "
        "one per length and batch size bucket; other lengths, and every batch when off, run "
        "eagerly",
    )
    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(8000, ge=0, le=65535, description="port to listen on (0 = any free port)")
    stall_s: float = Field(
        60.0,
        gt=0,
        description="a batch still running after this many seconds marks the engine failed (a "
        "hung device call answers nobody): /healthz/live answers 503, readiness goes false, "
        "and the server process ends so that its supervisor or the container restarts it; "
        "with workers, also how long a worker's event loop may stop before the supervisor kills "
        "and replaces it; also the longest shutdown waits for the engine. Far above a "
        "legitimate batch: one frame of 262,144 samples (the default max_samples) takes about "
        "0.75 s on 2 CPU cores with mha, so 16 of them about 12 s",
    )
    keep_alive_s: float = Field(
        75.0,
        gt=0,
        description="seconds an idle keep-alive connection stays open; keep it above the idle "
        "timeout of any proxy or load balancer in front (AWS ALB 60 s), so that the proxy "
        "closes idle connections, never reusing one the server has just closed (a reset POST)",
    )
    workers: int = Field(
        1,
        ge=1,
        description="server processes sharing the port, each with its own model copy and "
        "batching engine; >1 on a GPU host whose single event loop is the bottleneck",
    )
    torch_threads: int | None = Field(
        None,
        ge=1,
        description="torch intra-op threads per worker; default: the usable cores shared among "
        "the workers, less one each",
    )
    api_key: str | None = Field(
        None, min_length=1, description="if set, require 'Authorization: Bearer <key>'"
    )
    cors_origins: str = Field(
        "", description="comma-separated allowed CORS origins; empty = CORS off"
    )
    log_level: LogLevel = Field("info", description="log level")

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_log_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("extra_warmup_samples", mode="before")
    @classmethod
    def _split_lengths(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("extra_warmup_samples")
    @classmethod
    def _positive_lengths(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(n < 1 for n in value):
            raise ValueError("every length must be at least 1 sample")
        return value

    @field_validator("max_queue_wait_ceiling_ms")
    @classmethod
    def _ceiling_not_below_the_limit(
        cls, value: float | None, info: ValidationInfo
    ) -> float | None:
        if value is None or "latency_budget_ms" not in info.data:  # no ceiling, or a bad budget
            return value
        data = info.data
        floor = queue_wait_floor_ms(data.get("max_queue_wait_ms"), data["latency_budget_ms"])
        if value < floor:
            raise ValueError(f"must be at least the queue-wait limit, {floor:g} ms")
        return value

    def warmup_samples(self, nfft: int) -> int:
        """The length of the warm-up's timed frames, for a model whose FFT is nfft long: the
        engine's cost line is fitted to them."""
        return max(nfft, min(self.max_samples, WARMUP_SAMPLES))

    def warmup_lengths(self, nfft: int) -> list[int]:
        """Every length the warm-up runs (and a GPU graphs), ascending."""
        extra = (n for n in self.extra_warmup_samples if nfft <= n <= self.max_samples)
        return sorted({self.warmup_samples(nfft), *extra})

    @property
    def effective_deadline_ms(self) -> float:
        return (
            self.deadline_ms
            if self.deadline_ms is not None
            else (DEADLINE_BUDGETS * self.latency_budget_ms)
        )

    @property
    def effective_max_queue_wait_ms(self) -> float:
        return queue_wait_floor_ms(self.max_queue_wait_ms, self.latency_budget_ms)

    @property
    def effective_max_queue_wait_ceiling_ms(self) -> float:
        if self.max_queue_wait_ceiling_ms is not None:
            return self.max_queue_wait_ceiling_ms
        ceiling = QUEUE_WAIT_CEILING_SHARE * self.latency_budget_ms
        return max(ceiling, self.effective_max_queue_wait_ms)

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


class SettingsError(Exception):
    """Settings that cannot start the service; the message names each variable at fault."""


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with `overrides` (from command-line flags) taking precedence.
    Invalid values raise SettingsError with one line per bad variable, never a traceback."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise SettingsError("\n".join(_describe(err, given) for err in exc.errors())) from None


def _describe(err: dict, overrides: dict[str, object]) -> str:
    field = str(err["loc"][0]) if err["loc"] else ""
    if field not in Settings.model_fields:
        return f"{field}: {err['msg']}"
    if field in overrides:
        name, value = flag_name(field), overrides[field]
    else:
        name, value = env_name(field), os.environ.get(env_name(field))
    shown = f"={value!r}" if value is not None else ""
    expected = (err.get("ctx") or {}).get("expected")
    if expected:
        return f"{name}{shown} is not valid; valid values: {expected}"
    return f"{name}{shown} is not valid: {err['msg']}"


def unknown_env_vars() -> list[str]:
    """RFCLS_* variables that name no setting (typos would otherwise be silently ignored)."""
    known = {env_name(f) for f in Settings.model_fields}
    return sorted(k for k in os.environ if k.startswith(ENV_PREFIX) and k not in known)
