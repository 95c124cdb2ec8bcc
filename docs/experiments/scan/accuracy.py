"""Several signals in one wide capture: are they found, and once cut out to baseband
(preprocessing.emissions), classified as well as the same signals recorded alone?

Each capture is 65,536 samples of white noise holding `--signals` signals of rfmodel.data (2 by
default; every class but noise, drawn at random; every channel and receiver impairment), each
generated at 8,192 samples and brought up to the capture's rate 8 times faster (scipy's
polyphase resampler), the band cut into as many slots and one signal in each at a random offset
(within 0.2 of a slot from its middle), each at its own in-band SNR (0, 10 or 20 dB). Per
signal:

- alone: the signal as generated, in white noise at the same in-band SNR, 8,192 samples, as the
  service would see it from a receiver tuned to it;
- scanned: find_emissions on the capture, the found signal nearest its true centre (within
  half its nominal bandwidth plus 1 % of the band, else missed), cut out by `baseband`.

Both classified by a shipped model on the CPU. Prints accuracy by SNR for both arms, how many
signals were missed, and the found centre's and bandwidth's error. `--cut polyphase` cuts the
signals out with scipy's polyphase decimator instead (mixed to 0 Hz, then resample_poly by the
nearest whole factor), the alternative `baseband` was measured against.

    python docs/experiments/scan/accuracy.py --captures 300   # 2 vCPUs, about 30 s
    python docs/experiments/scan/accuracy.py --captures 300 --cut polyphase
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from scipy import signal as sps

from preprocessing import emissions
from preprocessing.emissions import Emission, baseband, baseband_length, find_emissions
from rfmodel.bundle import load_bundle, shipped_model_dir
from rfmodel.data import CLASSES, generate_example
from rfmodel.evaluate import predict

CAPTURE = 65_536
RATE_RATIO = 8  # the capture's rate over each signal's own
SNRS_DB = (0.0, 10.0, 20.0)
MIN_SAMPLES = 4096


def white(rng: np.random.Generator, n: int, power: float) -> np.ndarray:
    return np.sqrt(power / 2) * (rng.standard_normal(n) + 1j * rng.standard_normal(n))


def one_capture(
    rng: np.random.Generator,
    signals: list[str],
    snrs_db: tuple[float, ...] = SNRS_DB,
    samples: int = CAPTURE,
) -> tuple[np.ndarray, list[dict]]:
    capture = white(rng, samples, 1.0)
    truth = []
    slots = len(signals)  # the band cut into as many slots, one signal in each
    for slot, label in enumerate(signals):
        snr_db = float(rng.choice(snrs_db))
        example = generate_example(label, samples // RATE_RATIO, rng, snr_db=float("inf"))
        own_band = example.params["bandwidth"]  # nominal, cycles/sample at the signal's rate
        clean = example.iq.astype(np.complex128)
        clean /= np.sqrt(np.mean(np.abs(clean) ** 2))
        alone = clean + white(rng, clean.size, 10 ** (-snr_db / 10) / own_band)
        center = -0.5 + (slot + 0.5 + rng.uniform(-0.2, 0.2)) / slots
        wide = sps.resample_poly(clean, RATE_RATIO, 1)[:samples]
        # in-band SNR in the capture: the noise there is 1 per unit band, own_band / 8 wide
        wide *= np.sqrt(10 ** (snr_db / 10) * own_band / RATE_RATIO / np.mean(np.abs(wide) ** 2))
        capture += wide * np.exp(2j * np.pi * center * np.arange(samples))
        truth.append(
            dict(
                label=label,
                snr_db=snr_db,
                # the generator's carrier offset moves it too
                center=center + example.params.get("cfo", 0.0) / RATE_RATIO,
                bandwidth=own_band / RATE_RATIO,
                alone=alone.astype(np.complex64),
            )
        )
    return capture.astype(np.complex64), truth


def fourier(capture: np.ndarray, emission: Emission, min_samples: int) -> np.ndarray:
    return baseband(capture, [emission], [emission], min_samples, shortest=1)[0]


def polyphase(capture: np.ndarray, emission: Emission, min_samples: int) -> np.ndarray:
    factor = max(
        1,
        round(capture.size / baseband_length(emission, [], capture.size, min_samples, shortest=1)),
    )
    mixed = capture * np.exp(-2j * np.pi * emission.center * np.arange(capture.size))
    return sps.resample_poly(mixed, 1, factor).astype(np.complex64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--captures", type=int, default=150)
    parser.add_argument("--signals", type=int, default=2, help="per capture, each in its slot")
    parser.add_argument("--model", default="mha")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cut", choices=("fourier", "polyphase"), default="fourier")
    parser.add_argument("--fill", type=float, default=emissions.FILL, help="of the new band")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rng = np.random.default_rng(args.seed)
    bundle = load_bundle(shipped_model_dir(args.model))
    signal_classes = [c for c in CLASSES if c != "noise"]
    cut = fourier if args.cut == "fourier" else polyphase
    emissions.FILL = args.fill
    rows = []
    for _ in range(args.captures):
        labels = list(rng.choice(signal_classes, args.signals))
        capture, truth = one_capture(rng, labels)
        (found,) = find_emissions(torch.from_numpy(capture)[None])
        for t in truth:
            near = [e for e in found if abs(e.center - t["center"]) < t["bandwidth"] / 2 + 0.01]
            best = min(near, key=lambda e: abs(e.center - t["center"]), default=None)
            t["found"] = best
            t["cut"] = None if best is None else cut(capture, best, MIN_SAMPLES)
            rows.append(t)

    def classify(recordings: list[np.ndarray]) -> np.ndarray:
        out = []
        for r in recordings:  # lengths differ: one at a time
            out.append(predict(bundle.model, bundle.feature_config, r[None], torch.device("cpu")))
        return np.concatenate(out)

    index = {c: i for i, c in enumerate(bundle.classes)}
    labels = np.array([index[r["label"]] for r in rows])
    alone = classify([r["alone"] for r in rows]) == labels
    found = np.array([r["found"] is not None for r in rows])
    scanned = np.zeros(len(rows), bool)
    scanned[found] = classify([r["cut"] for r in rows if r["cut"] is not None]) == labels[found]
    snr = np.array([r["snr_db"] for r in rows])
    print(
        f"{args.model}-rmsnorm, {args.captures} captures of {CAPTURE} samples, "
        f"{args.signals} signals each, "
        f"{args.cut} cut, filling {args.fill:g} of the new band"
    )
    print(f"{'in-band SNR':>12} {'signals':>8} {'alone':>7} {'scanned':>8} {'missed':>7}")
    for s in (*SNRS_DB, None):
        sel = np.ones(len(rows), bool) if s is None else snr == s
        name = "all" if s is None else f"{s:g} dB"
        print(
            f"{name:>12} {sel.sum():>8} {alone[sel].mean():>7.3f} {scanned[sel].mean():>8.3f} "
            f"{(~found[sel]).sum():>7}"
        )
    hits = [r for r in rows if r["found"] is not None]
    centre = np.array([abs(r["found"].center - r["center"]) / r["bandwidth"] for r in hits])
    width = np.array([r["found"].bandwidth / r["bandwidth"] for r in hits])
    print(
        f"found centre's error / nominal bandwidth: median {np.median(centre):.3f}, 95th "
        f"percentile {np.percentile(centre, 95):.3f}; found / nominal bandwidth: median "
        f"{np.median(width):.2f}"
    )
    print(f"signals found in both arms' agreement: {np.mean(alone[found] == scanned[found]):.3f}")


if __name__ == "__main__":
    main()
