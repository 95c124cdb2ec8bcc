"""Experiment: how far from its limit is the shipped model at 0 dB in-band on the linearly
modulated classes (ook, 4ask, bpsk, qpsk, 8psk, 16qam, 64qam: half the classes, most of the
errors there)? Recordings of 4,096 samples at in-band SNR -5, 0 and 5 dB, with the channel as
generated and without multipath and fading. The oracle takes each recording's symbols through a
matched RRC filter with the generator's own carrier offset, samples per symbol, roll-off, timing
and carrier phase, and picks the class whose constellation explains them best (the coherent
likelihood of docs/experiments/qam_order/probe.py, noise variance maximised over a grid): it
knows what no receiver does, so it bounds any classifier that reads these symbols from above on
a channel without multipath. The shipped mha-rmsnorm scores the same recordings, 14-way as
served and restricted to the 7 classes' logits.

    python docs/experiments/zero_db/probe.py [--per-class N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from rfmodel.bundle import load_bundle, shipped_model_dir
from rfmodel.data import CLASSES, generate_example
from rfmodel.evaluate import EVAL_SEED
from rfmodel.iq_logits import iq_logits

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "qam_order"))
from probe import coherent_log_likelihood, symbols, unit_power

GROUP = ("ook", "4ask", "bpsk", "qpsk", "8psk", "16qam", "64qam")
SNRS = (-5.0, 0.0, 5.0)
N = 4096
VARIANTS = {
    "as generated": {},
    "no multipath, no fading": {"multipath": False, "fading": False},
}


def dataset(per_class: int, overrides: dict):
    iq, labels, snr, oracle = [], [], [], []
    for label in GROUP:
        for j in range(per_class):
            rng = np.random.default_rng([EVAL_SEED, 7, CLASSES.index(label), j])
            ex = generate_example(label, N, rng, SNRS[j % len(SNRS)], **overrides)
            p = ex.params
            timing = p["timing_offset"] * p["samples_per_symbol"]
            s = symbols(ex.iq, p["cfo"], p["samples_per_symbol"], p["rolloff"], timing)
            iq.append(ex.iq)
            labels.append(GROUP.index(label))
            snr.append(SNRS[j % len(SNRS)])
            oracle.append(unit_power(s * np.exp(-1j * p["phase"])))
    return np.stack(iq), np.array(labels), np.array(snr), oracle


def by_snr(hit: np.ndarray, snr: np.ndarray) -> str:
    return " / ".join(f"{hit[snr == s].mean():.2f}" for s in SNRS)


def per_class(hit: np.ndarray, labels: np.ndarray, snr: np.ndarray) -> str:
    at0 = snr == 0.0
    return " ".join(f"{c} {hit[at0 & (labels == i)].mean():.2f}" for i, c in enumerate(GROUP))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-class", type=int, default=300, help="recordings per class")
    args = parser.parse_args()
    bundle = load_bundle(shipped_model_dir("mha"))
    group_index = [CLASSES.index(c) for c in GROUP]
    print(f"accuracy at SNR {' / '.join(f'{s:g}' for s in SNRS)} dB; per class at 0 dB")
    for name, overrides in VARIANTS.items():
        iq, labels, snr, oracle = dataset(args.per_class, overrides)
        with torch.no_grad():
            batches = [torch.from_numpy(iq[i : i + 256]) for i in range(0, len(iq), 256)]
            logits = torch.cat([iq_logits(bundle.model, b, bundle.feature_config) for b in batches])
        served = logits.argmax(-1).numpy() == np.array(group_index)[labels]
        restricted = logits[:, group_index].argmax(-1).numpy() == labels
        likelihoods = [[coherent_log_likelihood(s, c) for c in GROUP] for s in oracle]
        chosen = np.argmax(likelihoods, axis=1)
        coherent = chosen == labels
        print(f"{name}:")
        for what, hit in (
            ("shipped mha, 14-way", served),
            ("shipped mha, 7-way", restricted),
            ("oracle coherent, 7-way", coherent),
        ):
            print(f"  {what:>24}: {by_snr(hit, snr)}   {per_class(hit, labels, snr)}")


if __name__ == "__main__":
    main()
