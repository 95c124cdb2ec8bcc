"""`rfcls train`: train classifiers on the synthetic stream.

Several models train in lockstep (`--backends mha,gqa --norms rmsnorm,layernorm`: every backend with
every norm): each batch is generated once and fed to every model, each with its own optimizer,
schedule and seed-derived initialisation. Data generation is the bottleneck on a GPU box, and
identical batches make the comparison between backends fairer.

Features are computed on the training device from the raw IQ batch with the service's own
`compute_features`, so CPU workers only generate IQ. Under torchrun (WORLD_SIZE > 1) each model is
wrapped in DistributedDataParallel, each rank draws its own sub-stream and rank 0 writes checkpoints
and bundles.

A checkpoint (OUT/checkpoint.pt, written every --checkpoint-every steps and at the end) holds each
model's weights, optimizer and schedule state, and the step. The data stream and dropout's random
numbers are functions of (seed, rank, step), so the step is their whole state: `--resume` continues
to exactly the weights an uninterrupted run reaches (bitwise on CPU).

Seeds: `--seed S` drives the training stream (`SyntheticStream(S)`, whose examples are keyed in a
domain of their own, so they never coincide with an evaluation set's whatever S is) and the model
initialisations (`derived_seed(S, INIT_KEY, name)`). Validation during training uses
`make_eval_set(VALIDATION_SEED)`; `rfcls evaluate` defaults to `make_eval_set(EVAL_SEED)`, another
seed, so the held-out numbers come from recordings that neither training nor model selection saw.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import subprocess
import sys
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from preprocessing.errors import InputError
from preprocessing.features import FeatureConfig, compute_features
from preprocessing.recording import recording_features
from rfmodel.bundle import (
    BundleError,
    check_finite,
    load_bundle,
    model_config_for,
    save_bundle,
    weight_family,
)
from rfmodel.classifier import RFClassifier
from rfmodel.cli_args import (
    DEVICE_CHOICES,
    DeviceError,
    non_negative_float,
    non_negative_int,
    pick_device,
    positive_float,
    positive_int,
)
from rfmodel.config import BACKENDS, NORMS, ConfigError, ModelConfig
from rfmodel.data import CLASSES, SNR_RANGE, SnrMix, make_eval_set
from rfmodel.evaluate import predict
from rfmodel.lr_schedule import Cosine
from rfmodel.time_budget import TimeBudget
from rfmodel.train_stream import (
    DEFAULT_LENGTHS,
    DROPOUT_KEY,
    INIT_KEY,
    LengthMix,
    LengthMixError,
    derived_seed,
    training_loader,
)

VALIDATION_SEED = 1_000_003
VALIDATION_SAMPLES = 4096
# the recordings whose features fit the recording norm (RFClassifier.fit_recording_norm): a seed
# of their own, every class at in-band SNRs over the training stream's range
NORM_FIT_SEED = 3_000_017
NORM_FIT_SNRS = tuple(float(v) for v in np.arange(-10.0, 30.1, 2.5))
CHECKPOINT_FILE = "checkpoint.pt"
LOG_FILE = "train_log.jsonl"
CHECKPOINT_FORMAT = 2  # 2: the cosine as bent by a time limit, not only its end
REPO_ROOT = Path(__file__).resolve().parents[1]

# Config fields the command sets itself (from the feature config, class list, --backends, --norms).
DERIVED_MODEL_FIELDS = (
    "n_features",
    "n_classes",
    "attn_backend",
    "norm",
    "recording_head",
    "recording_views",
)


class TrainError(Exception):
    """A training run that cannot start or resume as asked."""


# ---------------------------------------------------------------------------------------------
# command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("runs/train"), help="output directory")
    parser.add_argument(
        "--backends",
        "--backend",
        default=None,
        help=f"comma-separated attention backends, one model each ({', '.join(BACKENDS)}; "
        "default mha)",
    )
    parser.add_argument(
        "--norms",
        "--norm",
        default=None,
        help=f"comma-separated norms ({', '.join(NORMS)}; default rmsnorm)",
    )
    parser.add_argument(
        "--models",
        default=None,
        help="comma-separated BACKEND-NORM pairs (e.g. mha-rmsnorm,mha-layernorm), in place of "
        "every --backends entry with every --norms entry",
    )
    parser.add_argument("--steps", type=positive_int, default=2000)
    parser.add_argument(
        "--batch-size", type=positive_int, default=128, help="examples per step and rank"
    )
    parser.add_argument("--lr", type=non_negative_float, default=1e-3, help="peak learning rate")
    parser.add_argument("--weight-decay", type=non_negative_float, default=0.05)
    parser.add_argument(
        "--warmup-steps", type=non_negative_int, default=None, help="default: 5%% of --steps"
    )
    parser.add_argument("--clip", type=positive_float, default=1.0, help="gradient-norm clip")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument(
        "--lengths",
        default=DEFAULT_LENGTHS,
        help="recording lengths and weights, LENGTH[:WEIGHT],... (default %(default)s)",
    )
    parser.add_argument(
        "--snr-range",
        default=f"{SNR_RANGE[0]:g},{SNR_RANGE[1]:g}",
        help="in-band SNRs of the training stream's signals, LOW,HIGH dB drawn uniformly, or "
        "bands LOW,HIGH:WEIGHT,... each drawn with its weight's share, e.g. -10,-5:0.05,-5,30:0.95 "
        "(default %(default)s; a negative LOW needs the = form: --snr-range=-5,30)",
    )
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    parser.add_argument(
        "--workers",
        type=non_negative_int,
        default=max(1, (os.cpu_count() or 2) - 1),
        help="DataLoader processes generating IQ (0: in the training process)",
    )
    parser.add_argument(
        "--norm-fit-per-class",
        type=positive_int,
        default=50,
        help="recordings per class whose features fit the recording norm of a model that does "
        "not bring one (ModelConfig.recording_norm 'standard'; default %(default)s)",
    )
    parser.add_argument("--log-every", type=positive_int, default=50)
    parser.add_argument(
        "--eval-every", type=positive_int, default=500, help="validation interval, steps"
    )
    parser.add_argument(
        "--val-per-class",
        type=non_negative_int,
        default=16,
        help="validation examples per class (0: none)",
    )
    parser.add_argument("--checkpoint-every", type=positive_int, default=1000)
    parser.add_argument(
        "--resume", action="store_true", help=f"continue from OUT/{CHECKPOINT_FILE}"
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="run each model's forward and backward through torch.compile (fewer, fused kernels). "
        "Each recording length of --lengths compiles anew: on an H100, 12 compiled steps took "
        "110 s where 200 eager steps took 31 s (docs/model-card.md, 'Next')",
    )
    parser.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="start each model from the weights in DIR/<backend>-<norm>/ (a fine-tune with a "
        "fresh optimizer and schedule; e.g. rfmodel/weights) instead of a random init",
    )
    parser.add_argument(
        "--stop-at",
        type=positive_int,
        default=None,
        help="stop after this step with a checkpoint (split a run over jobs; --resume goes on)",
    )
    parser.add_argument(
        "--time-limit",
        type=positive_float,
        default=None,
        metavar="SECONDS",
        help="wall-clock limit of this job, setup included: after warm-up (give --warmup-steps) "
        "the run times its steps and ends its cosine early enough to write its weights in time "
        "(rfmodel/time_budget.py)",
    )
    model = parser.add_argument_group("model (default: ModelConfig's)")
    add_dataclass_options(model, ModelConfig, exclude=DERIVED_MODEL_FIELDS)
    features = parser.add_argument_group("features (default: FeatureConfig's)")
    add_dataclass_options(features, FeatureConfig, exclude=())


def add_dataclass_options(group: Any, cls: type, exclude: tuple[str, ...]) -> None:
    """One `--field-name` option per scalar or tuple-of-str field of `cls`, default None (= the
    dataclass's own); a tuple is given comma-separated (`--transforms x,x2,x4`)."""
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = scalar_type(f)
        if kind is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction)
        elif kind is not None:
            group.add_argument(flag, dest=f.name, type=kind, default=None, metavar=kind.__name__)
        elif str(f.type) == "tuple[str, ...]":
            group.add_argument(flag, dest=f.name, type=comma_list, default=None, metavar="a,b,...")


def comma_list(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def scalar_type(f: dataclasses.Field) -> type | None:
    default = f.default if f.default is not dataclasses.MISSING else None
    if isinstance(default, bool | int | float | str):
        return type(default)
    annotation = str(f.type)
    for kind in (bool, int, float, str):
        if annotation.startswith(kind.__name__) and annotation.removeprefix(kind.__name__) in (
            "",
            " | None",
        ):
            return kind
    return None


def dataclass_overrides(args: argparse.Namespace, cls: type, exclude: tuple[str, ...]) -> dict:
    names = [f.name for f in dataclasses.fields(cls) if f.name not in exclude]
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def parse_snr_range(text: str) -> SnrMix:
    try:
        return SnrMix.parse(text)
    except ValueError as exc:
        raise TrainError(f"snr-range: {exc}") from None


def split_names(text: str, valid: tuple[str, ...] | None, field: str) -> list[str]:
    """The comma-separated names of `text`, each in `valid` (None: any)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if valid is not None and n not in valid]
    if unknown or not names:
        valid_text = f"; valid: {', '.join(valid)}" if valid is not None else ""
        raise TrainError(f"{field}: {text!r} has no names or unknown ones {unknown}{valid_text}")
    return names


# ---------------------------------------------------------------------------------------------
# the run


@dataclass
class Member:
    """One model of the lockstep group."""

    name: str  # "<weight family>-<norm>": its output directory
    model: RFClassifier
    module: nn.Module  # `model`, or its DDP and/or torch.compile wrapper
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    # the version and training record of the weights it started from (--init-from)
    initialised_from: dict[str, Any] | None = None


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Ranks:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        return cls(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def main(self) -> bool:
        return self.rank == 0


def warmup_steps(args: argparse.Namespace) -> int:
    return args.warmup_steps if args.warmup_steps is not None else max(1, args.steps // 20)


def build_member(
    cfg: ModelConfig,
    feature_cfg: FeatureConfig,
    args: argparse.Namespace,
    device: torch.device,
    ranks: Ranks,
    norm_fit: NormFitData,
) -> Member:
    name = f"{weight_family(cfg.attn_backend)}-{cfg.norm}"
    # the init depends on the model's name only, so a model's weights do not depend on which
    # others train beside it
    torch.manual_seed(derived_seed(args.seed, INIT_KEY, zlib.crc32(name.encode())))
    model = RFClassifier(cfg).to(device)
    initialised_from, norm_loaded = None, False
    if args.init_from is not None:
        initialised_from, norm_loaded = load_initial_weights(
            model, args.init_from / name, feature_cfg
        )
    if cfg.standardises_recording and not norm_loaded:
        # a resumed run then loads the checkpoint's over it
        model.fit_recording_norm(norm_fit.features(feature_cfg, device))
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]  # gains and biases
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": args.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=args.lr,
        betas=(0.9, 0.95),
        fused=device.type == "cuda",
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, Cosine(warmup_steps(args), args.steps).factor
    )
    module: nn.Module = model
    if ranks.world_size > 1:
        module = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if args.compile:
        # the compiled module shares `model`'s parameters, so checkpoints and bundles need nothing
        module = torch.compile(module)
    return Member(name, model, module, optimizer, scheduler, initialised_from)


class NormFitData:
    """The recording features RFClassifier.fit_recording_norm reads, computed once, when a model
    first needs them: recordings of the length mix's most frequent length, the same on every
    rank, so the ranks' norms agree."""

    def __init__(self, per_class: int, lengths: LengthMix) -> None:
        self.per_class = per_class
        self.n_samples = max(zip(lengths.weights, lengths.lengths, strict=True))[1]
        self._features: torch.Tensor | None = None

    def features(self, feature_cfg: FeatureConfig, device: torch.device) -> torch.Tensor:
        if self._features is None:
            data = make_eval_set(
                NORM_FIT_SEED, self.per_class, self.n_samples, snr_values=NORM_FIT_SNRS
            )
            iq = torch.from_numpy(data.iq).to(device)
            self._features = torch.cat(
                [recording_features(chunk, feature_cfg) for chunk in iq.split(256)]
            )
        return self._features


# what a fine-tune may switch on or change, by its earlier value: each new part starts at zero
# (a recording head, its MLP, the band-limited view's columns), so the fine-tune starts from the
# bundle's predictions, bar the recording heads when their input's norm changes (they restart)
SWITCHABLE = {
    "recording_segment": 0,
    "recording_head": False,
    "recording_band_limit": False,
    "recording_views": 1,
    "recording_hidden": 0,
    "recording_layers": 1,
    "recording_dropout": 0.0,
    "recording_norm": "layer",
}
# the recording MLP's shape: weights of another shape do not carry over
MLP_SHAPE = ("recording_hidden", "recording_layers", "recording_dropout")


def load_initial_weights(
    model: RFClassifier, path: Path, feature_cfg: FeatureConfig
) -> tuple[dict, bool]:
    """Copy the weights of the bundle at `path` into `model`, whose model and feature configs it
    must have (a fine-tune continues one model; it does not resize or re-feature it), bar the
    recording features and heads a fine-tune may switch on (SWITCHABLE). Returns where they came
    from, and whether the recording norm came with them (else it is still to be fitted)."""
    try:
        bundle = load_bundle(path)
    except BundleError as exc:
        raise TrainError(f"init-from: {exc}") from exc
    for what, theirs, ours in (
        # features first: other features also change the model's input width
        ("features", bundle.feature_config.to_dict(), feature_cfg.to_dict()),
        ("model", bundle.model_config.to_dict(), model.cfg.to_dict()),
    ):
        differ = [
            f"{k} {v!r} (this run: {ours[k]!r})"
            for k, v in theirs.items()
            if ours[k] != v and not (k in SWITCHABLE and v == SWITCHABLE[k])
        ]
        if differ:
            raise TrainError(f"init-from: {path} has other {what} settings: {', '.join(differ)}")
    state, ours = bundle.model.state_dict(), model.state_dict()
    theirs = bundle.model_config
    stale = []  # prefixes of heads trained on another input or of another shape
    if theirs.recording_norm != model.cfg.recording_norm:
        stale += ["recording_head.", "recording_mlp."]
    if any(getattr(theirs, f) != getattr(model.cfg, f) for f in MLP_SHAPE):
        stale.append("recording_mlp.")
    if (
        "recording_shift" in state
        and state["recording_shift"].shape != ours["recording_shift"].shape
    ):
        # another view was added: fitted again, on the same recordings the first view's part
        # comes out as it was
        stale += ["recording_shift", "recording_scale"]
    state = {k: v for k, v in state.items() if not k.startswith(tuple(stale))}
    key = "recording_head.weight"
    if key in state and state[key].shape != ours[key].shape:
        # the first view's columns; the band-limited view's start at zero
        wider = torch.zeros_like(ours[key])
        wider[:, : state[key].shape[1]] = state[key]
        state[key] = wider
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected
    heads = ("recording_head.", "recording_mlp.", "recording_shift", "recording_scale")
    assert all(key.startswith(heads) for key in missing), missing
    norm_loaded = "recording_shift" in state
    return {"version": bundle.version, "training": bundle.training}, norm_loaded


def run_identity(
    args: argparse.Namespace,
    ranks: Ranks,
    names: list[str],
    feature_cfg: FeatureConfig,
    lengths: LengthMix,
    snr_range: SnrMix,
) -> dict:
    """What a resumed run must share with the run that wrote the checkpoint (--steps may change,
    the warm-up in effect may not)."""
    return {
        "members": names,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "lengths": str(lengths),
        "snr_range": snr_range.record(),
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        # the warm-up in effect: its default follows --steps, which a resume may change
        "warmup_steps": warmup_steps(args),
        "clip": args.clip,
        "model": dataclass_overrides(args, ModelConfig, DERIVED_MODEL_FIELDS),
        "features": feature_cfg.to_dict(),
        "world_size": ranks.world_size,
        "init_from": None if args.init_from is None else str(args.init_from),
    }


def save_checkpoint(
    path: Path,
    members: list[Member],
    step: int,
    fitted: Cosine | None,
    identity: dict,
    wall_s: float,
):
    """`fitted`: the cosine as a time limit bent it, None while it is the one over --steps
    (the schedulers' state does not hold it: LambdaLR saves no functions)."""
    for m in members:  # keep the last good checkpoint rather than overwrite it with a diverged one
        where = f"{m.name} diverged by step {step} (try a lower --lr or --clip): "
        check_finite(m.model.state_dict(), where)
    state = {
        "format": CHECKPOINT_FORMAT,
        "step": step,
        "fitted_cosine": None if fitted is None else asdict(fitted),
        "identity": identity,
        "wall_s": wall_s,
        "members": {
            m.name: {
                "model": m.model.state_dict(),
                "optimizer": m.optimizer.state_dict(),
                "scheduler": m.scheduler.state_dict(),
            }
            for m in members
        },
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a crash mid-write leaves the previous checkpoint intact


def load_checkpoint(
    path: Path, members: list[Member], identity: dict
) -> tuple[int, float, Cosine | None]:
    """-> (the step it was written at, the wall time so far, the cosine as a time limit bent
    it, or None)."""
    if not path.is_file():
        raise TrainError(f"resume: no checkpoint at {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise TrainError(
            f"resume: {path} has format {state.get('format')}, not {CHECKPOINT_FORMAT}"
        )
    for key, value in identity.items():
        if state["identity"].get(key) != value:
            raise TrainError(
                f"resume: {key} is {value!r} but the checkpoint was written with "
                f"{state['identity'].get(key)!r}"
            )
    for m in members:
        saved = state["members"][m.name]
        m.model.load_state_dict(saved["model"])
        m.optimizer.load_state_dict(saved["optimizer"])
        m.scheduler.load_state_dict(saved["scheduler"])
    fitted = state["fitted_cosine"]
    return int(state["step"]), float(state["wall_s"]), None if fitted is None else Cosine(**fitted)


def git_commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return "cpu"


def json_safe(value: Any) -> Any:
    """NaN and inf as null: JSON has neither, and a diverged loss must not make its line
    unreadable to the tools that read the log."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


class RunLog:
    """Progress bar on rank 0 and one JSON line per logged event in OUT/train_log.jsonl."""

    def __init__(self, out: Path, total: int, start: int, enabled: bool) -> None:
        self.enabled = enabled
        self.bar = tqdm(total=total, initial=start, unit="step", disable=not enabled)
        # a resumed run continues its log; a new run in the same directory starts a new one
        self.file = (out / LOG_FILE).open("a" if start else "w") if enabled else None

    def event(self, record: dict[str, Any], message: str | None = None) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(json_safe(record), allow_nan=False) + "\n")
        self.file.flush()
        if message:
            self.bar.write(message)

    def close(self) -> None:
        self.bar.close()
        if self.file:
            self.file.close()


def validate(
    members: list[Member], feature_cfg: FeatureConfig, val: tuple, device: torch.device
) -> dict[str, float]:
    iq, labels, _snr = val
    accuracy = {}
    for m in members:
        m.model.eval()
        predicted = predict(m.model, feature_cfg, iq, device)
        m.model.train()
        accuracy[m.name] = float((predicted == labels).mean())
    return accuracy


def run(args: argparse.Namespace) -> int:
    try:
        return train(args)
    # OSError: an --out (or --init-from) that cannot be written or read names its path
    # BundleError: weights that cannot be stored (past float16's range, for one)
    except (
        TrainError, BundleError, ConfigError, InputError, LengthMixError, DeviceError, OSError
    ) as exc:  # fmt: skip
        print(f"rfcls train: {exc}", file=sys.stderr)
        return 2


def train(args: argparse.Namespace) -> int:
    ranks = Ranks.from_env()
    if ranks.world_size > 1:
        torch.distributed.init_process_group(
            "nccl" if args.device != "cpu" and torch.cuda.is_available() else "gloo"
        )
    tf32 = torch.backends.cuda.matmul.allow_tf32  # train_ranks turns it on for a GPU run
    try:
        return train_ranks(args, ranks)
    finally:
        # an in-process caller (a test, a notebook) gets its own matmul precision back: left on,
        # TF32 moved a later GPU test's float32 comparison past its tolerance
        torch.backends.cuda.matmul.allow_tf32 = tf32
        if ranks.world_size > 1:
            # the DDP wrappers hold the process group in reference cycles (their autograd hooks);
            # left to interpreter exit, gloo's threads are torn down during finalisation, the
            # likely cause of a rank that once died of SIGABRT ("terminate called without an
            # active exception") after training in CI
            gc.collect()
            torch.distributed.destroy_process_group()


def model_configs(args: argparse.Namespace, feature_cfg: FeatureConfig) -> list[ModelConfig]:
    """The --models pairs, or every --backends entry with every --norms entry; sized by the
    model options."""
    overrides = dataclass_overrides(args, ModelConfig, DERIVED_MODEL_FIELDS)
    if args.models is not None:
        if args.backends is not None or args.norms is not None:
            raise TrainError("models: names the models itself; drop --backends and --norms")
        pairs = model_pairs(args.models)
    else:
        pairs = [
            (backend, norm)
            for backend in split_names(args.backends or "mha", BACKENDS, "backends")
            for norm in split_names(args.norms or "rmsnorm", NORMS, "norms")
        ]
    return [
        model_config_for(feature_cfg, len(CLASSES), attn_backend=backend, norm=norm, **overrides)
        for backend, norm in pairs
    ]


def model_pairs(text: str) -> list[tuple[str, str]]:
    """`mha-rmsnorm,gqa-layernorm` -> [(backend, norm), ...]."""
    pairs = []
    for entry in split_names(text, None, "models"):
        backend, _, norm = entry.rpartition("-")
        if backend not in BACKENDS or norm not in NORMS:
            raise TrainError(
                f"models: {entry!r} is not BACKEND-NORM; backends: {', '.join(BACKENDS)}; "
                f"norms: {', '.join(NORMS)}"
            )
        pairs.append((backend, norm))
    return pairs


def train_step(
    m: Member,
    x: torch.Tensor,
    recording: torch.Tensor | None,
    labels: torch.Tensor,
    clip: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on features x [B, T, F] (and the recording's, [B, F], if the model
    reads them); returns (loss, correct count), not synced."""
    with torch.autocast(x.device.type, torch.bfloat16, enabled=x.device.type == "cuda"):
        logits = m.module(x, recording=recording)  # [B, C]
    loss = F.cross_entropy(logits.float(), labels)
    m.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(m.model.parameters(), clip)
    m.optimizer.step()
    m.scheduler.step()
    return loss.detach(), (logits.argmax(-1) == labels).sum()


class Meter:
    """Loss and accuracy per model since the last report, kept on the device so that reading them
    (a sync) happens once per report rather than once per step."""

    def __init__(self, names: list[str], examples_per_step: int, device: torch.device) -> None:
        self.names, self.examples_per_step = names, examples_per_step
        self.loss = torch.zeros(len(names), device=device)
        self.correct = torch.zeros(len(names), device=device)
        self.steps, self.since = 0, time.perf_counter()

    def add(self, losses_and_correct: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """One step's (loss, correct count) per model."""
        for i, (loss, correct) in enumerate(losses_and_correct):
            self.loss[i] += loss
            self.correct[i] += correct
        self.steps += 1

    def report(self, step: int, lr: float, world_size: int) -> dict[str, Any]:
        now = time.perf_counter()
        loss = (self.loss / self.steps).tolist()
        accuracy = (self.correct / (self.steps * self.examples_per_step)).tolist()
        record = {
            "event": "train",
            "step": step,
            "loss": dict(zip(self.names, loss, strict=True)),
            "accuracy": dict(zip(self.names, accuracy, strict=True)),
            "lr": lr,
            "examples_per_s": self.steps * self.examples_per_step * world_size / (now - self.since),
        }
        self.loss.zero_()
        self.correct.zero_()
        self.steps, self.since = 0, now
        return record


def train_ranks(args: argparse.Namespace, ranks: Ranks) -> int:
    started = time.perf_counter()
    if args.time_limit is not None and args.stop_at is not None:
        raise TrainError("time-limit: give --time-limit or --stop-at, not both")
    if args.time_limit is not None and args.warmup_steps is None:
        # the end is fitted once warm-up's steps are timed; 5 % of a --steps the clock cuts
        # short can outlast the limit, leaving the run stopped on a rising lr
        raise TrainError("time-limit: give --warmup-steps with it (the default is 5% of --steps)")
    device = pick_device(args.device, ranks.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
    feature_cfg = FeatureConfig(**dataclass_overrides(args, FeatureConfig, ()))
    lengths = LengthMix.parse(args.lengths)
    snr_range = parse_snr_range(args.snr_range)
    norm_fit = NormFitData(args.norm_fit_per_class, lengths)
    members = [
        build_member(cfg, feature_cfg, args, device, ranks, norm_fit)
        for cfg in model_configs(args, feature_cfg)
    ]
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise TrainError(f"backends: {args.backends!r} trains the same weights twice ({names})")

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    identity = run_identity(args, ranks, names, feature_cfg, lengths, snr_range)
    start, wall_before, fitted = 0, 0.0, None
    if args.resume:
        start, wall_before, fitted = load_checkpoint(out / CHECKPOINT_FILE, members, identity)
        if fitted is not None and fitted.end > args.steps:
            fitted = fitted.ending_at(args.steps, start)  # this job may ask for fewer steps
    # a cosine a time limit bent goes on from where it stands (one rebuilt over --steps from the
    # start would put the lr back near peak); a resumed run's optimizers brought the lr of the
    # last job's schedule, which a changed --steps no longer gives
    cosine = Cosine(warmup_steps(args), args.steps) if fitted is None else fitted
    set_schedules(members, cosine)
    end = cosine.end if args.stop_at is None else min(cosine.end, args.stop_at)
    budget = None
    if args.time_limit is not None:
        budget = TimeBudget(
            args.time_limit, started, fit_after=warmup_steps(args) - start, planned=args.steps
        )

    loader = training_loader(
        args.seed,
        args.batch_size,
        lengths,
        start,
        ranks.rank,
        ranks.world_size,
        args.workers,
        pin_memory=device.type == "cuda",
        snr_range=snr_range,
    )
    val = None
    if args.val_per_class and ranks.main:
        val = make_eval_set(VALIDATION_SEED, args.val_per_class, VALIDATION_SAMPLES)
    last_val: dict[str, float] = {}
    log = RunLog(out, args.steps, start, enabled=ranks.main)
    log.event({"event": "start", "step": start, "args": vars_json(args), "members": names})

    meter = Meter(names, args.batch_size, device)
    t_start = time.perf_counter()
    step = start
    # a time limit may move the end later again (rfmodel/time_budget.py), up to --steps, also
    # past the end a resumed run's checkpoint brought; a run already at its end does no more
    last = args.steps if budget is not None and start < end else end
    for step, (iq, labels, _snr) in zip(range(start + 1, last + 1), loader, strict=False):
        iq = iq.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        # float32, outside autocast: FFTs in fp32
        x = compute_features(iq, feature_cfg)  # [B, T, F]
        recording = recording_features(iq, feature_cfg)  # [B, F] or None
        losses_and_correct = []
        for m in members:
            # dropout's random stream is a function of (seed, model, rank, step) like the data,
            # so a checkpoint needs no RNG state, a resumed run draws what an uninterrupted one
            # does, and a model draws the same alone or beside others
            key = (DROPOUT_KEY, zlib.crc32(m.name.encode()), ranks.rank, step)
            torch.manual_seed(derived_seed(args.seed, *key))
            losses_and_correct.append(train_step(m, x, recording, labels, args.clip))
        meter.add(losses_and_correct)
        log.bar.update(1)
        if budget is not None:
            moved = fit_to_budget(budget, step - start, step, cosine, args, ranks, device, log)
            if moved is not None:
                cosine = fitted = moved
                set_schedules(members, cosine)
                end = cosine.end

        if step % args.log_every == 0 or step == end:
            # the lr in effect for the next step: a time limit that moved the end sets it at once
            lr = members[0].optimizer.param_groups[0]["lr"]
            record = meter.report(step, lr, ranks.world_size)
            log.bar.set_postfix_str(progress_text(record))
            log.event(record)
        if val is not None and (step % args.eval_every == 0 or step == end):
            last_val = validate(members, feature_cfg, val, device)
            text = " ".join(f"{n} {a:.3f}" for n, a in last_val.items())
            log.event(
                {"event": "validation", "step": step, "accuracy": last_val},
                f"validation accuracy at step {step}: {text}",
            )
        if ranks.main and (step % args.checkpoint_every == 0 or step == end):
            wall = wall_before + time.perf_counter() - t_start
            save_checkpoint(out / CHECKPOINT_FILE, members, step, fitted, identity, wall)
        if step == end:
            break

    wall = wall_before + time.perf_counter() - t_start
    log.close()
    if args.stop_at is not None and step < cosine.end:
        if ranks.main:
            print(f"stopped at step {step} of {args.steps}; continue with --resume")
        return 0
    if ranks.main:
        record = training_record(args, ranks, lengths, snr_range, names, wall, device, step)
        for m in members:
            record["validation_accuracy"] = last_val.get(m.name)
            if m.initialised_from is not None:
                record["initialised_from"] = m.initialised_from
            path = save_bundle(out / m.name, m.model, feature_cfg, CLASSES, training=record)
            print(f"wrote {path}")
    return 0


def set_schedules(members: list[Member], cosine: Cosine) -> None:
    """Every model's lr follows `cosine` from its next step on."""
    for m in members:
        m.scheduler.lr_lambdas = [cosine.factor] * len(m.optimizer.param_groups)
        for group, base in zip(m.optimizer.param_groups, m.scheduler.base_lrs, strict=True):
            group["lr"] = base * cosine.factor(m.scheduler.last_epoch)


def fit_to_budget(
    budget: TimeBudget,
    done: int,
    step: int,
    cosine: Cosine,
    args: argparse.Namespace,
    ranks: Ranks,
    device: torch.device,
    log: RunLog,
) -> Cosine | None:
    """The cosine bent to end where --time-limit moves the run's last step after `done` steps of
    this job, on every rank alike, and the log says so; None while the end stands."""
    fitted = budget.after_step(done, step, cosine.end)
    if ranks.world_size > 1 and budget.decides(done):
        # the ranks' clocks differ a little: all stop at the earliest end any of them needs
        agreed = torch.tensor([cosine.end if fitted is None else fitted], device=device)
        torch.distributed.all_reduce(agreed, op=torch.distributed.ReduceOp.MIN)
        fitted = int(agreed.item()) if int(agreed.item()) != cosine.end else None
    if fitted is None:
        return None
    elapsed_s = budget.elapsed_s(time.perf_counter())
    log.event(
        {"event": "end_moved", "step": step, "end": fitted, "elapsed_s": elapsed_s},
        f"time limit {args.time_limit:g} s: the run ends at step {fitted} of {args.steps} "
        f"({elapsed_s:.0f} s in)",
    )
    return cosine.ending_at(fitted, step)


def progress_text(record: dict[str, Any]) -> str:
    per_model = " ".join(
        f"{name.split('-')[0]} {loss:.3f}/{record['accuracy'][name]:.0%}"
        for name, loss in record["loss"].items()
    )
    return f"loss/acc {per_model} lr {record['lr']:.2e} {record['examples_per_s']:,.0f} ex/s"


def training_record(args, ranks, lengths, snr_range, names, wall, device, steps) -> dict[str, Any]:
    return {
        "steps": steps,
        # fewer than planned where --time-limit ended the cosine early
        "planned_steps": args.steps,
        "time_limit_s": args.time_limit,
        "batch_size": args.batch_size * ranks.world_size,
        "batch_size_per_rank": args.batch_size,
        "world_size": ranks.world_size,
        "examples": steps * args.batch_size * ranks.world_size,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "warmup_steps": warmup_steps(args),
        "clip": args.clip,
        "seed": args.seed,
        "lengths": str(lengths),
        "snr_range": snr_range.record(),
        "validation": {"seed": VALIDATION_SEED, "n_per_class": args.val_per_class},
        "trained_with": names,
        "wall_time_s": round(wall, 2),
        "device": device_name(device),
        "torch": torch.__version__,
        "git_commit": git_commit(),
    }


def vars_json(args: argparse.Namespace) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k[0] != "_"}
