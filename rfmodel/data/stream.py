"""The endless training stream and the fixed evaluation sets.

Every item (one example, or one batch in batch mode) is keyed by its global index: its generator is
seeded with SeedSequence(seed, spawn_key=(domain, index)). The stream is therefore the same whatever
the number of DataLoader workers or DDP ranks, and resuming is starting at an index. The training
stream and the evaluation sets use different domains, so they never share an example even when given
the same seed number.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from .classes import CLASSES, NOISE, class_index
from .generator import SNR_RANGE, generate_example

STREAM_DOMAIN = 0x5354  # "ST"
EVAL_DOMAIN = 0x4556  # "EV"
EVAL_SNR_VALUES = (-10.0, -5.0, 0.0, 5.0, 10.0, 15.0, 20.0, 30.0)


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


@dataclass(frozen=True)
class SnrMix:
    """In-band SNRs of the signals in a stream: uniform within each band (low, high) dB, a band
    chosen with its weight's share, e.g. `-10,-5:0.05,-5,30:0.95` (`LOW,HIGH[:WEIGHT]` per band,
    weight 1 where left out).

    One band draws exactly as `rng.uniform(low, high)`, so a one-band stream is the stream that
    a plain (low, high) range always gave."""

    bands: tuple[tuple[float, float], ...]
    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.bands or len(self.weights) != len(self.bands):
            raise ValueError("need one weight per band and at least one band")
        for low, high in self.bands:
            if not (math.isfinite(low) and math.isfinite(high)) or not low <= high:
                raise ValueError(f"band {low:g},{high:g} dB is not finite LOW <= HIGH")
        if not all(math.isfinite(w) and w > 0 for w in self.weights):
            raise ValueError(f"weights {self.weights} must be positive")

    @classmethod
    def uniform(cls, low: float, high: float) -> SnrMix:
        return cls(((float(low), float(high)),), (1.0,))

    @classmethod
    def parse(cls, text: str) -> SnrMix:
        """`LOW,HIGH[:WEIGHT][,LOW,HIGH[:WEIGHT]...]` in dB; ValueError says what is wrong."""
        parts = [part.strip() for part in text.split(",")]
        if len(parts) % 2:
            raise ValueError(f"{text!r} is not LOW,HIGH[:WEIGHT] pairs in dB")
        bands, weights = [], []
        for low_text, high_entry in zip(parts[0::2], parts[1::2], strict=True):
            high_text, _, weight_text = high_entry.partition(":")
            try:
                band = (float(low_text), float(high_text))
                weight = float(weight_text) if weight_text else 1.0
            except ValueError:
                raise ValueError(
                    f"{low_text},{high_entry} is not LOW,HIGH[:WEIGHT] in dB"
                ) from None
            bands.append(band)
            weights.append(weight)
        mix = cls(tuple(bands), tuple(weights))  # checks each band and weight
        total = sum(weights)
        return cls(mix.bands, tuple(w / total for w in weights))

    def draw(self, rng: np.random.Generator) -> float:
        band = 0 if len(self.bands) == 1 else int(rng.choice(len(self.bands), p=self.weights))
        return float(rng.uniform(*self.bands[band]))

    def record(self) -> list:
        """For a run's record: [low, high] for one band (as records always held it), else
        [[low, high, weight], ...]."""
        if len(self.bands) == 1:
            return list(self.bands[0])
        return [[low, high, w] for (low, high), w in zip(self.bands, self.weights, strict=True)]

    def __str__(self) -> str:
        if len(self.bands) == 1:
            return "{:g},{:g}".format(*self.bands[0])
        pairs = zip(self.bands, self.weights, strict=True)
        return ",".join(f"{low:g},{high:g}:{w:g}" for (low, high), w in pairs)


def _check_classes(classes: Sequence[str]) -> tuple[str, ...]:
    classes = tuple(classes)
    if not classes:
        raise ValueError("classes: at least one class is needed")
    for label in classes:
        class_index(label)
    if len(set(classes)) != len(classes):
        raise ValueError(f"classes: duplicate names in {classes}")
    return classes


class SyntheticStream(IterableDataset):
    """Endless random examples: class uniform over `classes`, SNR drawn from `snr_range` (a
    (low, high) range drawn uniformly, or an SnrMix; NaN for noise), length drawn from `lengths`
    (weights optional).

    batch_size=None yields (iq complex64 [n], label_index int, snr_db float) per example; a batch
    size yields whole batches (iq [B, n], labels int64 [B], snr float32 [B]) of one length: use it
    with DataLoader(batch_size=None) for mixed lengths, and for a stream that resumes exactly
    (`start` = batches already consumed over all ranks). label_index indexes `classes`.

    With DataLoader workers and DDP ranks (rank, world_size), rank r reads items r, r + world_size,
    r + 2*world_size, ... in that order whatever its number of workers."""

    def __init__(
        self,
        seed: int,
        lengths: Sequence[int] = (4096,),
        length_weights: Sequence[float] | None = None,
        snr_range: tuple[float, float] | SnrMix = SNR_RANGE,
        classes: Sequence[str] = CLASSES,
        batch_size: int | None = None,
        start: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        super().__init__()
        self.seed = int(seed)
        self.lengths = np.asarray(list(lengths), dtype=np.int64)
        if self.lengths.ndim != 1 or len(self.lengths) == 0:
            raise ValueError("lengths: need at least one recording length")
        self.length_p = None
        if length_weights is not None:
            weights = np.asarray(length_weights, dtype=np.float64)
            if weights.shape != self.lengths.shape or (weights < 0).any() or weights.sum() <= 0:
                raise ValueError("length_weights: one non-negative weight per length, not all 0")
            self.length_p = weights / weights.sum()
        if not isinstance(snr_range, SnrMix):
            try:
                snr_range = SnrMix.uniform(*snr_range)
            except ValueError as exc:
                raise ValueError(f"snr_range: {exc}") from None
        self.snr_mix = snr_range
        self.classes = _check_classes(classes)
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size: {batch_size} is not a positive size")
        self.batch_size = batch_size
        if start < 0:
            raise ValueError(f"start: {start} is negative")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank: {rank} not in 0..{world_size - 1} (world_size {world_size})")
        self.start, self.rank, self.world_size = start, rank, world_size

    def _example(self, rng: np.random.Generator, n_samples: int) -> tuple[np.ndarray, int, float]:
        label_index = int(rng.integers(len(self.classes)))
        label = self.classes[label_index]
        snr = None if label == NOISE else self.snr_mix.draw(rng)
        example = generate_example(label, n_samples, rng, snr)
        return example.iq, label_index, example.snr_db

    def item(self, index: int):
        """The stream's item at global `index` (what the iterator yields there)."""
        rng = _rng(self.seed, STREAM_DOMAIN, index)
        n_samples = int(rng.choice(self.lengths, p=self.length_p))
        if self.batch_size is None:
            return self._example(rng, n_samples)
        iq = np.empty((self.batch_size, n_samples), dtype=np.complex64)
        labels = np.empty(self.batch_size, dtype=np.int64)
        snr = np.empty(self.batch_size, dtype=np.float32)
        for row in range(self.batch_size):
            iq[row], labels[row], snr[row] = self._example(rng, n_samples)
        return iq, labels, snr

    def __iter__(self) -> Iterator:
        worker = get_worker_info()
        worker_id, n_workers = (worker.id, worker.num_workers) if worker else (0, 1)
        local = worker_id  # this rank's items are numbered 0, 1, 2, ...; workers deal them out
        while True:
            yield self.item(self.start + local * self.world_size + self.rank)
            local += n_workers


class EvalSet(NamedTuple):
    iq: np.ndarray  # complex64 [N, n_samples]
    labels: np.ndarray  # int64 [N], indices into the class list
    snr: np.ndarray  # float32 [N], in-band SNR dB; NaN for noise


def make_eval_set(
    seed: int,
    n_per_class: int,
    n_samples: int = 4096,
    snr_values: Sequence[float] = EVAL_SNR_VALUES,
    classes: Sequence[str] = CLASSES,
) -> EvalSet:
    """n_per_class examples of every class, in class order; within a class the SNRs cycle through
    snr_values so every class sees each SNR equally often (noise gets NaN). Example j of a class
    depends only on (seed, class name, j): the same seed gives the same bytes, and a larger set
    extends a smaller one."""
    classes = _check_classes(classes)
    if n_per_class < 1:
        raise ValueError(f"n_per_class: {n_per_class} is not a positive count")
    snr_values = [float(v) for v in snr_values]
    if not snr_values or any(math.isnan(v) for v in snr_values):
        raise ValueError("snr_values: need at least one SNR, none NaN")
    total = len(classes) * n_per_class
    iq = np.empty((total, n_samples), dtype=np.complex64)
    labels = np.repeat(np.arange(len(classes), dtype=np.int64), n_per_class)
    snr = np.empty(total, dtype=np.float32)
    for position, label in enumerate(classes):
        for j in range(n_per_class):
            row = position * n_per_class + j
            rng = _rng(seed, EVAL_DOMAIN, class_index(label), j)
            target = None if label == NOISE else snr_values[j % len(snr_values)]
            example = generate_example(label, n_samples, rng, target)
            iq[row], snr[row] = example.iq, example.snr_db
    return EvalSet(iq, labels, snr)
