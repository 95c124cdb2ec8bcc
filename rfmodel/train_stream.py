"""Where training batches come from: the synthetic stream in batch mode, behind a DataLoader.

The stream's batch at global index k is a pure function of (seed, k), and rank r of W reads
k = r, r + W, ...; so a run resumes at step s by starting the stream at s * W (no generator state to
save), DataLoader workers build batches in parallel and hand them back in index order, and every
model trained in lockstep sees the same batches. Each batch has one recording length, drawn from a
weighted mix, so it stacks into one [B, N] tensor and its features into [B, T, F] with no padding.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits
from torch.utils.data import DataLoader

from rfmodel.data import SNR_RANGE, SnrMix, SyntheticStream
from rfmodel.data.generator import MAX_SAMPLES, MIN_SAMPLES

# spawn-key tags of the model-init and dropout seeds, apart from the data's own domains
INIT_KEY = 0x696E_6900  # "ini"
DROPOUT_KEY = 0x6472_6F00  # "dro"

# mostly the service's typical 4,096-sample request (31 tokens), some 16,384-sample ones (127
# tokens) so that the model sees longer sequences too. Longer recordings cost generation time about
# in proportion (measured on 15 workers: 10.9k, 3.6k and 0.72k examples/s at 4,096, 16,384 and
# 65,536 samples), and generation is what bounds a GPU run: the shipped run got 4.2k-4.7k
# examples/s of this mix from 15 workers on an H200 host's 16 vCPUs.
DEFAULT_LENGTHS = "4096:0.95,16384:0.05"


class LengthMixError(ValueError):
    """A --lengths value that does not parse."""


@dataclass(frozen=True)
class LengthMix:
    """Recording lengths and their relative frequencies, e.g. `4096:0.9,65536:0.1`."""

    lengths: tuple[int, ...]
    weights: tuple[float, ...]

    @classmethod
    def parse(cls, text: str) -> LengthMix:
        lengths, weights = [], []
        for entry in text.split(","):
            length_text, _, weight_text = entry.strip().partition(":")
            try:
                length = int(length_text)
                weight = float(weight_text) if weight_text else 1.0
            except ValueError as exc:
                raise LengthMixError(
                    f"lengths: {entry!r} is not LENGTH or LENGTH:WEIGHT (e.g. 4096:0.9)"
                ) from exc
            if not MIN_SAMPLES <= length <= MAX_SAMPLES or not np.isfinite(weight) or weight <= 0:
                raise LengthMixError(
                    f"lengths: {entry!r} needs a length from {MIN_SAMPLES} to {MAX_SAMPLES} "
                    "samples and a positive weight"
                )
            lengths.append(length)
            weights.append(weight)
        if len(set(lengths)) != len(lengths):
            raise LengthMixError(f"lengths: {text!r} names a length twice")
        total = sum(weights)
        return cls(tuple(lengths), tuple(w / total for w in weights))

    def __str__(self) -> str:
        return ",".join(f"{n}:{w:g}" for n, w in zip(self.lengths, self.weights, strict=True))


def derived_seed(seed: int, *key: int) -> int:
    """A 64-bit seed for `key` under the run's `seed` (stable across machines and versions)."""
    return int(np.random.SeedSequence(seed, spawn_key=key).generate_state(1, np.uint64)[0])


def training_loader(
    seed: int,
    batch_size: int,
    lengths: LengthMix,
    start_step: int,
    rank: int,
    world_size: int,
    workers: int,
    pin_memory: bool,
    snr_range: tuple[float, float] | SnrMix = SNR_RANGE,
) -> DataLoader:
    """Batches (iq [B, N] complex64, labels [B] int64, snr_db [B] float32) for steps start_step + 1,
    start_step + 2, ... of this rank, built by `workers` processes (0: in this process)."""
    stream = SyntheticStream(
        seed,
        lengths=lengths.lengths,
        length_weights=lengths.weights,
        snr_range=snr_range,
        batch_size=batch_size,
        start=start_step * world_size,
        rank=rank,
        world_size=world_size,
    )
    return DataLoader(
        stream,
        batch_size=None,
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers else None,
        # fork is the cheapest start; the workers only run numpy and never touch CUDA
        multiprocessing_context="fork" if workers else None,
        worker_init_fn=yield_to_trainer,
    )


def yield_to_trainer(worker_id: int) -> None:
    """Set up a data worker: one BLAS/OpenMP thread (the workers already run one per core; the
    pools a forked worker inherits would oversubscribe them, which measured 1.7x slower on 2
    cores), and a lower CPU priority, so the training process, which launches every GPU kernel,
    never waits for a core."""
    threadpool_limits(limits=1)
    os.nice(5)
