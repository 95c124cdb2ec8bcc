"""Option types shared by the `rfcls` commands: counts, numbers, recording lengths, SNRs and the
--device choice."""

from __future__ import annotations

import argparse
import math

import torch

from rfmodel.data.generator import MAX_SAMPLES, MIN_SAMPLES

DEVICE_CHOICES = ("auto", "cpu", "cuda")


class DeviceError(ValueError):
    """A --device that this machine cannot give."""


def pick_device(choice: str, index: int = 0) -> torch.device:
    """`auto`: CUDA device `index` where torch sees one, else the CPU."""
    if choice not in DEVICE_CHOICES:
        raise DeviceError(f"device: {choice!r} is not one of {', '.join(DEVICE_CHOICES)}")
    if choice == "cuda" and not torch.cuda.is_available():
        raise DeviceError("device: cuda was asked for but torch sees no CUDA device")
    if choice == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", index)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value < math.inf:  # NaN too
        raise argparse.ArgumentTypeError(f"{text} is not a positive finite number")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not 0 <= value < math.inf:  # NaN too
        raise argparse.ArgumentTypeError(f"{text} is not a non-negative finite number")
    return value


def recording_length(text: str) -> int:
    value = int(text)
    if not MIN_SAMPLES <= value <= MAX_SAMPLES:
        raise argparse.ArgumentTypeError(f"{value} is not from {MIN_SAMPLES} to {MAX_SAMPLES}")
    return value


def snr_values(text: str) -> tuple[float, ...]:
    values = tuple(float(v) for v in text.split(","))
    if not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"{text} holds a value that is not a finite number of dB")
    return values
