"""The GPU inference fast path: where PyTorch's own kernels leave time on the table for this
model's shapes (docs/experiments/gpu_roofline), the same layers computed another way:

- `latent`'s two attention steps as Triton kernels (rfmodel.kernels.latent_attention), the
  second with `wo`, the residual add and the next RMSNorm taken in
  (`LatentAttention.fuse_residual_norm`);
- `flash`'s and `gqa`'s softmax attention at small head sizes as a Triton kernel that spends few
  instructions around each exponential (rfmodel.kernels.flash_attention, through
  rfmodel.attention.base.grouped_sdpa);
- the MLP's GELU in the epilogue of cuBLASLt's `up` matmul (rfmodel.classifier.MLP);
- the query, key and value projections as one matmul (rfmodel.attention.mha).

The plain-torch layers are the model's definition and run everywhere else. The fast path is
taken only for CUDA tensors in bf16 or fp16 outside autograd (the Triton kernels have no
backward), and never inside `reference_math()`; the Triton kernels also need Triton importable.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

HAS_TRITON = importlib.util.find_spec("triton") is not None
FAST_DTYPES = (torch.bfloat16, torch.float16)

_switched_off = 0


def fast_path(*tensors: Tensor) -> bool:
    """Whether the fast path may stand in for the reference math on these tensors."""
    if _switched_off:
        return False
    if any(not t.is_cuda or t.dtype not in FAST_DTYPES for t in tensors):
        return False
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


@contextmanager
def reference_math() -> Iterator[None]:
    """Within: every layer computes through its plain-torch reference, for A/B measurements and
    for the tests that compare the two."""
    global _switched_off
    _switched_off += 1
    try:
        yield
    finally:
        _switched_off -= 1
