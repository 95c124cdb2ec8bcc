"""Random parameter draws for one example: every value is drawn from the example's own generator
unless the caller overrides it by name, and every value used is recorded, so an example always
carries the exact parameters it was made with."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


class UnknownOverride(TypeError):
    """An override named a parameter that the generator never drew for this class."""


class Draws:
    def __init__(self, rng: np.random.Generator, overrides: dict[str, Any]):
        self.rng = rng
        self.params: dict[str, Any] = {}
        self._overrides = dict(overrides)

    def value(self, name: str, draw: Callable[[], Any]) -> Any:
        value = self._overrides.pop(name) if name in self._overrides else draw()
        self.params[name] = value
        return value

    def uniform(self, name: str, low: float, high: float) -> float:
        return self.value(name, lambda: float(self.rng.uniform(low, high)))

    def log_uniform(self, name: str, low: float, high: float) -> float:
        return self.value(name, lambda: float(np.exp(self.rng.uniform(np.log(low), np.log(high)))))

    def integer(self, name: str, low: int, high: int) -> int:
        """Uniform over low..high inclusive."""
        return self.value(name, lambda: int(self.rng.integers(low, high + 1)))

    def chance(self, name: str, probability: float) -> bool:
        return self.value(name, lambda: bool(self.rng.random() < probability))

    def choice(self, name: str, options: Sequence[Any]) -> Any:
        return self.value(name, lambda: options[int(self.rng.integers(len(options)))])

    def record(self, name: str, value: Any) -> None:
        """A derived value (e.g. the symbol rate actually realised), kept with the draws."""
        self.params[name] = value

    def check_all_used(self, label: str) -> None:
        if self._overrides:
            unknown = ", ".join(sorted(self._overrides))
            raise UnknownOverride(f"overrides: class {label!r} has no parameter(s) {unknown}")
