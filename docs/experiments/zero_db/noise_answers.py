"""How often a shipped model answers "noise" for a signal, per in-band SNR, on the model card's
held-out set (`rfcls evaluate` keeps no confusion matrix per SNR). CPU, about a minute a model.

    python docs/experiments/zero_db/noise_answers.py rfmodel/weights/mha-rmsnorm
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from rfmodel.bundle import load_bundle
from rfmodel.data import CLASSES, make_eval_set
from rfmodel.evaluate import EVAL_SEED, predict

N_PER_CLASS, SAMPLES = 400, 4096  # the card's held-out set


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="+")
    args = parser.parse_args()
    iq, labels, snr = make_eval_set(EVAL_SEED, N_PER_CLASS, SAMPLES)
    noise = CLASSES.index("noise")
    for path in args.bundles:
        bundle = load_bundle(path, device=torch.device("cpu"))
        guess = predict(bundle.model, bundle.feature_config, iq, torch.device("cpu"))
        answered = guess == noise
        print(
            f"{path}: answers noise for {answered.sum()} of {len(guess)} recordings, "
            f"{(answered & (labels == noise)).sum()} of them noise"
        )
        for value in np.unique(snr[np.isfinite(snr)]):
            signals = (snr == value) & (labels != noise)
            print(f"  {value:+.0f} dB: {answered[signals].sum()} of {signals.sum()} signals")


if __name__ == "__main__":
    main()
