"""Synthetic labelled RF recordings: a generator deterministic from a seed, an endless training
stream and fixed evaluation sets. See docs/data.md."""

from .classes import CLASSES, class_index
from .generator import SNR_RANGE, Example, generate_example
from .stream import EVAL_SNR_VALUES, EvalSet, SnrMix, SyntheticStream, make_eval_set

__all__ = [
    "CLASSES",
    "EVAL_SNR_VALUES",
    "SNR_RANGE",
    "EvalSet",
    "Example",
    "SnrMix",
    "SyntheticStream",
    "class_index",
    "generate_example",
    "make_eval_set",
]
