"""`rfcls train` on CPU with a tiny model: it learns, resumes exactly, trains several models in
lockstep and writes loadable bundles."""

import itertools
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from preprocessing.features import FeatureConfig, compute_features
from preprocessing.recording import recording_features
from rfmodel import train as train_module
from rfmodel.bundle import load_bundle
from rfmodel.classifier import SCALE_FLOOR
from rfmodel.config import ModelConfig
from rfmodel.data import CLASSES, make_eval_set
from rfmodel.lr_schedule import MIN_LR_RATIO, Cosine
from rfmodel.time_budget import TimeBudget
from rfmodel.train import (
    CHECKPOINT_FILE,
    LOG_FILE,
    NORM_FIT_SEED,
    NORM_FIT_SNRS,
    RunLog,
)
from service.cli import main

# every size small, so a step takes milliseconds on CPU
TINY = [
    *("--d-model", "16", "--n-layers", "1", "--n-heads", "2", "--n-kv-heads", "1"),
    *("--mlp-ratio", "2", "--n-latents", "4", "--kv-lora-rank", "8", "--qk-rope-head-dim", "4"),
    *("--qk-nope-head-dim", "4", "--v-head-dim", "8", "--nfft", "32", "--hop", "32"),
    *("--lengths", "512", "--batch-size", "28", "--workers", "0", "--device", "cpu"),
    *("--val-per-class", "0", "--log-every", "5", "--lr", "3e-3", "--norm-fit-per-class", "10"),
]


def train(out, *extra) -> int:
    return main(["train", "--out", str(out), *TINY, *extra])


def log_events(out, event):
    lines = (out / LOG_FILE).read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == event]


def test_warmup_then_cosine_to_the_floor():
    factor = Cosine(warmup=10, end=110).factor
    assert factor(0) == pytest.approx(0.1)
    assert factor(9) == pytest.approx(1.0)
    assert factor(60) == pytest.approx(MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5)
    assert factor(110) == pytest.approx(MIN_LR_RATIO)
    after_warmup = [factor(s) for s in range(10, 111)]
    assert all(a >= b for a, b in itertools.pairwise(after_warmup))


def check_tiny_model_learns(out, device: str, *extra: str):
    faster = ("--d-model", "32", "--lr", "1e-2", "--warmup-steps", "5", "--log-every", "10")
    validation = ("--val-per-class", "2", "--eval-every", "40")
    assert train(out, "--steps", "40", "--device", device, *faster, *validation, *extra) == 0
    losses = [r["loss"]["mha-rmsnorm"] for r in log_events(out, "train")]
    assert len(losses) == 4
    assert losses[-1] < losses[0] - 0.1, losses
    assert losses[-1] < math.log(len(CLASSES)), losses  # below a uniform guess
    (validation,) = log_events(out, "validation")
    record = load_bundle(out / "mha-rmsnorm").training
    assert record["steps"] == 40 and record["batch_size"] == 28 and record["seed"] == 0
    assert record["snr_range"] == [-10.0, 30.0]
    assert record["validation_accuracy"] == validation["accuracy"]["mha-rmsnorm"]
    assert record["wall_time_s"] > 0 and record["device"].startswith(device)


def test_tiny_model_learns(tmp_path):
    check_tiny_model_learns(tmp_path, "cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("extra", [(), ("--compile",)], ids=["eager", "compiled"])
def test_tiny_model_learns_on_cuda_in_mixed_precision(tmp_path, extra):
    tf32 = torch.backends.cuda.matmul.allow_tf32
    check_tiny_model_learns(tmp_path, "cuda", *extra)
    assert torch.backends.cuda.matmul.allow_tf32 == tf32  # trained with TF32, handed back as found


def test_resumed_run_ends_on_the_same_weights(tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    common = ("--steps", "16", "--backends", "mha,latte", "--dropout", "0.1")
    assert train(straight, *common) == 0
    # interrupted at step 7 (batches built by two worker processes), then resumed in-process
    assert train(split, *common, "--stop-at", "7", "--workers", "2") == 0
    assert not (split / "mha-rmsnorm").exists()
    assert torch.load(split / CHECKPOINT_FILE, weights_only=True)["step"] == 7
    assert train(split, *common, "--resume") == 0
    assert [r["step"] for r in log_events(split, "start")] == [0, 7]
    assert [r["step"] for r in log_events(split, "train")] == [5, 7, 10, 15, 16]
    for name in ("mha-rmsnorm", "latte-rmsnorm"):
        a = load_file(straight / name / "model.safetensors")
        b = load_file(split / name / "model.safetensors")
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    a_opt = torch.load(straight / CHECKPOINT_FILE, weights_only=True)["members"]
    b_opt = torch.load(split / CHECKPOINT_FILE, weights_only=True)["members"]
    for name in a_opt:
        for (ka, va), (kb, vb) in zip(
            a_opt[name]["optimizer"]["state"].items(),
            b_opt[name]["optimizer"]["state"].items(),
            strict=True,
        ):
            assert ka == kb and all(torch.equal(va[s], vb[s]) for s in va)


def test_resume_refuses_a_changed_run(tmp_path, capsys):
    assert train(tmp_path, "--steps", "4", "--stop-at", "2") == 0
    assert train(tmp_path, "--steps", "4", "--resume", "--batch-size", "14") == 2
    assert "batch_size" in capsys.readouterr().err
    assert train(tmp_path / "empty", "--steps", "4", "--resume") == 2


def test_lockstep_writes_one_loadable_bundle_per_backend(tmp_path):
    backends = ["mha", "gqa", "latent", "mla", "latte"]
    assert train(tmp_path, "--steps", "3", "--backends", ",".join(backends)) == 0
    for backend in backends:
        raw = json.loads((tmp_path / f"{backend}-rmsnorm" / "config.json").read_text())
        bundle = load_bundle(tmp_path / f"{backend}-rmsnorm")
        assert bundle.model_config == ModelConfig.from_dict(raw["model"])
        assert bundle.model_config.attn_backend == backend
        assert bundle.model_config.d_model == 16 and bundle.model_config.n_latents == 4
        assert bundle.feature_config == FeatureConfig(nfft=32, hop=32)
        assert bundle.classes == tuple(CLASSES)
        assert bundle.training["trained_with"] == [f"{b}-rmsnorm" for b in backends]
        x = torch.randn(2, 31, bundle.model_config.n_features)
        recording = torch.randn(2, bundle.model_config.n_recording_features)  # the default
        assert bundle.model(x, recording=recording).shape == (2, len(CLASSES))


def test_feature_lists_from_the_command_line_reach_the_bundle(tmp_path):
    features = ("--transforms", "x,x4", "--sorted-transforms", "x4")
    assert train(tmp_path, "--steps", "1", *features) == 0
    bundle = load_bundle(tmp_path / "mha-rmsnorm")
    expected = FeatureConfig(nfft=32, hop=32, transforms=("x", "x4"), sorted_transforms=("x4",))
    assert bundle.feature_config == expected
    assert bundle.model_config.n_features == 2 * 32


def test_a_model_trains_the_same_alone_or_in_a_group(tmp_path):
    assert train(tmp_path / "alone", "--steps", "3", "--norms", "layernorm") == 0
    group = ("--backends", "gqa,mha", "--norms", "rmsnorm,layernorm")
    assert train(tmp_path / "group", "--steps", "3", *group) == 0
    assert len(list((tmp_path / "group").glob("*/model.safetensors"))) == 4
    a = load_file(tmp_path / "alone" / "mha-layernorm" / "model.safetensors")
    b = load_file(tmp_path / "group" / "mha-layernorm" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_models_trains_exactly_the_named_pairs(tmp_path):
    assert train(tmp_path, "--steps", "1", "--models", "latte-rmsnorm,mha-layernorm") == 0
    assert sorted(p.parent.name for p in tmp_path.glob("*/model.safetensors")) == [
        "latte-rmsnorm",
        "mha-layernorm",
    ]


@pytest.mark.parametrize(
    ("option", "field"),
    [
        (("--models", "mha"), "models"),
        (("--models", "bogus-rmsnorm"), "models"),
        (("--models", "mha-batchnorm,"), "models"),
        (("--models", ","), "models"),
        (("--models", "mha-rmsnorm", "--norms", "layernorm"), "models"),
        (("--backends", "mha,flash"), "backends"),
        (("--backends", "mha,bogus"), "backends"),
        (("--norms", "batchnorm"), "norms"),
        (("--lengths", "4096:-1"), "lengths"),
        (("--lengths", "100"), "lengths"),  # shorter than the generator makes
        (("--snr-range", "30,20"), "snr-range"),
        (("--snr-range=inf,inf",), "snr-range"),
        (("--norm-eps", "nan"), "norm_eps"),
        (("--snr-range", "0"), "snr-range"),
        (("--snr-range", "0,1:0"), "snr-range"),
        (("--n-heads", "3"), "n_heads"),
        (("--nfft", "0"), "nfft"),
        (("--transforms", "x,x3"), "transforms"),
        (("--sorted-transforms", "x5"), "sorted_transforms"),
    ],
)
def test_bad_options_fail_naming_the_field(tmp_path, capsys, option, field):
    assert train(tmp_path, "--steps", "1", *option) == 2
    assert field in capsys.readouterr().err


@pytest.mark.parametrize(
    "option",
    [
        ("--lr", "-1"),
        ("--lr", "nan"),
        ("--lr", "inf"),
        ("--weight-decay", "-1"),
        ("--clip", "0"),
        ("--warmup-steps", "-5"),
        ("--seed", "-1"),
    ],
)
def test_optimiser_options_are_checked_when_parsed(tmp_path, capsys, option):
    with pytest.raises(SystemExit) as exit_:
        train(tmp_path, "--steps", "1", *option)
    assert exit_.value.code == 2 and f"argument {option[0]}" in capsys.readouterr().err


def test_init_from_starts_each_model_from_its_bundle(tmp_path):
    first = ("--steps", "3", "--backends", "mha,gqa")
    assert train(tmp_path / "first", *first) == 0
    # at learning rate 0 (weight decay scales with it) the weights stay where they started
    again = ("--steps", "2", "--seed", "1", "--backends", "mha,gqa", "--lr", "0")
    assert train(tmp_path / "again", *again, "--init-from", str(tmp_path / "first")) == 0
    for name in ("mha-rmsnorm", "gqa-rmsnorm"):
        start = load_file(tmp_path / "first" / name / "model.safetensors")
        end = load_file(tmp_path / "again" / name / "model.safetensors")
        assert all(torch.equal(start[k], end[k]) for k in start), name
        record = load_bundle(tmp_path / "again" / name).training
        first_bundle = load_bundle(tmp_path / "first" / name)
        assert record["initialised_from"]["version"] == first_bundle.version
        assert record["initialised_from"]["training"]["steps"] == 3
    # and a random start at the same seed does move them: the test above can fail
    assert train(tmp_path / "fresh", *again) == 0
    fresh = load_file(tmp_path / "fresh" / "mha-rmsnorm" / "model.safetensors")
    start = load_file(tmp_path / "first" / "mha-rmsnorm" / "model.safetensors")
    assert not all(torch.equal(start[k], fresh[k]) for k in start)


def test_a_recording_head_trains_and_can_be_added_by_a_fine_tune(tmp_path, capsys):
    linear = ("--no-recording-band-limit", "--recording-hidden", "0")  # the head alone
    assert train(tmp_path / "plain", *linear, "--steps", "2", "--recording-segment", "0") == 0
    head = ("--recording-segment", "128", *linear)
    # added at learning rate 0: the transformer keeps the bundle's weights, the head its zeros
    added = (*head, "--steps", "1", "--lr", "0", "--init-from", str(tmp_path / "plain"))
    assert train(tmp_path / "added", *added) == 0
    start = load_file(tmp_path / "plain" / "mha-rmsnorm" / "model.safetensors")
    end = load_file(tmp_path / "added" / "mha-rmsnorm" / "model.safetensors")
    assert all(torch.equal(start[k], end[k]) for k in start)
    added = {"recording_head.weight", "recording_head.bias", "recording_shift", "recording_scale"}
    assert set(end) - set(start) == added
    assert not end["recording_head.weight"].any()
    # trained, the head moves and the bundle says what the service must compute
    assert (
        train(tmp_path / "trained", *head, "--steps", "3", "--init-from", str(tmp_path / "plain"))
        == 0
    )
    bundle = load_bundle(tmp_path / "trained" / "mha-rmsnorm")
    assert bundle.model_config.recording_head and bundle.feature_config.recording_segment == 128
    assert bundle.model.recording_head.weight.abs().sum() > 0
    # taking the head away is not a fine-tune
    capsys.readouterr()
    removed = ("--recording-segment", "0", *linear, "--steps", "1")
    assert train(tmp_path / "removed", *removed, "--init-from", str(tmp_path / "trained")) == 2
    assert "recording_segment 128 (this run: 0)" in capsys.readouterr().err


def test_a_fine_tune_adds_the_band_view_and_the_mlp_from_the_bundles_predictions(tmp_path):
    head = ("--recording-segment", "128")
    linear = (*head, "--no-recording-band-limit", "--recording-hidden", "0")
    assert train(tmp_path / "linear", *linear, "--steps", "2") == 0
    more = ("--recording-band-limit", "--recording-hidden", "8", "--lr", "0")
    added = (*head, *more, "--steps", "1", "--init-from", str(tmp_path / "linear"))
    assert train(tmp_path / "added", *added) == 0
    before, after = (load_bundle(tmp_path / d / "mha-rmsnorm") for d in ("linear", "added"))
    assert after.feature_config.recording_band_limit and after.feature_config.recording_views == 2
    assert (after.model_config.recording_views, after.model_config.recording_hidden) == (2, 8)
    iq = torch.randn(3, 512, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))

    def logits(bundle):
        cfg = bundle.feature_config
        with torch.no_grad():
            return bundle.model(compute_features(iq, cfg), recording=recording_features(iq, cfg))

    torch.testing.assert_close(logits(after), logits(before), rtol=0, atol=1e-6)
    # the band view was read: trained, its columns of the linear head move
    trained = (*head, *more[:3], "--steps", "3", "--init-from", str(tmp_path / "linear"))
    assert train(tmp_path / "trained", *trained) == 0
    weight = load_bundle(tmp_path / "trained" / "mha-rmsnorm").model.recording_head.weight
    assert weight[:, weight.shape[1] // 2 :].abs().sum() > 0


def test_the_recording_norm_is_fitted_and_a_fine_tune_may_switch_to_it(tmp_path):
    old_head = ("--recording-norm", "layer", "--recording-layers", "1", "--recording-dropout", "0")
    assert train(tmp_path / "layer", *old_head, "--steps", "2") == 0
    # switched at learning rate 0: the transformer keeps its weights, the heads restart at zero
    switched = ("--steps", "1", "--lr", "0", "--init-from", str(tmp_path / "layer"))
    assert train(tmp_path / "standard", *switched) == 0
    before = load_file(tmp_path / "layer" / "mha-rmsnorm" / "model.safetensors")
    after = load_file(tmp_path / "standard" / "mha-rmsnorm" / "model.safetensors")
    kept = [k for k in before if not k.startswith("recording_")]
    assert kept and all(torch.equal(before[k], after[k]) for k in kept)
    model = load_bundle(tmp_path / "standard" / "mha-rmsnorm").model
    assert model.cfg.recording_norm == "standard" and model.cfg.recording_layers == 2
    assert not model.recording_head.weight.any() and not model.recording_mlp[-1].weight.any()
    # each value's mean and spread over the features of the fitting recordings (10 per class,
    # TINY), at the length mix's length
    data = make_eval_set(NORM_FIT_SEED, 10, 512, snr_values=NORM_FIT_SNRS)
    features = recording_features(torch.from_numpy(data.iq), FeatureConfig(nfft=32, hop=32))
    features = features.double()
    torch.testing.assert_close(model.recording_shift, features.mean(0).float())
    scale = features.std(0).clamp_min(SCALE_FLOOR).float()
    torch.testing.assert_close(model.recording_scale, scale)
    assert scale.min() > 10 * SCALE_FLOOR  # the floor did not decide it


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (("--d-model", "32"), "d_model 16 (this run: 32)"),
        (("--transforms", "x,x2"), "transforms"),
        (("--backends", "latte"), "latte-rmsnorm"),
    ],
)
def test_init_from_refuses_other_settings_naming_them(tmp_path, capsys, extra, named):
    assert train(tmp_path / "first", "--steps", "1") == 0
    capsys.readouterr()
    assert (
        train(tmp_path / "again", "--steps", "1", "--init-from", str(tmp_path / "first"), *extra)
        == 2
    )
    out = capsys.readouterr().err
    assert "init-from" in out and named in out, out


@pytest.mark.slow
def test_a_compiled_step_trains_as_the_eager_one(tmp_path):
    # no dropout: a compiled graph draws other random numbers than eager kernels
    common = ("--steps", "3", "--backends", "mha,latent", "--recording-dropout", "0")
    assert train(tmp_path / "eager", *common) == 0
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    assert train(tmp_path / "compiled", *common, "--compile") == 0
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 2  # one model each, at least
    for name in ("mha-rmsnorm", "latent-rmsnorm"):
        bundles = [
            load_file(tmp_path / d / name / "model.safetensors") for d in ("eager", "compiled")
        ]
        assert bundles[0].keys() == bundles[1].keys()  # no torch.compile wrapper prefix in it
        # the checkpoints' float32 weights: the bundles' parameters are rounded to float16
        eager, compiled = (
            torch.load(tmp_path / d / CHECKPOINT_FILE, weights_only=True)["members"][name]["model"]
            for d in ("eager", "compiled")
        )
        for k in eager:
            # fused kernels round differently; three steps keep the difference near float eps,
            # bar the recording MLP's layers, whose gradients start at zero and whose round-off
            # Adam scales up to steps (tests/rfmodel/test_train_ddp.py): within a tenth of one
            # step of the learning rate, 3e-3
            atol = 3e-4 if k.startswith("recording_mlp.") else 1e-5
            torch.testing.assert_close(compiled[k], eager[k], rtol=1e-4, atol=atol, msg=k)
    eager_loss = log_events(tmp_path / "eager", "train")[-1]["loss"]
    compiled_loss = log_events(tmp_path / "compiled", "train")[-1]["loss"]
    assert compiled_loss == pytest.approx(eager_loss, rel=1e-4)


def test_the_snr_range_reaches_the_bundle(tmp_path):
    assert train(tmp_path, "--steps", "1", "--snr-range=-5,30") == 0
    assert load_bundle(tmp_path / "mha-rmsnorm").training["snr_range"] == [-5.0, 30.0]


def test_an_snr_mix_reaches_the_bundle_with_its_shares(tmp_path):
    assert train(tmp_path, "--steps", "1", "--snr-range=-10,-5:1,-5,30:3") == 0
    record = load_bundle(tmp_path / "mha-rmsnorm").training["snr_range"]
    assert record == [[-10.0, -5.0, 0.25], [-5.0, 30.0, 0.75]]


def test_an_out_that_is_a_file_is_one_line_exit_2(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert train(blocker, "--steps", "1") == 2
    assert str(blocker) in capsys.readouterr().err


def test_a_diverged_loss_is_logged_as_json_null(tmp_path):
    log = RunLog(tmp_path, total=1, start=0, enabled=True)
    log.event({"event": "log", "loss": {"mha": float("nan"), "gqa": 1.5}, "lr": float("inf")})
    log.close()

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    record = json.loads((tmp_path / LOG_FILE).read_text(), parse_constant=refuse)
    assert record == {"event": "log", "loss": {"mha": None, "gqa": 1.5}, "lr": None}


def die_at_step(monkeypatch, n: int) -> None:
    """The job's machine goes away as it starts its n-th step (after n - 1 steps)."""
    calls = 0
    real_step = train_module.train_step

    def dying(*args):
        nonlocal calls
        calls += 1
        if calls == n:
            raise RuntimeError("the job's machine went away")
        return real_step(*args)

    monkeypatch.setattr(train_module, "train_step", dying)


def test_a_resumed_time_limited_run_keeps_its_fitted_cosine(tmp_path, monkeypatch):
    """A time limit moved the cosine's end from step 20 to 10 at step 3; the job then died at
    step 7. The resumed run goes on down that bent cosine to step 10, not back up a cosine over
    20 steps."""

    def fits_the_end_to_10_at_step_3(self, done, step, end, now=None):
        return 10 if step == 3 and end > 10 else None

    monkeypatch.setattr(TimeBudget, "after_step", fits_the_end_to_10_at_step_3)
    die_at_step(monkeypatch, 7)
    common = ("--steps", "20", "--warmup-steps", "2", "--log-every", "1", "--checkpoint-every", "2")
    with pytest.raises(RuntimeError, match="went away"):
        train(tmp_path, *common, "--time-limit", "1000")
    assert torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)["step"] == 6
    monkeypatch.undo()
    assert train(tmp_path, *common, "--resume") == 0
    lr = {r["step"]: r["lr"] for r in log_events(tmp_path, "train")}
    assert max(lr) == 10  # the run ends where the time limit put its end
    bent = Cosine(2, 20).ending_at(10, 3)
    for step in (8, 9, 10):
        assert lr[step] == pytest.approx(3e-3 * bent.factor(step)), step
    assert load_bundle(tmp_path / "mha-rmsnorm").training["steps"] == 10


def test_a_diverged_run_ends_with_an_error_and_no_bundle(tmp_path, capsys):
    """Weights blown up past float16's range (which would store as inf), or to NaN: a clear
    error, not a bundle that answers every request with one class."""
    exploding = ("--lr", "1e4", "--clip", "1e30", "--checkpoint-every", "2")
    assert train(tmp_path, "--steps", "4", *exploding) == 2
    err = capsys.readouterr().err
    assert "diverged" in err or "NaN or infinite" in err, err
    assert not (tmp_path / "mha-rmsnorm").exists()


def test_a_resume_whose_steps_would_move_the_default_warmup_is_refused(tmp_path, capsys):
    """The default warm-up is a twentieth of --steps: a resume with more steps would change it
    under a run already past it, and the lr would jump."""
    assert train(tmp_path, "--steps", "40", "--stop-at", "2") == 0
    assert train(tmp_path, "--steps", "80", "--resume") == 2
    assert "warmup_steps is 4" in capsys.readouterr().err
    assert (
        train(tmp_path, "--steps", "80", "--warmup-steps", "2", "--resume", "--stop-at", "3") == 0
    )


def test_a_finished_run_resumed_with_more_steps_goes_on_to_them(tmp_path):
    """Only an end a time limit moved stays where it was on resume: a run that ended at its
    planned --steps is extended by a larger one."""
    assert train(tmp_path, "--steps", "4", "--log-every", "1") == 0
    assert train(tmp_path, "--steps", "8", "--log-every", "1", "--resume") == 0
    assert max(r["step"] for r in log_events(tmp_path, "train")) == 8


def test_a_run_stopped_where_its_time_ran_out_logs_the_floor_lr(tmp_path, monkeypatch):
    """When the time is up the budget ends the run at the step it stands on: its cosine ends
    there too, and the log's last lr says so (the lr in effect, not the scheduler's last)."""

    def time_is_up_at_step_5(self, done, step, end, now=None):
        return step if step == 5 else None

    monkeypatch.setattr(TimeBudget, "after_step", time_is_up_at_step_5)
    args = ("--steps", "50", "--warmup-steps", "2", "--log-every", "100", "--time-limit", "1000")
    assert train(tmp_path, *args) == 0
    (last,) = log_events(tmp_path, "train")
    assert last["step"] == 5 and last["lr"] == pytest.approx(3e-3 * MIN_LR_RATIO)
