"""Typed input errors. Every error names the offending field so the service can map it to a
clear 4xx response (service/protocol/errors.py is the one place that does the mapping)."""

from __future__ import annotations


class InputError(ValueError):
    """Base class: the caller sent something we refuse. `field` names what was wrong."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class InvalidParameter(InputError):
    """A size, rate, window name or option is out of range or of the wrong type."""


class InvalidFormat(InputError):
    """Unknown sample format, or bytes that cannot be that format (e.g. odd byte count)."""


class InvalidSamples(InputError):
    """Sample values are unusable (NaN, Inf)."""


class TooFewSamples(InputError):
    """Fewer samples than one FFT frame."""


class TooManySamples(InputError):
    """More samples (or frames) than the configured maximum."""
