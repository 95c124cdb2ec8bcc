"""Experiment: do higher-order cumulants, a classical view for telling modulation orders apart,
separate the linear pairs at 0 dB in-band where the features and the shipped model do not?

Per recording, blind: DC removed, filtered to its occupied band (preprocessing.band, the
recording features' second view), the carrier offset taken out at a quarter of the x^4
spectrum's peak, then the normalised cumulants |C40|, |C41|, C42 (/C21^2) and |C63| (/C21^3),
of the filtered and of the plain recording. linear_probe.py's pairs, split and linear model;
"recording + cumulants" is both views side by side.

    python docs/experiments/recording_features/cumulants.py [--snr LOW,HIGH]
"""

from __future__ import annotations

import torch
from linear_probe import FIT, PAIRS, N, held_out_accuracy, pair_recordings, snr_range

from preprocessing.band import band_limited
from preprocessing.features import FeatureConfig
from preprocessing.recording import recording_features


def cumulants(x: torch.Tensor) -> torch.Tensor:
    """x [S] complex -> [4]: |C40|, |C41|, C42 over C21^2 and |C63| over C21^3, with the carrier
    offset estimated from the x^4 line removed first."""
    x = x - x.mean()
    n = torch.arange(x.numel(), dtype=torch.float64)
    peak = torch.fft.fft(x.to(torch.complex128) ** 4).abs().argmax()
    f4 = torch.fft.fftfreq(x.numel(), dtype=torch.float64)[peak]
    x = x.to(torch.complex128) * torch.exp(-2j * torch.pi * (f4 / 4) * n)
    m20, m21 = (x * x).mean(), (x.abs() ** 2).mean()
    m40, m41, m42 = (x**4).mean(), (x**3 * x.conj()).mean(), (x.abs() ** 4).mean()
    m63 = (x.abs() ** 6).mean()
    c40 = m40 - 3 * m20**2
    c41 = m41 - 3 * m20 * m21
    c42 = m42 - m20.abs() ** 2 - 2 * m21**2
    c63 = m63 - 9 * c42.real * m21 - 6 * m21**3
    return torch.stack(
        [c40.abs() / m21**2, c41.abs() / m21**2, c42.real / m21**2, c63.abs() / m21**3]
    ).float()


def cumulant_view(iq: torch.Tensor, cfg: FeatureConfig) -> torch.Tensor:
    filtered = band_limited(iq[None], cfg.nfft, cfg.window)[0]
    return torch.cat([cumulants(filtered), cumulants(iq)])


def main() -> None:
    low, high = snr_range("0,0")
    torch.set_num_threads(1)
    cfg = FeatureConfig()
    for pair in PAIRS:
        views: dict[str, list[torch.Tensor]] = {"recording": [], "cumulants": []}
        for iq in pair_recordings(pair, low, high):  # linear_probe.py's recordings
            views["recording"].append(recording_features(iq, cfg)[0])
            views["cumulants"].append(cumulant_view(iq[0], cfg))
        y = torch.arange(N) % 2
        stacked = {name: torch.stack(x) for name, x in views.items()}
        stacked["recording + cumulants"] = torch.cat(list(stacked.values()), dim=1)
        scores = {name: held_out_accuracy(x, y) for name, x in stacked.items()}
        means = stacked["cumulants"][:FIT].reshape(-1, 2, 8)  # alternate labels: [pairs, 2, 8]
        print(f"{pair[0]}/{pair[1]}: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
        for c, name in enumerate(pair):
            print(
                f"  {name} mean (filtered |C40| |C41| C42 |C63|, plain ...): "
                + " ".join(f"{v:.2f}" for v in means[:, c].mean(0).tolist())
            )


if __name__ == "__main__":
    main()
