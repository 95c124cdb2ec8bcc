"""Data-parallel training under torchrun: two CPU processes over gloo."""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import torch

from preprocessing.features import FeatureConfig, compute_features
from preprocessing.recording import recording_features
from rfmodel import train
from rfmodel.bundle import load_bundle
from rfmodel.train_stream import LengthMix, training_loader

REPO = Path(__file__).resolve().parents[2]
TINY = [
    *("--d-model", "16", "--n-layers", "1", "--n-heads", "2", "--mlp-ratio", "2"),
    *("--nfft", "32", "--hop", "32", "--lengths", "512", "--batch-size", "14"),
    *("--workers", "0", "--device", "cpu", "--val-per-class", "0", "--steps", "3"),
    # dropout draws per rank: one process cannot draw what two do
    *("--norm-fit-per-class", "10", "--recording-dropout", "0"),
]


def test_two_ranks_train_as_one_process_on_both_sub_streams(tmp_path):
    out = tmp_path / "ddp"
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [*launch, "-m", "service", "train", "--out", str(out), *TINY]
    done = subprocess.run(command, cwd=REPO, env=env, timeout=240, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]
    bundle = load_bundle(out / "mha-rmsnorm")
    assert bundle.training["world_size"] == 2 and bundle.training["batch_size"] == 28

    # DDP averages the two ranks' gradients, which is the gradient of the mean loss over both
    # ranks' batches: one process stepping on their concatenation must reach the same weights
    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    args = parser.parse_args(["--out", str(tmp_path / "single"), *TINY])
    features = FeatureConfig(nfft=32, hop=32)
    (cfg,) = train.model_configs(args, features)
    norm_fit = train.NormFitData(args.norm_fit_per_class, LengthMix.parse(args.lengths))
    member = train.build_member(cfg, features, args, torch.device("cpu"), train.Ranks(), norm_fit)
    rank_batches = [
        iter(training_loader(0, 14, LengthMix.parse("512"), 0, rank, 2, 0, pin_memory=False))
        for rank in (0, 1)
    ]
    for _ in range(3):
        (iq0, labels0, _), (iq1, labels1, _) = (next(b) for b in rank_batches)
        iq = torch.cat([iq0, iq1])
        x, recording = compute_features(iq, features), recording_features(iq, features)
        train.train_step(member, x, recording, torch.cat([labels0, labels1]), args.clip)
    # the checkpoint's float32 weights: the bundle's parameters are rounded to float16
    checkpoint = torch.load(out / train.CHECKPOINT_FILE, weights_only=True)
    trained = checkpoint["members"]["mha-rmsnorm"]["model"]
    for name, value in member.model.state_dict().items():
        if not name.startswith("recording_mlp."):
            torch.testing.assert_close(trained[name], value, rtol=1e-5, atol=1e-6, msg=name)
            continue
        # Adam divides by the root of each gradient's second moment, so an entry whose gradient
        # is near zero turns the ranks' different summation round-off into steps of its own: the
        # recording MLP's layers, whose gradients start at zero (its output layer does), differ
        # after three steps by up to 5e-5 on an AMD EPYC and 5e-4 on an Intel Xeon, in 16 of
        # recording_mlp.0's 114,688 entries (all else by 5e-8): a few entries, each within one
        # step at the learning rate (1e-3), where a wrong gradient would move most of the layer
        off = (trained[name] - value).abs() > 1e-4
        assert off.float().mean() < 1e-3, f"{name}: {int(off.sum())} of {off.numel()} entries"
        torch.testing.assert_close(trained[name], value, rtol=0, atol=1e-3, msg=name)


def test_ranks_agree_on_the_end_a_time_limit_fits(tmp_path):
    """Each rank reads its own clock; they must end on the same step (a rank that stopped alone
    would leave the other waiting in its gradient all-reduce until the timeout below)."""
    out = tmp_path / "ddp"
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    limit = ("--steps", "1000000", "--warmup-steps", "5", "--time-limit", "25")
    command = [*launch, "-m", "service", "train", "--out", str(out), *TINY, *limit]
    done = subprocess.run(command, cwd=REPO, env=env, timeout=240, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.count("time limit 25 s: the run ends at step") >= 1
    record = load_bundle(out / "mha-rmsnorm").training
    assert record["world_size"] == 2 and 10 < record["steps"] < 1_000_000
