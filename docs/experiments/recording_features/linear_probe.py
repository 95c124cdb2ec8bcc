"""Experiment: how well a linear model separates each confused pair at SNR 10-30 dB, from the
frame tokens pooled (their mean and standard deviation over the recording) or from the
recording's own features (preprocessing.recording). 1,600 recordings of 4,096 samples per pair, the
first 1,200 to fit on, the last 400 to score.

    python docs/experiments/recording_features/linear_probe.py
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from preprocessing.features import FeatureConfig, compute_features
from preprocessing.recording import recording_features
from rfmodel.data import generate_example

PAIRS = (("qpsk", "8psk"), ("16qam", "64qam"), ("gfsk", "gmsk"))
N, FIT = 1600, 1200


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


if __name__ == "__main__":
    torch.set_num_threads(1)
    cfg = FeatureConfig()
    for pair in PAIRS:
        rng = np.random.default_rng(5)
        views: dict[str, list[torch.Tensor]] = {"pooled frame tokens": [], "recording": []}
        labels = []
        for i in range(N):
            example = generate_example(pair[i % 2], 4096, rng, float(rng.uniform(10, 30)))
            iq = torch.from_numpy(example.iq[None])
            views["pooled frame tokens"].append(pooled_frames(iq, cfg))
            views["recording"].append(recording_features(iq, cfg)[0])
            labels.append(i % 2)
        y = torch.tensor(labels)
        scores = {name: held_out_accuracy(torch.stack(x), y) for name, x in views.items()}
        print(f"{pair[0]}/{pair[1]}: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
