"""Experiment, not product code: features of the whole recording, in the frame tokens' layout.

For each transform of the model's FeatureConfig, one nfft-wide slot computed from the whole
recording (unit RMS) rather than from one frame: the sorted transforms' spectra (x2, x4, x8) as
nfft quantiles of the full-length spectrum, strongest first (a spectral line over N samples stands
10 log10(N / nfft) dB further out of the noise than in one frame); the other spectra (x, env)
averaged into nfft bands; amp_q and if_q over every sample of the noise-filtered recording (if_q
rescaled to the frames' bins).

Run as a script it is `rfcls` with this vector appended to each recording's frame tokens, as one
more token (`python docs/experiments/recording_features/recording_token.py train ...`).
"""

from __future__ import annotations

import sys

import numpy as np
import torch

import preprocessing.features as pf
from preprocessing.spectra import rms_normalize, to_db

frame_features = pf.compute_features


def quantiles(rows: torch.Tensor, k: int) -> torch.Tensor:
    """k evenly spaced entries of each sorted row, first and last included."""
    picks = np.round(np.linspace(0, rows.shape[-1] - 1, k)).astype(np.int64)
    return rows[..., torch.tensor(picks, device=rows.device)]


def recording_features(iq: torch.Tensor, cfg: pf.FeatureConfig) -> torch.Tensor:
    """[B, N] complex -> [B, F] float32, F = cfg.n_features."""
    y = rms_normalize(iq.to(torch.complex64))
    n, k = y.shape[-1], cfg.nfft
    w = torch.hann_window(n, periodic=False, device=y.device)
    w = w / w.square().sum().sqrt()
    slots, clean = [], None
    for name in cfg.transforms:
        if name in pf.TRANSFORMS:
            z = torch.empty_like(y)
            pf.TRANSFORMS[name](y, z)
            power = torch.fft.fftshift(torch.fft.fft(z * w).abs().square(), dim=-1)
            if name in cfg.sorted_transforms:
                row = quantiles(power.sort(dim=-1, descending=True).values, k)
            else:
                row = power[..., : n // k * k].reshape(*power.shape[:-1], k, n // k).mean(-1)
            slots.append(to_db(row, cfg.floor_db) if cfg.db else row)
            continue
        clean = pf.wiener_cleaned(y) if clean is None else clean
        if name == "amp_q":
            slots.append(quantiles(pf.power_quantiles(clean, cfg), k))
        else:  # if_q, in bins of an n-point FFT: rescaled to the frames' nfft
            slots.append(quantiles(pf.frequency_quantiles(clean, cfg) * (k / n), k))
    return torch.cat(slots, -1).to(torch.float32)


def frames_and_recording(iq: torch.Tensor, cfg: pf.FeatureConfig) -> torch.Tensor:
    """[B, N] -> [B, T + 1, F]: the frame tokens, then the recording's."""
    frames = frame_features(iq, cfg)
    return torch.cat([frames, recording_features(iq, cfg).to(frames.device)[:, None]], 1)


def patch_features() -> None:
    import rfmodel.evaluate
    import rfmodel.train

    rfmodel.train.compute_features = frames_and_recording
    rfmodel.evaluate.compute_features = frames_and_recording


if __name__ == "__main__":
    from service.cli import main

    patch_features()
    sys.exit(main(sys.argv[1:]))
