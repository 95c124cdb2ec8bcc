"""Where a model's training loss comes from, by in-band SNR: its mean cross-entropy on a grid of
SNRs 2.5 dB apart from -10 to 10 dB and 5 dB apart above, then the share of the loss of a
stream whose SNR is uniform over -10..30 dB (the training stream's default; trapezoids between
the grid's points), below -5 dB and at 10 dB or more.

    python docs/experiments/training_snr_range/loss_by_snr.py rfmodel/weights/mha-rmsnorm

(2 vCPUs, about 20 s: 200 recordings per class, 4,096 samples, a seed of its own.)"""

from __future__ import annotations

import sys

import numpy as np
import torch

from rfmodel.bundle import load_bundle
from rfmodel.calibration import calibration
from rfmodel.data.stream import make_eval_set
from rfmodel.evaluate import probabilities

SEED = 7_770_001
GRID = [-10.0, -7.5, -5.0, -2.5, 0.0, 2.5, 5.0, 7.5, 10.0, 15.0, 20.0, 25.0, 30.0]


def main(model_dir: str) -> None:
    torch.set_num_threads(2)
    evalset = make_eval_set(SEED, 200, snr_values=GRID)
    bundle = load_bundle(model_dir)
    p = probabilities(bundle.model.eval(), bundle.feature_config, evalset.iq, torch.device("cpu"))
    hit = p.argmax(axis=1) == evalset.labels
    loss = []
    for snr in GRID:
        at = evalset.snr == snr
        loss.append(calibration(p[at], evalset.labels[at])["log_loss"])
        print(f"{snr:6.1f} dB: accuracy {hit[at].mean():.3f}, cross-entropy {loss[-1]:.3f}")
    # the loss of a stream uniform over the grid's span, piece by piece between its points
    pieces = [
        (a, b, (b - a) * (la + lb) / 2)
        for a, b, la, lb in zip(GRID, GRID[1:], loss, loss[1:], strict=False)
    ]
    total = sum(area for *_, area in pieces)
    below = sum(area for _, b, area in pieces if b <= -5) / total
    high = sum(area for a, _, area in pieces if a >= 10) / total
    noise = np.isnan(evalset.snr)
    print(f"noise: cross-entropy {calibration(p[noise], evalset.labels[noise])['log_loss']:.3f}")
    print(
        "share of the signals' loss, SNR uniform -10..30 dB: "
        f"below -5 dB {below:.2f}, 10 dB or more {high:.3f}"
    )


if __name__ == "__main__":
    main(sys.argv[1])
