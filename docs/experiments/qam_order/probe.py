"""Experiment: can symbol-synchronous amplitude statistics tell 16qam from 64qam where the shipped
model cannot? 16qam and 64qam recordings of 4,096 samples at in-band SNR 10, 15, 20 and 30 dB,
channel as generated and without multipath. Per recording, the symbols are taken from a matched
RRC filter at the symbol instants, either with the generator's own parameters (oracle: carrier
offset, samples per symbol, roll-off, timing) or estimated blind from the recording (carrier
offset from the x^4 line, symbol rate and timing from the |x|^2 line at the symbol rate,
roll-off assumed 0.3). A logistic regression over the distribution of |symbol|^2 (fitted on one
seed domain, scored on another) is compared with the shipped mha-rmsnorm's choice between the two
classes' logits on the same recordings.

    python docs/experiments/qam_order/probe.py [--train N] [--test N]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from scipy import fft, special

from preprocessing.features import compute_features
from preprocessing.recording import recording_features
from rfmodel.bundle import load_bundle, shipped_model_dir
from rfmodel.data import CLASSES, generate_example
from rfmodel.data.constellations import CONSTELLATIONS
from rfmodel.data.dsp import rrc_spectrum
from rfmodel.evaluate import EVAL_SEED

PAIR = ("16qam", "64qam")
SNRS = (10.0, 15.0, 20.0, 30.0)
N = 4096
UPSAMPLE = 8
ASSUMED_ROLLOFF = 0.3
VARIANTS = {
    "as generated": {},
    "no multipath": {"multipath": False},
    "no multipath, no fading": {"multipath": False, "fading": False},
    "clean channel": {"impairments": False},  # no multipath, fading, IQ imbalance or DC
}
EDGES = np.linspace(0.0, 3.5, 36)  # |s|^2 over its mean


def peak(spectrum: np.ndarray, freqs: np.ndarray, keep: np.ndarray) -> tuple[float, complex]:
    i = np.flatnonzero(keep)[np.argmax(np.abs(spectrum[keep]))]
    return float(freqs[i]), complex(spectrum[i])


def blind_parameters(x: np.ndarray) -> tuple[float, float, float, float]:
    """(cfo, samples per symbol, roll-off, timing in samples) estimated from the recording."""
    pad = 8 * N
    freqs = fft.fftfreq(pad)
    f4, _ = peak(fft.fft(x**4, pad), freqs, np.ones(pad, bool))
    cfo = f4 / 4
    x = x * np.exp(-2j * np.pi * cfo * np.arange(N))
    envelope = np.abs(x) ** 2
    line_freqs = fft.fftfreq(pad)
    f_sym, line = peak(fft.fft(envelope - envelope.mean(), pad), line_freqs, (line_freqs >= 1 / 34))
    sps = 1 / f_sym
    # Oerder-Meyr: the line's phase is the symbol timing
    timing = (-np.angle(line) / (2 * np.pi)) % 1.0 * sps
    return cfo, sps, ASSUMED_ROLLOFF, timing


def symbols(
    x: np.ndarray, cfo: float, sps: float, rolloff: float, timing: float, per_symbol: int = 1
) -> np.ndarray:
    """The matched filter's output at the symbol instants (and per_symbol - 1 evenly between)."""
    x = (x - x.mean()) * np.exp(-2j * np.pi * cfo * np.arange(N))
    spectrum = fft.fft(x) * rrc_spectrum(fft.fftfreq(N) * sps, rolloff)
    padded = np.zeros(N * UPSAMPLE, complex)
    half = N // 2
    padded[:half], padded[-half:] = spectrum[:half], spectrum[-half:]
    fine = fft.ifft(padded)
    step = sps / per_symbol
    instants = timing + step * np.arange(int((N - timing) // step))
    return fine[np.round(instants * UPSAMPLE).astype(int) % (N * UPSAMPLE)]


def unit_power(s: np.ndarray) -> np.ndarray:
    return s / np.sqrt(np.mean(np.abs(s) ** 2))


def normalised_power(s: np.ndarray) -> np.ndarray:
    a = np.abs(s) ** 2
    return a / a.mean()


def features(s: np.ndarray) -> np.ndarray:
    a = normalised_power(s)
    hist = np.histogram(a, EDGES)[0] / len(a)
    return np.concatenate([hist, [np.mean(a**2), np.mean(a**3)]])


def dataset(seed: int, per_class: int, overrides: dict):
    rows = []
    for label in PAIR:
        for j in range(per_class):
            rng = np.random.default_rng([seed, CLASSES.index(label), j])
            snr = SNRS[j % len(SNRS)]
            ex = generate_example(label, N, rng, snr, **overrides)
            p = ex.params
            oracle = (
                p["cfo"],
                p["samples_per_symbol"],
                p["rolloff"],
                p["timing_offset"] * p["samples_per_symbol"],
            )
            rows.append((ex.iq, PAIR.index(label), snr, oracle, p["phase"]))
    iq = np.stack([r[0] for r in rows])
    labels = np.array([r[1] for r in rows])
    snr = np.array([r[2] for r in rows])
    found = {
        # with the carrier phase removed too, for the coherent likelihood
        "oracle": [unit_power(symbols(r[0], *r[3]) * np.exp(-1j * r[4])) for r in rows],
        "blind": [symbols(r[0], *blind_parameters(r[0])) for r in rows],
    }
    return iq, labels, snr, found, [r[3] for r in rows]


def pair_logit(iq: np.ndarray) -> np.ndarray:
    """[N]: the shipped mha's 64qam logit less its 16qam logit."""
    bundle = load_bundle(shipped_model_dir("mha"))
    with torch.no_grad():
        x = torch.from_numpy(iq)
        logits = bundle.model(
            compute_features(x, bundle.feature_config),
            recording=recording_features(x, bundle.feature_config),
        )
    first, second = (CLASSES.index(c) for c in PAIR)
    return (logits[:, second] - logits[:, first]).double().numpy()


def shipped_choice(iq: np.ndarray) -> np.ndarray:
    """The shipped mha's choice between the pair's logits: 1 where it prefers 64qam."""
    return (pair_logit(iq) > 0).astype(int)


NOISE_GRID = np.logspace(-3, 0.5, 36)  # symbol noise variance over the constellation's power


def rings(label: str) -> tuple[np.ndarray, np.ndarray]:
    """The constellation's ring radii squared and each ring's share of the points."""
    power, counts = np.unique(np.round(np.abs(CONSTELLATIONS[label]) ** 2, 9), return_counts=True)
    return power, counts / counts.sum()


def amplitude_log_likelihood(a: np.ndarray, label: str) -> float:
    """Largest log-likelihood over the noise grid of the symbols' normalised powers `a` under a
    ring mixture of Rician amplitudes: the amplitude-only generalised likelihood ratio."""
    power, share = rings(label)
    r = np.sqrt(a)[:, None]
    best = -np.inf
    for noise in NOISE_GRID:
        rho, var = np.sqrt(power / (1 + noise)), noise / (1 + noise)
        x = 2 * r * rho / var
        log_pdf = np.log(2 * r / var) - (r**2 + rho**2) / var + np.log(special.i0e(x)) + x
        best = max(best, float(special.logsumexp(log_pdf + np.log(share), axis=1).sum()))
    return best


def coherent_log_likelihood(s: np.ndarray, label: str) -> float:
    """The same over the complex symbols (unit power, carrier phase removed): a Gaussian mixture
    about the constellation points."""
    points = CONSTELLATIONS[label]
    best = -np.inf
    for noise in NOISE_GRID:
        var = noise / (1 + noise)
        distance = np.abs(s[:, None] - points / np.sqrt(1 + noise)) ** 2
        log_pdf = -distance / var - np.log(np.pi * var * len(points))
        best = max(best, float(special.logsumexp(log_pdf, axis=1).sum()))
    return best


def likelihood_ratio(found: list[np.ndarray], log_likelihood) -> np.ndarray:
    """1 where 64qam explains the symbols better than 16qam."""
    return np.array([int(log_likelihood(s, PAIR[1]) > log_likelihood(s, PAIR[0])) for s in found])


def logistic(train_x, train_y, test_x) -> np.ndarray:
    mean, std = train_x.mean(0), train_x.std(0) + 1e-9
    xt = torch.tensor((train_x - mean) / std, dtype=torch.float64)
    xe = torch.tensor((test_x - mean) / std, dtype=torch.float64)
    y = torch.tensor(train_y, dtype=torch.float64)
    w = torch.zeros(xt.shape[1] + 1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=500)

    def loss():
        opt.zero_grad()
        z = xt @ w[:-1] + w[-1]
        value = torch.nn.functional.binary_cross_entropy_with_logits(z, y) + 1e-3 * w.square().sum()
        value.backward()
        return value

    opt.step(loss)
    with torch.no_grad():
        return ((xe @ w[:-1] + w[-1]) > 0).long().numpy()


def by_snr(hit: np.ndarray, snr: np.ndarray) -> str:
    return f"{hit.mean():.3f} (" + " / ".join(f"{hit[snr == s].mean():.2f}" for s in SNRS) + ")"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=1000, help="recordings per class")
    parser.add_argument("--test", type=int, default=400)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"16qam/64qam accuracy, 2-way (at SNR {' / '.join(f'{s:g}' for s in SNRS)} dB)")
    for name, overrides in VARIANTS.items():
        _, train_y, _, train_f, _ = dataset(1, args.train, overrides)
        iq, test_y, snr, test_f, _ = dataset(EVAL_SEED, args.test, overrides)
        shipped = shipped_choice(iq)
        print(f"{name:>24}: shipped mha {by_snr(shipped == test_y, snr)}")
        for kind in ("oracle", "blind"):
            train_x = np.stack([features(s) for s in train_f[kind]])
            test_x = np.stack([features(s) for s in test_f[kind]])
            hit = logistic(train_x, train_y, test_x) == test_y
            print(f"{'':>24}  {kind} symbols, logistic: {by_snr(hit, snr)}")
            powers = [normalised_power(s) for s in test_f[kind]]
            hit = likelihood_ratio(powers, amplitude_log_likelihood) == test_y
            print(f"{'':>24}  {kind} symbols, amplitude likelihood: {by_snr(hit, snr)}")
        hit = likelihood_ratio(test_f["oracle"], coherent_log_likelihood) == test_y
        print(f"{'':>24}  oracle symbols, coherent likelihood: {by_snr(hit, snr)}")


if __name__ == "__main__":
    main()
