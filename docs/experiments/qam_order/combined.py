"""Experiment: do blind symbol statistics add to the shipped model's evidence on 16qam/64qam?

probe.py scored the two apart: the shipped mha ahead of every symbol-level method. This asks
whether they read different evidence: a logistic regression over the model's pair logit
difference alone, over the blind symbols' |s|^2 distribution alone (probe.features), and over
both, each fitted on one seed domain and scored on the held-out one, channel as generated.
If both together beat the model's logit alone, a symbol-level view belongs in the recording
head; if not, the model already holds what the symbols say.

    python docs/experiments/qam_order/combined.py [--train N] [--test N]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from probe import SNRS, by_snr, dataset, features, logistic, pair_logit

from rfmodel.evaluate import EVAL_SEED


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=600, help="recordings per class")
    parser.add_argument("--test", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(2)
    train_iq, train_y, _, train_f, _ = dataset(1, args.train, {})
    test_iq, test_y, snr, test_f, _ = dataset(EVAL_SEED, args.test, {})
    model = pair_logit(train_iq)[:, None], pair_logit(test_iq)[:, None]
    symbols = (
        np.stack([features(s) for s in train_f["blind"]]),
        np.stack([features(s) for s in test_f["blind"]]),
    )
    fitted = {
        "shipped mha's logit difference, refitted": model,
        "blind symbols": symbols,
        "both": (np.hstack([model[0], symbols[0]]), np.hstack([model[1], symbols[1]])),
    }
    print(f"16qam/64qam accuracy, 2-way, as generated (at SNR {' / '.join(map(str, SNRS))} dB)")
    own_choice = (model[1][:, 0] > 0).astype(int)  # probe.shipped_choice, without a second pass
    print(f"{'shipped mha, its own choice':>42}: {by_snr(own_choice == test_y, snr)}")
    for name, (train_x, test_x) in fitted.items():
        guess = logistic(train_x, train_y, test_x)
        print(f"{name:>42}: {by_snr(guess == test_y, snr)}")


if __name__ == "__main__":
    main()
