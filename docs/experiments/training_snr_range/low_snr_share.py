"""Does a small share of signals at -10..-5 dB in fine-tuning give back the probabilities below
-5 dB, and what does it cost at 0 dB? Scores bundles side by side on the held-out set (the
model card's: accuracy, calibration, confident answers, as prior_shift.py reports them) and on
the 0 dB set (1,000 recordings per class, `rfcls evaluate --snr 0 --n-per-class 1000`'s):

    python docs/experiments/training_snr_range/low_snr_share.py rfmodel/weights/mha-rmsnorm \\
        runs/arm_a/mha-rmsnorm runs/arm_b/mha-rmsnorm

(2 vCPUs, about 3 minutes a bundle: 19,600 recordings.) The arms are short CPU fine-tunes of
the shipped mha from one seed, alike but for `--snr-range` (README.md here)."""

from __future__ import annotations

import sys

import numpy as np
import torch
from prior_shift import log_probabilities, report

from rfmodel.bundle import load_bundle
from rfmodel.data.stream import make_eval_set
from rfmodel.evaluate import EVAL_SEED

N_PER_CLASS = 400  # the model card's held-out set
N_AT_0_DB = 1000


def main(model_dirs: list[str]) -> None:
    torch.set_num_threads(2)
    held_out = make_eval_set(EVAL_SEED, N_PER_CLASS)
    at_0_db = make_eval_set(EVAL_SEED, N_AT_0_DB, snr_values=(0.0,))
    for model_dir in model_dirs:
        bundle = load_bundle(model_dir)
        print(model_dir, bundle.training["snr_range"], f"{bundle.training['steps']} steps")
        log_held_out = log_probabilities(bundle, held_out.iq)
        report("held-out set", log_held_out, held_out.labels, held_out.snr)
        hit = log_probabilities(bundle, at_0_db.iq).argmax(axis=1) == at_0_db.labels
        signals = np.isfinite(at_0_db.snr)
        print(
            f"{'0 dB set':>24}: {hit.mean():.4f} ({hit.size} recordings), signals alone "
            f"{hit[signals].mean():.4f}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
