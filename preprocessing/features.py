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

Besides spectra, `transforms` may name per-frame distribution features (DISTRIBUTIONS):
the empirical quantile function of a per-sample quantity, at nfft evenly spaced probabilities from
0 (the minimum) to 1 (the maximum), so ascending. They fill one slot of nfft values each, like a
spectrum. Spectra say where the power is in frequency; these say how the samples are distributed,
aimed at what the spectra confuse (the orders of PSK/QAM, the FSK/FM family):

    "amp_q"  |x|^2 of each sample, the instantaneous power relative to the frame's mean power:
             one level for FSK/FM (constant modulus; pulse-shaped PSK only at its symbol
             instants), a few rings for QAM/ASK, on/off for OOK. In dB with the floor when
             `db` is set: the spectra's unit (a bin of white noise and a sample of mean power
             are both 0 dB).
    "if_q"   the instantaneous frequency angle(x[n+1] conj x[n]), less the frame's mean frequency
             (the carrier offset, a nuisance), in FFT bins of the frame (cycles/sample * nfft):
             two plateaus at +-deviation for 2FSK, a smooth spread for GFSK/GMSK/FM, near zero with
             jumps at symbol changes for PSK/QAM. Bins put an FSK tone's plateau at the distance,
             in bins, at which the "x" spectrum shows it, and bound the values by +-nfft/2, on the
             scale of the dB features (+-128 for the default nfft).

They are taken from the unit frame with its white noise floor filtered out (wiener_cleaned): a
per-sample statistic sees the noise of the whole band, so a signal of a tenth of the band at
20 dB in-band SNR looks, sample by sample, like one at 10 dB, and its constant modulus or its FSK
plateaus drown. (In a CPU A/B the unfiltered features gained about a point at SNR >= 10 dB
and lost one at 0 dB; filtered, they gained 3 to 5 points at both.)
Both are unchanged by a gain and a phase rotation, if_q also by a carrier offset of whole bins
(exactly) or any offset (to within the filter's leakage), and they are sorted by definition:
`sorted_transforms` does not apply to them.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from numbers import Integral
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
    MAX_NFFT,
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


# keys whose default came after weights were saved without them: a stored config that lacks one
# predates it, and was made with the feature off
PREDATING_FEATURES = {"recording_band_limit": False}


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
    # the shipped weights' features (docs/model-card.md)
    transforms: tuple[str, ...] = ("x", "x2", "x4", "x8", "env", "amp_q", "if_q")
    db: bool = True
    floor_db: float = -100.0
    sorted_transforms: tuple[str, ...] = ("x2", "x4", "x8")
    # samples per segment of the whole recording's features (preprocessing.recording); 0: none
    recording_segment: int = 4096
    # of which at most this many, the first: the most the shipped models saw in training (16,384
    # samples), and the cost stays bounded at any length
    recording_max_segments: int = 4
    # the recording features again, of the segments filtered to their band (preprocessing.band)
    recording_band_limit: bool = True

    def __post_init__(self) -> None:
        # JSON gives lists; keep the dataclass hashable and comparable
        for name in ("transforms", "sorted_transforms"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        self.validate()
        # plain ints and floats, also from numpy scalars, so that to_dict() is JSON
        nfft, hop = check_frame_sizes(self.nfft, self.hop)
        object.__setattr__(self, "nfft", nfft)
        object.__setattr__(self, "hop", hop)
        for name in ("recording_segment", "recording_max_segments"):
            object.__setattr__(self, name, operator.index(getattr(self, name)))
        object.__setattr__(self, "floor_db", float(self.floor_db))

    def validate(self) -> None:
        check_frame_sizes(self.nfft, self.hop)
        check_window(self.window, self.nfft)
        check_floor_db(self.floor_db)
        for name in ("db", "recording_band_limit"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidParameter(name, f"must be true or false, got {getattr(self, name)!r}")
        segment = self.recording_segment
        if isinstance(segment, bool) or not isinstance(segment, Integral) or segment < 0:
            raise InvalidParameter(
                "recording_segment", f"must be 0 (none) or a number of samples, got {segment!r}"
            )
        if segment > MAX_NFFT:  # a segment is one FFT
            raise InvalidParameter(
                "recording_segment", f"must be at most MAX_NFFT={MAX_NFFT}, got {segment}"
            )
        count = self.recording_max_segments
        if isinstance(count, bool) or not isinstance(count, Integral) or count < 1:
            raise InvalidParameter(
                "recording_max_segments", f"must be a positive integer, got {count!r}"
            )
        valid = ", ".join([*TRANSFORMS, *DISTRIBUTIONS])
        if not isinstance(self.transforms, tuple) or not self.transforms:
            raise InvalidParameter("transforms", f"must be a non-empty list of {valid}")
        for name in self.transforms:
            if not isinstance(name, str) or (name not in TRANSFORMS and name not in DISTRIBUTIONS):
                raise InvalidParameter("transforms", f"unknown transform {name!r}; valid: {valid}")
        if len(set(self.transforms)) != len(self.transforms):
            raise InvalidParameter("transforms", f"repeats a name: {list(self.transforms)}")
        if not isinstance(self.sorted_transforms, tuple) or not all(
            isinstance(name, str) and name in TRANSFORMS for name in self.sorted_transforms
        ):
            raise InvalidParameter(
                "sorted_transforms",
                f"must be a list of spectrum transform names ({', '.join(TRANSFORMS)}; "
                f"{', '.join(DISTRIBUTIONS)} are sorted by definition), "
                f"got {self.sorted_transforms!r}",
            )

    @property
    def n_features(self) -> int:
        return len(self.transforms) * self.nfft

    @property
    def recording_views(self) -> int:
        """Vectors of n_features in the recording's features: the segments as they are, and
        filtered to their band if recording_band_limit; 0 without recording features."""
        if self.recording_segment == 0:
            return 0
        return 2 if self.recording_band_limit else 1

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
        return cls(**{**PREDATING_FEATURES, **d})


def frame_features(frames: torch.Tensor, cfg: FeatureConfig) -> torch.Tensor:
    """[..., T, nfft] complex frames -> [..., T, F] float32 features."""
    spectral = [name for name in cfg.transforms if name in TRANSFORMS]
    distributions = [name for name in cfg.transforms if name in DISTRIBUTIONS]

    def spectra_of(unit: torch.Tensor) -> torch.Tensor:
        """[..., t, nfft] unit frames -> [..., t, len(spectral), nfft] spectra, dB if cfg.db."""
        # each transform is written into its slot, then windowed in place: no stack, no copies
        stacked = unit.new_empty(*unit.shape[:-1], len(spectral), cfg.nfft)
        for k, name in enumerate(spectral):
            TRANSFORMS[name](unit, stacked[..., k, :])
        w = window_tensor(cfg.window, cfg.nfft, unit.device, unit.real.dtype, True)
        torch.view_as_real(stacked).mul_(w)
        power = shifted_power(stacked)  # [..., t, K, nfft]
        for k, name in enumerate(spectral):
            if name in cfg.sorted_transforms:
                power[..., k, :] = sorted_descending(power[..., k, :])
        return to_db(power, cfg.floor_db) if cfg.db else power

    def features_of(block: torch.Tensor) -> torch.Tensor:
        unit = rms_normalize(block)  # [..., t, nfft]
        if not distributions:  # the spectra alone, as the shipped models were trained on
            return spectra_of(unit).flatten(-2).to(torch.float32)
        slots = dict(zip(spectral, spectra_of(unit).unbind(-2), strict=True)) if spectral else {}
        clean = wiener_cleaned(unit)  # shared by the distribution features
        for name in distributions:
            slots[name] = DISTRIBUTIONS[name](clean, cfg)
        return (
            torch.stack([slots[name] for name in cfg.transforms], -2).flatten(-2).to(torch.float32)
        )

    # per frame: the unit frame, the spectral transforms and their spectra, all complex; the
    # cleaned frame and its spectrum, and a few frames' worth of temporaries per distribution
    per_frame = 1 + 2 * len(spectral) + (3 + 2 * len(distributions) if distributions else 0)
    per_frame *= cfg.nfft * frames.element_size()
    return map_frame_blocks(frames, features_of, cfg.n_features, torch.float32, per_frame)


def sorted_descending(rows: torch.Tensor) -> torch.Tensor:
    """Each row of [..., n] sorted, largest first. On the CPU numpy's sort is much faster than
    torch.sort for many short rows (765 rows of 256: 0.23 ms vs 6.6 ms, one thread, torch 2.13),
    and there it was most of the cost of a request's features."""
    if rows.device.type == "cpu":
        return torch.from_numpy(np.sort(rows.numpy(), axis=-1)[..., ::-1].copy())
    return rows.sort(dim=-1, descending=True).values


def sorted_ascending(rows: torch.Tensor) -> torch.Tensor:
    """Each row of [..., n] sorted, smallest first (numpy on the CPU: see sorted_descending)."""
    if rows.device.type == "cpu":
        return torch.from_numpy(np.sort(rows.numpy(), axis=-1))
    return rows.sort(dim=-1).values


# the noise floor is read at this quantile of the frame's periodogram bins (wiener_cleaned)
NOISE_QUANTILE = 0.1


def wiener_cleaned(unit: torch.Tensor) -> torch.Tensor:
    """[..., nfft] unit frames -> the same with the white noise floor filtered out, unit RMS again.

    The frame's own periodogram gives the noise floor N: on bins that hold only noise, |FFT|^2 is
    exponential with mean N, so its q-quantile is -N ln(1 - q); read at q = NOISE_QUANTILE = 0.1,
    that holds while the signal fills under about 90 % of the band (the synthetic classes fill at
    most 76 %, rfmodel.data's MAX_BANDWIDTH; a signal filling the band is taken for noise).

    A bin passes if its power P exceeds N ln(nfft), which a bin of noise alone does with
    probability 1/nfft, about once a frame, and is then scaled by the Wiener gain 1 - N / P.
    The Wiener gain alone (every bin above N) keeps about a fifth of the noise outside the signal's
    band, and lost to the threshold in a CPU A/B. A frame of noise alone keeps one bin on average,
    so it looks like a tone here, and none in about a third of frames ((1 - 1/nfft)^nfft ~ 1/e),
    which then come out silent (amp_q at the floor); the spectra still tell noise. No window:
    the filter acts on the frame as one period, so a frame with no noise keeps its samples, bar
    the bins under the threshold.
    """
    nfft = unit.shape[-1]
    if nfft < 2:  # one bin: no band to find a floor in
        return unit
    spectrum = torch.fft.fft(unit)
    pairs = torch.view_as_real(spectrum)
    power = pairs[..., 0].square() + pairs[..., 1].square()
    k = max(1, int(NOISE_QUANTILE * nfft))
    floor = sorted_ascending(power)[..., k - 1 : k] / -math.log(1 - k / nfft)
    # where(), not a clamp: P = N = 0 (a silent frame) gives 0/0, which must not reach the output
    gain = torch.where(power > math.log(nfft) * floor, 1 - floor / power, 0)
    return rms_normalize(torch.fft.ifft(spectrum * gain))


def power_quantiles(clean: torch.Tensor, cfg: FeatureConfig) -> torch.Tensor:
    """amp_q: [..., nfft] cleaned unit frames -> [..., nfft] their samples' |x|^2, ascending; dB
    (with the floor) if cfg.db. nfft samples give exactly nfft quantiles: the sorted values."""
    pairs = torch.view_as_real(clean)
    power = sorted_ascending(pairs[..., 0].square() + pairs[..., 1].square())
    return to_db(power, cfg.floor_db) if cfg.db else power


def frequency_quantiles(clean: torch.Tensor, cfg: FeatureConfig) -> torch.Tensor:
    """if_q: [..., nfft] cleaned unit frames -> [..., nfft] quantiles of the instantaneous
    frequency about the frame's mean frequency, in FFT bins (module docstring), ascending."""
    nfft = clean.shape[-1]
    if nfft < 2:  # no sample pair: no frequency; the centre of the distribution
        return clean.real.new_zeros(clean.shape)
    pairs = torch.view_as_real(clean)
    re, im = pairs[..., 0], pairs[..., 1]
    # z[n] = x[n+1] conj x[n]: angle(z) is the phase advance over one sample
    z_re = re[..., 1:] * re[..., :-1] + im[..., 1:] * im[..., :-1]
    z_im = im[..., 1:] * re[..., :-1] - re[..., 1:] * im[..., :-1]
    # the mean frequency is angle(sum z) (the lag-1 autocorrelation; weighting by |z| lets the
    # strong samples, whose phase noise does not dominate, decide it). Taking the angle of
    # z conj(sum z) rather than subtracting angles centres each value on it with the cut at
    # +-pi opposite it, and a carrier offset, which turns every z and sum z alike, cancels exactly.
    s_re = z_re.sum(-1, keepdim=True)
    s_im = z_im.sum(-1, keepdim=True)
    # + 0.0 turns -0 into +0: a zero sample (z = 0) then gets atan2(+0, +0) = 0, the mean, and
    # not atan2(+0, -0) = pi, which would depend on the signs of zeros
    c_re = (z_re * s_re + z_im * s_im).add_(0.0)
    c_im = (z_im * s_re - z_re * s_im).add_(0.0)
    bins = torch.atan2(c_im, c_re).mul_(nfft / (2 * math.pi))
    # nfft - 1 values -> nfft quantiles at probabilities k / (nfft - 1), linear between order
    # statistics (numpy's default quantile method), so the slot is nfft wide like the others
    ordered = sorted_ascending(bins)
    lower, upper, frac = quantile_positions(nfft - 1, nfft, ordered.device, ordered.dtype)
    below, above = ordered[..., lower], ordered[..., upper]
    return below.add_((above - below).mul_(frac))


@functools.lru_cache(maxsize=64)
def quantile_positions(
    n_values: int, n_quantiles: int, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Order statistics each side of, and the fraction between them for, the quantiles at
    probabilities k / (n_quantiles - 1) of n_values sorted values (numpy's method="linear")."""
    position = np.linspace(0.0, n_values - 1, n_quantiles)
    lower = np.floor(position).astype(np.int64)
    upper = np.minimum(lower + 1, n_values - 1)
    frac = position - lower
    return (
        torch.tensor(lower, device=device),
        torch.tensor(upper, device=device),
        torch.tensor(frac, dtype=dtype, device=device),
    )


# name -> [..., nfft] complex frames (unit RMS, through wiener_cleaned) and the config ->
# [..., nfft] real quantiles
DISTRIBUTIONS: dict[str, Callable[[torch.Tensor, FeatureConfig], torch.Tensor]] = {
    "amp_q": power_quantiles,
    "if_q": frequency_quantiles,
}


def compute_features(iq: torch.Tensor, cfg: FeatureConfig) -> torch.Tensor:
    """[B, N] complex -> [B, T, F] float32 on iq's device; T = n_frames(N, nfft, hop)."""
    iq = check_complex(iq, "iq")
    return frame_features(frames_of(iq, cfg.nfft, cfg.hop), cfg)


def batch_features(
    recordings: Sequence[torch.Tensor],
    cfg: FeatureConfig,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Recordings of different lengths -> (x [B, Tmax, F] zero-padded, mask [B, Tmax] bool, True
    for a real token). Recordings with the same frame count are computed as one batch; samples
    after the last whole frame are never used, so they are dropped first."""
    check_recordings(recordings, cfg)
    device = torch.device(device) if device is not None else recordings[0].device
    frame_counts = [n_frames(rec.shape[0], cfg.nfft, cfg.hop) for rec in recordings]
    t_max = max(frame_counts)
    x = torch.zeros(len(recordings), t_max, cfg.n_features, device=device)
    mask = torch.zeros(len(recordings), t_max, dtype=torch.bool, device=device)
    used = [cfg.nfft + (count - 1) * cfg.hop for count in frame_counts]
    for rows, batch in stacked_groups(recordings, used, device):
        count = n_frames(batch.shape[-1], cfg.nfft, cfg.hop)
        x[rows, :count] = compute_features(batch, cfg)
        mask[rows, :count] = True
    return x, mask


def check_recordings(recordings: Sequence[torch.Tensor], cfg: FeatureConfig) -> None:
    """At least one recording; each complex, one-dimensional, and at least one frame long."""
    if len(recordings) == 0:
        raise InvalidParameter("recordings", "needs at least one recording")
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


def stacked_groups(
    recordings: Sequence[torch.Tensor], used: Sequence[int], device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(rows, batch [b, n]) per distinct used length n: the recordings whose first `used` samples
    are all that is read, cut to them and stacked on `device`, and their indices."""
    groups: dict[int, list[int]] = {}
    for index, n in enumerate(used):
        groups.setdefault(n, []).append(index)
    for n, indices in groups.items():
        batch = torch.stack([recordings[i][:n].to(device) for i in indices])
        yield torch.tensor(indices, device=device), batch


def validate_samples(
    iq: np.ndarray | torch.Tensor, cfg: FeatureConfig, max_samples: int | None = None
) -> None:
    """Refuse a recording the features cannot use: shorter than one frame, longer than
    max_samples, holding NaN/Inf, or all zeros. Cheap checks first; the scans read every value."""
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
    # Nothing was received (a receiver not streaming, a zero-filled buffer): with neither signal
    # nor noise the features are all floor, and the model would still name a class confidently
    if not bool(iq.any()):
        raise InvalidSamples("samples", "every sample is zero: no signal and no noise to classify")


def feature_frames(n_samples: int, cfg: FeatureConfig) -> int:
    """Tokens a recording of n_samples gives (the model's sequence length)."""
    return n_frames(n_samples, cfg.nfft, cfg.hop)
