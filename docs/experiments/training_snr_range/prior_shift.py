"""Runs 11 and 12 trained on in-band SNR -5..30 dB instead of -10..30: how much of what they
gained is a shift of the classes' priors, and what their probabilities mean below -5 dB.

A per-class constant b added to the logits (logit adjustment: Menon et al., "Long-tail learning
via logit adjustment", 2021) moves a model's priors and nothing else. It is fitted by maximum
likelihood (convex; L-BFGS in float64) on a calibration set of its own (make_eval_set at
CALIBRATION_SEED: the held-out set's SNR mix, none of its recordings), on all of it or on the
part the model trained on (noise and SNR >= -5 dB), then scored on the held-out set:

    python docs/experiments/training_snr_range/prior_shift.py rfmodel/weights/mha-rmsnorm

(2 vCPUs, about 2 minutes a model: 11,200 recordings.)"""

from __future__ import annotations

import sys

import numpy as np
import torch
import torch.nn.functional as F

from rfmodel.bundle import load_bundle
from rfmodel.calibration import calibration
from rfmodel.data.stream import make_eval_set
from rfmodel.evaluate import EVAL_SEED, probabilities

CALIBRATION_SEED = 4_000_037
N_PER_CLASS = 400
SURE = 0.933  # the reliability chart's top bin


def fit_logit_bias(log_p: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """b [C], summing to zero, minimising the mean negative log-likelihood of softmax(log_p + b);
    at its optimum each class's mean probability equals its share of the labels."""
    z, y = torch.from_numpy(log_p), torch.from_numpy(labels)
    bias = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [bias], max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-15,
        line_search_fn="strong_wolfe",
    )  # fmt: skip

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(z + bias, y)
        loss.backward()
        return loss

    optimizer.step(closure)
    fitted = bias.detach().numpy()
    return fitted - fitted.mean()


def log_probabilities(bundle, iq: np.ndarray) -> np.ndarray:
    p = probabilities(bundle.model.eval(), bundle.feature_config, iq, torch.device("cpu"))
    return np.log(np.maximum(p, 1e-300))


def in_trained_range(snr: np.ndarray) -> np.ndarray:
    return np.isnan(snr) | (snr >= -5)  # noise has no SNR


def report(name: str, log_p: np.ndarray, labels: np.ndarray, snr: np.ndarray) -> None:
    p = torch.from_numpy(log_p).softmax(-1).numpy()
    hit = p.argmax(axis=1) == labels
    inside = in_trained_range(snr)
    whole = calibration(p, labels)
    ece_inside = calibration(p[inside], labels[inside])["expected_calibration_error"]
    ece_all = whole["expected_calibration_error"]
    print(
        f"{name:>24}: overall {hit.mean():.4f}, SNR >= 10 dB {hit[snr >= 10].mean():.4f}, "
        f"0 dB {hit[snr == 0].mean():.4f}, -10 dB {hit[snr == -10].mean():.3f}, "
        f"noise {hit[np.isnan(snr)].mean():.3f}; ECE {ece_all:.3f} (noise and SNR >= -5 dB: "
        f"{ece_inside:.3f}), log loss {whole['log_loss']:.3f}"
    )
    # the alert rule: how often an answer given with more than SURE is right, "noise" or not
    sure = p.max(axis=1) > SURE
    said_noise = p.argmax(axis=1) == 0
    for name, rows in (("a signal", sure & ~said_noise), ('"noise"', sure & said_noise)):
        print(
            f"{'':>26}answers {name} over {SURE}: {rows.sum()} of {len(labels)}, "
            f"right {hit[rows].mean():.3f}"
        )


def main(model_dirs: list[str]) -> None:
    torch.set_num_threads(2)
    cal = make_eval_set(CALIBRATION_SEED, N_PER_CLASS)
    held_out = make_eval_set(EVAL_SEED, N_PER_CLASS)
    for model_dir in model_dirs:
        bundle = load_bundle(model_dir)
        log_cal = log_probabilities(bundle, cal.iq)
        log_held_out = log_probabilities(bundle, held_out.iq)
        print(model_dir)
        report("as trained", log_held_out, held_out.labels, held_out.snr)
        for name, rows in (
            ("bias fitted on all", np.ones(len(cal.labels), bool)),
            ("bias fitted on >= -5 dB", in_trained_range(cal.snr)),
        ):
            bias = fit_logit_bias(log_cal[rows], cal.labels[rows])
            report(name, log_held_out + bias, held_out.labels, held_out.snr)
            shifts = zip(bundle.classes, bias, strict=True)
            print(" " * 26 + " ".join(f"{c} {b:+.2f}" for c, b in shifts))


if __name__ == "__main__":
    main(sys.argv[1:])
