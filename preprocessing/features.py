"""Per-frame features for the classifier: one token per FFT frame.

A frame is first divided by its RMS (unit mean power; see spectra.py). Its features are the power
spectra (dB, fftshifted, unit-energy window) of nonlinear transforms of that frame, concatenated:

    "x"    the frame itself: the occupied band, carriers, pulse shape.
    "x2"   x^2: BPSK (and any real constellation) leaves a spectral line at twice the carrier
           offset; its total power is E|x|^4 / E|x|^2^2, which separates 16QAM from 64QAM.
    "x4"   x^4: QPSK and square QAM leave a line at 4x the offset; total power E|x|^8 / (...)^4.
    "x8"   x^8: 8PSK's line (it has none at x^4; QPSK and square QAM have lines at both).
    "env"  |x|^2, the envelope: constant for PSK/FSK, fluctuating for QAM, AM, OOK.

PSK/QAM orders share the power spectrum of x, so "x" alone cannot tell them apart; x^2 and x^4
can. All of these are unchanged by a gain g > 0 and by a constant phase rotation of the input.

A transform in use that is named in `sorted_transforms` has its spectrum sorted, strongest bin
first. The line that x^2, x^4 or x^8 leaves sits at 2, 4 or 8 times the carrier offset, which is
anywhere in the band; sorted, its height and the spread of the rest stay and its position (the
offset, a nuisance) goes, so a linear token embedding sees a line the same way wherever it falls.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch

from preprocessing.errors import (
    InvalidParameter,
    InvalidSamples,
    TooFewSamples,
    TooManySamples,
)
from preprocessing.spectra import (
    check_complex,
    check_floor_db,
    check_frame_sizes,
    check_window,
    frames_of,
    map_frame_blocks,
    n_frames,
    rms_normalize,
    shifted_power,
    to_db,
    window_tensor,
)

# name -> writes the transform of [..., nfft] complex unit-RMS frames into `out` (same shape)
TRANSFORMS: dict[str, Callable[[torch.Tensor, torch.Tensor], object]] = {
    "x": lambda y, out: out.copy_(y),
    "x2": lambda y, out: torch.mul(y, y, out=out),
    "x4": lambda y, out: torch.mul(y, y, out=out).square_(),
    "x8": lambda y, out: torch.mul(y, y, out=out).square_().square_(),
    "env": lambda y, out: out.copy_(y.abs().square_()),  # real -> complex, imaginary part 0
}


@dataclass(frozen=True)
class FeatureConfig:
    """Everything that decides the features. Stored with every trained model (to_dict) so the
    service computes exactly what the model was trained on.

    floor_db=-100: on this scale white noise sits at 0 dB per bin and the quantisation noise of a
    full-scale 16-bit ADC near -98 dB. Float32 FFT round-off of a unit-power frame reaches about
    -117 dB (measured on pure tones) and differs between CPU and CUDA; the floor hides it with
    a margin, so features do not depend on the device."""

    nfft: int = 256
    hop: int = 128
    window: str = "hann"
    transforms: tuple[str, ...] = ("x", "x2", "x4", "x8")
    db: bool = True
    floor_db: float = -100.0
    sorted_transforms: tuple[str, ...] = ("x2", "x4", "x8")

    def __post_init__(self) -> None:
        # JSON gives lists; keep the dataclass hashable and comparable
        for name in ("transforms", "sorted_transforms"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        self.validate()
        object.__setattr__(self, "floor_db", float(self.floor_db))

    def validate(self) -> None:
        check_frame_sizes(self.nfft, self.hop)
        check_window(self.window, self.nfft)
        check_floor_db(self.floor_db)
        if not isinstance(self.db, bool):
            raise InvalidParameter("db", f"must be true or false, got {self.db!r}")
        if not isinstance(self.transforms, tuple) or not self.transforms:
            raise InvalidParameter(
                "transforms", f"must be a non-empty list of {sorted(TRANSFORMS)}"
            )
        for name in self.transforms:
            if not isinstance(name, str) or name not in TRANSFORMS:
                raise InvalidParameter(
                    "transforms", f"unknown transform {name!r}; valid: {', '.join(TRANSFORMS)}"
                )
        if len(set(self.transforms)) != len(self.transforms):
            raise InvalidParameter("transforms", f"repeats a name: {list(self.transforms)}")
        if not isinstance(self.sorted_transforms, tuple) or not set(
            self.sorted_transforms
        ).issubset(TRANSFORMS):
            raise InvalidParameter(
                "sorted_transforms",
                f"must be a list of transform names ({', '.join(TRANSFORMS)}), "
                f"got {self.sorted_transforms!r}",
            )

    @property
    def n_features(self) -> int:
        return len(self.transforms) * self.nfft

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["transforms"] = list(self.transforms)
        d["sorted_transforms"] = list(self.sorted_transforms)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureConfig:
        if not isinstance(d, Mapping):
            raise InvalidParameter("features", f"must be a mapping, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InvalidParameter(
                "features", f"unknown keys {unknown}; valid keys: {sorted(known)}"
            )
        return cls(**d)


def frame_features(frames: torch.Tensor, cfg: FeatureConfig) -> torch.Tensor:
    """[..., T, nfft] complex frames -> [..., T, F] float32 features."""

    def features_of(block: torch.Tensor) -> torch.Tensor:
        unit = rms_normalize(block)  # [..., t, nfft]
        # each transform is written into its slot, then windowed in place: no stack, no copies
        stacked = unit.new_empty(*unit.shape[:-1], len(cfg.transforms), cfg.nfft)
        for k, name in enumerate(cfg.transforms):
            TRANSFORMS[name](unit, stacked[..., k, :])
        w = window_tensor(cfg.window, cfg.nfft, unit.device, unit.real.dtype, True)
        torch.view_as_real(stacked).mul_(w)
        power = shifted_power(stacked)  # [..., t, K, nfft]
        for k, name in enumerate(cfg.transforms):
            if name in cfg.sorted_transforms:
                power[..., k, :] = sorted_descending(power[..., k, :])
        if cfg.db:
            power = to_db(power, cfg.floor_db)
        return power.flatten(-2).to(torch.float32)

    # per frame: the unit frame, the K transforms and their spectra, all complex
    per_frame = (1 + 2 * len(cfg.transforms)) * cfg.nfft * frames.element_size()
    return map_frame_blocks(frames, features_of, cfg.n_features, torch.float32, per_frame)


def sorted_descending(rows: torch.Tensor) -> torch.Tensor:
    """Each row of [..., n] sorted, largest first. On the CPU numpy's sort is much faster than
    torch.sort for many short rows (765 rows of 256: 0.23 ms vs 6.6 ms, one thread, torch 2.13),
    and there it was most of the cost of a request's features."""
    if rows.device.type == "cpu":
        return torch.from_numpy(np.sort(rows.numpy(), axis=-1)[..., ::-1].copy())
    return rows.sort(dim=-1, descending=True).values


def compute_features(iq: torch.Tensor, cfg: FeatureConfig) -> torch.Tensor:
    """[B, N] complex -> [B, T, F] float32 on iq's device; T = n_frames(N, nfft, hop)."""
    check_complex(iq, "iq")
    return frame_features(frames_of(iq, cfg.nfft, cfg.hop), cfg)


def batch_features(
    recordings: Sequence[torch.Tensor],
    cfg: FeatureConfig,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Recordings of different lengths -> (x [B, Tmax, F] zero-padded, mask [B, Tmax] bool, True
    for a real token). Recordings with the same frame count are computed as one batch; samples
    after the last whole frame are never used, so they are dropped first."""
    if len(recordings) == 0:
        raise InvalidParameter("recordings", "needs at least one recording")
    frame_counts = []
    for index, rec in enumerate(recordings):
        check_complex(rec, f"recordings[{index}]")
        if rec.ndim != 1:
            raise InvalidParameter(
                f"recordings[{index}]", f"must be one-dimensional, got shape {tuple(rec.shape)}"
            )
        if rec.shape[0] < cfg.nfft:
            raise TooFewSamples(
                "samples",
                f"recording {index} has {rec.shape[0]} samples; at least nfft={cfg.nfft} needed",
            )
        frame_counts.append(n_frames(rec.shape[0], cfg.nfft, cfg.hop))
    device = torch.device(device) if device is not None else recordings[0].device
    t_max = max(frame_counts)
    x = torch.zeros(len(recordings), t_max, cfg.n_features, device=device)
    mask = torch.zeros(len(recordings), t_max, dtype=torch.bool, device=device)
    groups: dict[int, list[int]] = {}
    for index, count in enumerate(frame_counts):
        groups.setdefault(count, []).append(index)
    for count, indices in groups.items():
        used = cfg.nfft + (count - 1) * cfg.hop
        batch = torch.stack([recordings[i][:used].to(device) for i in indices])
        rows = torch.tensor(indices, device=device)
        x[rows, :count] = compute_features(batch, cfg)
        mask[rows, :count] = True
    return x, mask


def validate_samples(
    iq: np.ndarray | torch.Tensor, cfg: FeatureConfig, max_samples: int | None = None
) -> None:
    """Refuse a recording the features cannot use: shorter than one frame, longer than
    max_samples, or holding NaN/Inf. Cheap checks first; the finiteness scan reads every value."""
    n = int(iq.shape[-1]) if iq.ndim else 0
    if n < cfg.nfft:
        raise TooFewSamples(
            "samples", f"got {n} samples; at least one frame of nfft={cfg.nfft} is needed"
        )
    if max_samples is not None and n > max_samples:
        raise TooManySamples("samples", f"got {n} samples; the limit is {max_samples}")
    finite = torch.isfinite(iq) if isinstance(iq, torch.Tensor) else np.isfinite(iq)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise InvalidSamples("samples", f"{bad} values are NaN or infinite")


def feature_frames(n_samples: int, cfg: FeatureConfig) -> int:
    """Tokens a recording of n_samples gives (the model's sequence length)."""
    return n_frames(n_samples, cfg.nfft, cfg.hop)
