"""Experiment: does a blind (constant-modulus) equaliser recover what multipath takes from the
16qam/64qam symbols? probe.py found the model loses most of this pair to multipath and fading, and
named a blind equaliser as the next thing to build; this measures what one would give before it
is built into the features.

Per recording (16qam and 64qam, 4,096 samples, in-band SNR 10, 15, 20 and 30 dB): the matched
RRC filter's output at two samples a symbol, with the generator's own carrier offset, symbol rate
and timing (oracle) or probe.py's blind estimates, through a blind equaliser fitted over the
whole recording, neither of which makes decisions (so it cannot know the class): `CMA`, a
fractionally spaced filter of TAPS taps minimising the constant-modulus cost (Godard p = 2,
Adam), or `whitening`, the symbol-spaced linear-prediction error filter of order ORDER. The
output symbols are scored as probe.py scores the unequalised ones (logistic regression over the
distribution of |s|^2 fitted on another seed domain; the amplitude-only likelihood ratio),
beside the unequalised symbols and the shipped mha's choice between the two classes' logits on
the same recordings, all in one run.

    python docs/experiments/qam_order/equaliser.py [--train 600] [--test 300]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from probe import (
    SNRS,
    VARIANTS,
    amplitude_log_likelihood,
    blind_parameters,
    by_snr,
    dataset,
    features,
    likelihood_ratio,
    logistic,
    normalised_power,
    shipped_choice,
    symbols,
)

from rfmodel.evaluate import EVAL_SEED

TAPS = 16  # at half a symbol: 8 symbols of span, against up to 16 samples of delay spread
STEPS = 300
# Godard's dispersion constant E|a|^4 / E|a|^2 is 1.32 for unit-power 16qam and 1.38 for
# 64qam: one value between them, so the equaliser does not assume the answer
DISPERSION = 1.35


def equalised(z: np.ndarray) -> np.ndarray:
    """Half-symbol-spaced samples z (even ones at the symbol instants) -> one output a symbol
    from the TAPS-tap filter minimising mean((|y|^2 - DISPERSION)^2) over the recording."""
    z = torch.tensor(z / np.sqrt(np.mean(np.abs(z) ** 2)), dtype=torch.complex128)
    # regressor k: the TAPS samples centred on symbol instant 2k
    padded = torch.nn.functional.pad(z, (TAPS // 2, TAPS // 2))
    windows = padded.unfold(0, TAPS, 1)[::2]  # [symbols, TAPS]
    taps = torch.zeros(TAPS, dtype=torch.complex128)
    taps[TAPS // 2] = 1.0  # start as no filter at all
    taps.requires_grad_(True)
    opt = torch.optim.Adam([taps], lr=0.01)
    for _ in range(STEPS):
        opt.zero_grad()
        y = windows @ taps.flip(0)
        loss = (y.abs().square() - DISPERSION).square().mean()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return (windows @ taps.flip(0)).numpy()


def whitened(z: np.ndarray) -> np.ndarray:
    """Half-symbol-spaced samples z -> the symbol-spaced ones through their linear-prediction
    error filter of order ORDER (least squares over the recording). Independent symbols are a
    white sequence; the filter whitens what the channel coloured, and unlike the CMA cost it
    does not pull the outputs towards one modulus. It undoes only the channel's minimum-phase
    part."""
    s = z[::2]  # the symbol instants
    s = s / np.sqrt(np.mean(np.abs(s) ** 2))
    past = np.stack([s[ORDER - i - 1 : len(s) - i - 1] for i in range(ORDER)], axis=1)
    coef = np.linalg.lstsq(past, s[ORDER:], rcond=None)[0]
    return s[ORDER:] - past @ coef


ORDER = 8
EQUALISERS = {"CMA": equalised, "whitening": whitened}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=600, help="recordings per class")
    parser.add_argument("--test", type=int, default=300)
    parser.add_argument("--variants", default="as generated,no multipath")
    parser.add_argument("--equalisers", default="CMA,whitening", help=", ".join(EQUALISERS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"16qam/64qam accuracy, 2-way (at SNR {' / '.join(f'{s:g}' for s in SNRS)} dB)")
    for name in args.variants.split(","):
        overrides = VARIANTS[name]
        train_iq, train_y, _, train_f, train_p = dataset(1, args.train, overrides)
        test_iq, test_y, snr, test_f, test_p = dataset(EVAL_SEED, args.test, overrides)
        print(f"{name:>24}: shipped mha {by_snr(shipped_choice(test_iq) == test_y, snr)}")
        for kind in ("oracle", "blind"):
            runs = [("", train_f[kind], test_f[kind])]
            for eq_name in args.equalisers.split(","):
                found = {}
                for split, iq, params in (
                    ("train", train_iq, train_p),
                    ("test", test_iq, test_p),
                ):
                    estimates = params if kind == "oracle" else [blind_parameters(x) for x in iq]
                    pairs = zip(iq, estimates, strict=True)
                    equaliser = EQUALISERS[eq_name]
                    found[split] = [equaliser(symbols(x, *p, per_symbol=2)) for x, p in pairs]
                runs.append((f" + {eq_name}", found["train"], found["test"]))
            for label, train_s, test_s in runs:
                train_x = np.stack([features(s) for s in train_s])
                test_x = np.stack([features(s) for s in test_s])
                hit = logistic(train_x, train_y, test_x) == test_y
                print(f"{'':>24}  {kind}{label}, logistic: {by_snr(hit, snr)}")
                powers = [normalised_power(s) for s in test_s]
                hit = likelihood_ratio(powers, amplitude_log_likelihood) == test_y
                print(f"{'':>24}  {kind}{label}, amplitude likelihood: {by_snr(hit, snr)}")


if __name__ == "__main__":
    main()
