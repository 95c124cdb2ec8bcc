"""Experiment: on GNU Radio's evaluation set (rfmodel/data/gnuradio_reference.py), which of its
channel and signal parameters go with the model's errors at SNR >= 10 dB.

Each parameter recorded per example (samples per symbol, carrier offset, sample-clock offset,
fading Doppler, whether fading was applied) splits the SNR >= 10 dB recordings that have it at
its median; the accuracy of each half is printed, then the commonest errors of the worse half of
samples per symbol. Then the same split by samples per symbol on as many of `rfmodel.data`'s
recordings of the same classes and SNRs (OURS_SEED, drawn with their parameters).

    /usr/bin/python3 rfmodel/data/gnuradio_reference.py --out runs/gnuradio/eval --per-cell 8
    python docs/experiments/gnuradio_gap/split.py runs/gnuradio/eval.npz rfmodel/weights/mha-rmsnorm

About two minutes on 2 vCPUs.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

import numpy as np
import torch

from rfmodel.bundle import load_bundle
from rfmodel.data import generate_example
from rfmodel.data.gnuradio_eval import load_reference
from rfmodel.evaluate import predict

PARAMETERS = ("samples_per_symbol", "cfo", "epsilon", "doppler")
OURS_SEED = 4_000_037


def ours_by_samples_per_symbol(bundle, labels, snr, n_samples, split_at) -> str:
    """Accuracy of rfmodel.data's recordings with the same labels and SNRs as the given rows,
    each half of samples per symbol (split at split_at)."""
    iq, sps = [], []
    for j, (label, value) in enumerate(zip(labels, snr, strict=True)):
        rng = np.random.default_rng([OURS_SEED, int(label), j])
        example = generate_example(bundle.classes[label], n_samples, rng, float(value))
        iq.append(example.iq)
        sps.append(example.params["samples_per_symbol"])
    predicted = predict(bundle.model, bundle.feature_config, np.stack(iq), torch.device("cpu"))
    right, sps = predicted == labels, np.asarray(sps)
    low, high = sps <= split_at, sps > split_at
    return f"{right[low].mean():.3f} ({low.sum()}), above: {right[high].mean():.3f} ({high.sum()})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data")
    parser.add_argument("model_dir")
    args = parser.parse_args()
    bundle = load_bundle(args.model_dir)
    iq, labels, snr = load_reference(args.data, bundle.classes)
    with np.load(args.data) as data:
        params = [json.loads(p) for p in data["params"]]
    rows = np.flatnonzero(snr >= 10)
    predicted = predict(bundle.model, bundle.feature_config, iq[rows], torch.device("cpu"))
    right = predicted == labels[rows]
    print(f"SNR >= 10 dB: {right.mean():.3f} of {len(rows)}")
    faded = np.array(["fading" in params[i] for i in rows])
    print(
        f"fading applied: {right[faded].mean():.3f} ({faded.sum()}), not: "
        f"{right[~faded].mean():.3f} ({(~faded).sum()})"
    )
    # |value| per recording at SNR >= 10 dB, NaN where the example does not have it
    columns = {
        name: np.array([abs(params[i].get(name, np.nan)) for i in rows], dtype=float)
        for name in PARAMETERS
    }
    halves = {}
    for name, values in columns.items():
        known = np.isfinite(values)
        median = np.median(values[known])
        low, high = known & (values <= median), known & (values > median)
        halves[name] = (median, known, high)
        print(
            f"|{name}| <= {median:.3g}: {right[low].mean():.3f} ({low.sum()}), above: "
            f"{right[high].mean():.3f} ({high.sum()})"
        )
    split_at, with_sps, narrow = halves["samples_per_symbol"]
    errors = Counter(
        (bundle.classes[t], bundle.classes[p])
        for t, p in zip(labels[rows][narrow], predicted[narrow], strict=True)
        if t != p
    )
    print(
        "errors above the samples_per_symbol median:",
        ", ".join(f"{t}->{p} {n}" for (t, p), n in errors.most_common(10)),
    )
    cfo = columns["cfo"]
    both = narrow & np.isfinite(cfo)
    median = np.median(cfo[both])
    print(
        f"the narrow ones (samples_per_symbol above its median), |cfo| <= {median:.3g}: "
        f"{right[both & (cfo <= median)].mean():.3f}, above: "
        f"{right[both & (cfo > median)].mean():.3f}"
    )
    ours = ours_by_samples_per_symbol(
        bundle, labels[rows][with_sps], snr[rows][with_sps], iq.shape[1], split_at
    )
    print(f"rfmodel.data, same classes and SNRs, samples_per_symbol <= {split_at:.3g}: {ours}")


if __name__ == "__main__":
    main()
