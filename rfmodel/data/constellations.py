"""Symbol alphabets of the linearly modulated classes, each scaled to unit average power."""

import numpy as np


def _unit_power(points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.complex128)
    return points / np.sqrt(np.mean(np.abs(points) ** 2))


def _square_qam(order: int) -> np.ndarray:
    side = round(np.sqrt(order))
    levels = np.arange(-(side - 1), side, 2, dtype=np.float64)
    return _unit_power((levels[:, None] + 1j * levels[None, :]).ravel())


def _psk(order: int, rotation: float = 0.0) -> np.ndarray:
    return np.exp(1j * (rotation + 2 * np.pi * np.arange(order) / order))


CONSTELLATIONS: dict[str, np.ndarray] = {
    "ook": _unit_power([0.0, 1.0]),
    "4ask": _unit_power([-3.0, -1.0, 1.0, 3.0]),
    "bpsk": _psk(2),
    "qpsk": _psk(4, rotation=np.pi / 4),
    "8psk": _psk(8),
    "16qam": _square_qam(16),
    "64qam": _square_qam(64),
}
