"""Experiment: how well a linear model separates each confused pair at SNR 10-30 dB (or --snr),
from the frame tokens pooled (their mean and standard deviation over the recording) or from the
recording's own features (preprocessing.recording), beside the shipped mha-rmsnorm's choice
between the pair's two logits. 1,600 recordings of 4,096 samples per pair, the first 1,200 to fit
on, the last 400 to score.

    python docs/experiments/recording_features/linear_probe.py [--snr LOW,HIGH]
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from preprocessing.features import FeatureConfig, compute_features
from preprocessing.recording import recording_features
from rfmodel.bundle import Bundle, load_bundle, shipped_model_dir
from rfmodel.data import CLASSES, generate_example
from rfmodel.iq_logits import iq_logits

PAIRS = (("qpsk", "8psk"), ("16qam", "64qam"), ("gfsk", "gmsk"))
N, FIT = 1600, 1200


def snr_range(default: str) -> tuple[float, float]:
    """--snr LOW,HIGH from the command line: the in-band SNR range in dB."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--snr", default=default, help="in-band SNR range in dB, uniform")
    low, high = map(float, parser.parse_args().snr.split(","))
    return low, high


def pair_recordings(pair: tuple[str, str], low: float, high: float) -> Iterator[torch.Tensor]:
    """The N recordings of a pair, [1, 4096] complex each, alternating (even: pair[0]), at in-band
    SNRs uniform in [low, high]; the same for every script that reads them."""
    rng = np.random.default_rng(5)
    for i in range(N):
        example = generate_example(pair[i % 2], 4096, rng, float(rng.uniform(low, high)))
        yield torch.from_numpy(example.iq[None])


def pooled_frames(iq: torch.Tensor, cfg: FeatureConfig) -> torch.Tensor:
    frames = compute_features(iq, cfg)[0]
    return torch.cat([frames.mean(0), frames.std(0)])


def held_out_accuracy(x: torch.Tensor, y: torch.Tensor) -> float:
    mean, std = x[:FIT].mean(0), x[:FIT].std(0) + 1e-6
    x = (x - mean) / std
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=200)

    def loss():
        optimizer.zero_grad()
        value = F.binary_cross_entropy_with_logits(x[:FIT] @ w + b, y[:FIT].float())
        value = value + 1e-3 * w.square().sum()
        value.backward()
        return value

    optimizer.step(loss)
    return float((((x[FIT:] @ w + b) > 0).long() == y[FIT:]).float().mean())


def shipped_pair_accuracy(
    bundle: Bundle, iq: torch.Tensor, y: torch.Tensor, pair: tuple[str, str]
) -> float:
    """The shipped model on the scored recordings, choosing between the pair's logits."""
    with torch.no_grad():
        logits = iq_logits(bundle.model, iq[FIT:], bundle.feature_config)
    chosen = logits[:, [CLASSES.index(c) for c in pair]].argmax(-1)
    return float((chosen == y[FIT:]).float().mean())


def main() -> None:
    low, high = snr_range("10,30")
    torch.set_num_threads(1)
    cfg = FeatureConfig()
    bundle = load_bundle(shipped_model_dir("mha"))
    for pair in PAIRS:
        views: dict[str, list[torch.Tensor]] = {"pooled frame tokens": [], "recording": []}
        recordings = []
        for iq in pair_recordings(pair, low, high):
            views["pooled frame tokens"].append(pooled_frames(iq, cfg))
            views["recording"].append(recording_features(iq, cfg)[0])
            recordings.append(iq[0])
        y = torch.arange(N) % 2
        scores = {name: held_out_accuracy(torch.stack(x), y) for name, x in views.items()}
        scores["shipped mha"] = shipped_pair_accuracy(bundle, torch.stack(recordings), y, pair)
        print(f"{pair[0]}/{pair[1]}: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))


if __name__ == "__main__":
    main()
