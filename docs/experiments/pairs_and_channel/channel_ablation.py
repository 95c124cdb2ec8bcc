"""Experiment: how much of the shipped model's confusion within the PSK/QAM pairs the channel
causes. The same recordings (same seeds) of each pair's classes at SNR 10-30 dB, scored by the
shipped mha-rmsnorm as generated and with one part of the channel switched off.

    python docs/experiments/pairs_and_channel/channel_ablation.py [--per-class N]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from rfmodel.bundle import load_bundle, shipped_model_dir
from rfmodel.data import CLASSES, generate_example
from rfmodel.evaluate import predict

PAIRS = (("qpsk", "8psk"), ("16qam", "64qam"))
SNRS = (10.0, 15.0, 20.0, 30.0)
VARIANTS = {
    "as generated": {},
    "no multipath": {"multipath": False},
    "no fading": {"fading": False},
    "no multipath, no fading": {"multipath": False, "fading": False},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-class", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    bundle = load_bundle(shipped_model_dir("mha"))
    print(f"accuracy, 14-way, per pair (at SNR {' / '.join(f'{s:g}' for s in SNRS)} dB)")
    for name, overrides in VARIANTS.items():
        scores = []
        for pair in PAIRS:
            iq, labels, snrs = [], [], []
            for label in pair:
                for j in range(args.per_class):
                    rng = np.random.default_rng([CLASSES.index(label), j])
                    snrs.append(SNRS[j % len(SNRS)])
                    example = generate_example(label, 4096, rng, snrs[-1], **overrides)
                    iq.append(example.iq)
                    labels.append(CLASSES.index(label))
            predicted = predict(
                bundle.model, bundle.feature_config, np.stack(iq), torch.device("cpu")
            )
            hit, snrs = predicted == np.array(labels), np.array(snrs)
            by_snr = " / ".join(f"{hit[snrs == snr].mean():.2f}" for snr in SNRS)
            scores.append(f"{pair[0]}/{pair[1]} {hit.mean():.3f} ({by_snr})")
        print(f"{name:>24}: " + ", ".join(scores))


if __name__ == "__main__":
    main()
