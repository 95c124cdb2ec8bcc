"""Experiment: how much of the shipped model's confusion within the PSK/QAM pairs the channel
causes. The same recordings (same seeds) of each pair's classes at SNR 10-30 dB, scored by the
shipped mha-rmsnorm as generated and with one part of the channel switched off. With
--all-classes, also every signal class at once: the 14-way accuracy at SNR >= 10 dB (the
held-out set's figure: signals only) that an equaliser undoing the channel perfectly would be
worth, and what an oracle's linear equaliser of the recorded channel gives back, knowing all of
its response or only part (PHASES).

    python docs/experiments/pairs_and_channel/channel_ablation.py [--per-class N] [--all-classes]
        [--snr 10,15,20,30]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from rfmodel.bundle import load_bundle, shipped_model_dir
from rfmodel.cli_args import snr_values
from rfmodel.data import CLASSES, generate_example
from rfmodel.evaluate import predict

PAIRS = (("qpsk", "8psk"), ("16qam", "64qam"))
SNRS = (10.0, 15.0, 20.0, 30.0)
SPREADS = ((0, 0.1), (0.1, 0.5), (0.5, 1), (1, np.inf))  # delay spread, symbols
VARIANTS = {
    "as generated": {},
    "no multipath": {"multipath": False},
    "no fading": {"fading": False},
    "no multipath, no fading": {"multipath": False, "fading": False},
}


# what an equaliser knows of the channel's response: all of it, its magnitude alone (what a
# spectrum shows), or the magnitude with the minimum phase that goes with it
PHASES = {"true": "response", "zero": "|response|", "minimum": "minimum phase"}
# an estimator's errors, as the oracle's: each tap's gain off by a complex Gaussian of this rms,
# relative to the taps' rms gain
TAP_ERRORS = (0.1, 0.2, 0.3)


def minimum_phase(magnitude: np.ndarray) -> np.ndarray:
    """[n] |H| on the FFT grid -> the minimum-phase response of that magnitude (the real
    cepstrum folded onto positive quefrencies)."""
    n = magnitude.size
    cepstrum = np.fft.ifft(np.log(np.maximum(magnitude, 1e-6)))
    fold = np.zeros(n)
    fold[0] = fold[n // 2] = 1
    fold[1 : n // 2] = 2
    return np.exp(np.fft.fft(cepstrum * fold))


def equalised(
    example, phase: str = "true", tap_error: float = 0.0, rng: np.random.Generator | None = None
) -> np.ndarray:
    """The recording through the MMSE (Wiener) equaliser of its own multipath, which the
    generator records: an oracle's, the most a linear equaliser could give back (phase: how
    much of the response it is given, PHASES; tap_error: its taps' gains off by that much,
    TAP_ERRORS, drawn from rng). The channel acts before the carrier offset, so its response
    is read cfo away; fading, where drawn, is left in."""
    params, iq = example.params, example.iq
    if not params.get("multipath"):
        return iq
    freqs = np.fft.fftfreq(iq.size) - params["cfo"]
    delays, gains = np.asarray(params["multipath_delays"]), np.asarray(params["multipath_gains"])
    if tap_error:
        error = rng.standard_normal(gains.size) + 1j * rng.standard_normal(gains.size)
        gains = gains + tap_error * np.sqrt(np.mean(np.abs(gains) ** 2) / 2) * error
    response = (gains[:, None] * np.exp(-2j * np.pi * delays[:, None] * freqs)).sum(axis=0)
    if phase == "zero":
        response = np.abs(response)
    elif phase == "minimum":
        response = minimum_phase(np.abs(response))
    band = np.abs(freqs) <= 0.55 * params["bandwidth"]  # the signal's band, a margin each side
    # signal over noise spectral density in the band: the in-band SNR
    noise = np.mean(np.abs(response[band]) ** 2) * 10 ** (-example.snr_db / 10)
    wiener = response.conj() / (np.abs(response) ** 2 + noise)
    # outside the band, the noise at the level the equaliser leaves inside it on average:
    # white noise of a level jump only at the band's edges, as in the training recordings
    wiener[~band] = np.sqrt(np.mean(np.abs(wiener[band]) ** 2))
    return np.fft.ifft(np.fft.fft(iq) * wiener).astype(np.complex64)


def recordings(
    classes: tuple[str, ...], per_class: int, overrides: dict, snrs: tuple[float, ...] = SNRS
) -> list:
    """per_class examples a class, cycling through snrs, each from the seed [class index, j]
    whatever the overrides."""
    return [
        generate_example(
            label,
            4096,
            np.random.default_rng([CLASSES.index(label), j]),
            snrs[j % len(snrs)],
            **overrides,
        )
        for label in classes
        for j in range(per_class)
    ]


def score(bundle, examples: list, phase: str | None = None, tap_error: float = 0.0) -> tuple:
    """-> (hit [n] bool, snr [n], label [n], predicted [n], spread [n]) of the examples, each
    through its oracle equaliser (equalised) if a phase is given; spread: the multipath's delay
    spread in symbols (NaN without multipath or without a symbol rate)."""
    rng = np.random.default_rng(0)  # the taps' errors: the same for every run
    iq = [
        example.iq if phase is None else equalised(example, phase, tap_error, rng)
        for example in examples
    ]
    predicted = predict(bundle.model, bundle.feature_config, np.stack(iq), torch.device("cpu"))
    labels = np.array([CLASSES.index(example.label) for example in examples])
    spreads = [
        p["multipath_max_delay"] / p["samples_per_symbol"]
        if p.get("multipath") and "samples_per_symbol" in p
        else np.nan
        for p in (example.params for example in examples)
    ]
    snrs = np.array([example.snr_db for example in examples])
    return predicted == labels, snrs, labels, predicted, np.array(spreads)


def by_spread(hit: np.ndarray, spread: np.ndarray) -> str:
    """Accuracy without multipath, then by the multipath's delay spread in symbols."""
    cells = [f"no multipath {hit[np.isnan(spread)].mean():.2f} ({np.isnan(spread).sum()})"]
    for low, high in SPREADS:
        inside = (spread >= low) & (spread < high)
        cells.append(f"{low:g}-{high:g} symbols {hit[inside].mean():.2f} ({inside.sum()})")
    return ", ".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--all-classes", action="store_true")
    parser.add_argument(
        "--snr",
        type=snr_values,
        default=SNRS,
        help="in-band SNRs of the all-classes part, comma-separated (e.g. --snr 0)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    bundle = load_bundle(shipped_model_dir("mha"))
    print(f"accuracy, 14-way, per pair (at SNR {' / '.join(f'{s:g}' for s in SNRS)} dB)")
    for name, overrides in VARIANTS.items():
        scores, spreads = [], []
        for pair in PAIRS:
            hit, snrs, _, _, spread = score(bundle, recordings(pair, args.per_class, overrides))
            by_snr = " / ".join(f"{hit[snrs == snr].mean():.2f}" for snr in SNRS)
            scores.append(f"{pair[0]}/{pair[1]} {hit.mean():.3f} ({by_snr})")
            if not overrides:
                spreads.append(f"{pair[0]}/{pair[1]} " + by_spread(hit, spread))
        print(f"{name:>24}: " + ", ".join(scores))
        for line in spreads:
            print(f"{'':>26}{line}")
    if not args.all_classes:
        return
    signals = tuple(c for c in CLASSES if c != "noise")
    qam = [CLASSES.index(c) for c in PAIRS[1]]
    snrs = ", ".join(f"{s:g}" for s in args.snr)
    print(f"\nall {len(signals)} signal classes, {args.per_class} recordings each, SNR {snrs} dB")
    as_generated = recordings(signals, args.per_class, {}, args.snr)
    # (name, overrides, phase, tap error): a variant's recordings are drawn when its row comes,
    # so only the as-generated set, which every equaliser row reads, is held throughout
    rows = [(name, overrides, None, 0.0) for name, overrides in VARIANTS.items()]
    rows += [(f"equaliser: {known}", {}, phase, 0.0) for phase, known in PHASES.items()]
    rows += [(f"taps off by {e:.0%}", {}, "true", e) for e in TAP_ERRORS]
    for name, overrides, phase, tap_error in rows:
        examples = (
            recordings(signals, args.per_class, overrides, args.snr) if overrides else as_generated
        )
        hit, _, labels, predicted, _ = score(bundle, examples, phase, tap_error)
        errors = ~hit
        in_qam = errors & np.isin(labels, qam) & np.isin(predicted, qam)
        by_class = " ".join(f"{c} {hit[labels == CLASSES.index(c)].mean():.2f}" for c in signals)
        print(
            f"{name:>24}: {hit.mean():.4f}, {errors.sum()} errors, {in_qam.sum()} of them "
            f"16qam/64qam\n{'':>26}{by_class}"
        )


if __name__ == "__main__":
    main()
