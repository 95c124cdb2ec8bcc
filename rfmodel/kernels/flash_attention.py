"""Softmax attention over every key (`flash`'s and `gqa`'s core on the GPU fast path) as a Triton
kernel for small head sizes (forward only).

Why: at the reference size's head size of 32 a score costs 128 FLOPs of matmul and one
exponential, so FlashAttention-2 is held by the special-function units' exponential throughput,
not by its tensor cores (docs/experiments/gpu_roofline). This kernel spends few instructions
around each exponential:

- where the scores' Cauchy-Schwarz bound allows (`BOUND_LIMIT`), a row is shifted by that bound
  instead of by its running maximum, so the key loop has no maximum to find and no sums to
  rescale (FlashDecoding++'s "unified max", Hong et al. 2023), with the running maximum for
  the blocks over it;
- the row sums come from the tensor cores, as the rounded weights times a block of ones (so the
  normaliser is the sum of exactly the weights used);
- the exponentials are taken in fp32 and rounded once. (A packed `ex2.approx.f16x2` was used
  until session 26: on sm_90 ptxas splits it into two scalar `MUFU.EX2.F16` plus byte shuffles.)

The weights are rounded to the values' dtype, as SDPA rounds them: bf16 for a bf16 model, whose
exponent range (fp32's) is what lets a row be shifted by a bound rather than by its maximum.
(Until session 27 they were fp16, with 3 more mantissa bits, at the cost of converting V to
fp16 in a pass of its own.) Unlike SDPA's flash kernel it also takes a key-padding mask.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

from rfmodel.kernels.latent_attention import LOG2E

# The largest bound B on a block's scores (log2 units) under which the kernel shifts them by
# the bound instead of by their running maximum. A row's largest weight is then at least
# 2^-2B, so weights down to 2^-30 of it (far below bf16's precision) stay above fp32's and
# bf16's smallest normal, 2^-126: 2B + 30 < 126. Only for bf16 weights (fp32's exponent range;
# fp16's smallest normal is 2^-14). The shipped mha and gqa (trained, default size) have bounds
# under it in 96 % and 99 % of their (recording, head, layer) triples (median 26 and 24).
BOUND_LIMIT = 48.0

# (queries a program takes, keys it takes at a time, warps, pipeline stages)
CONFIGS = [
    triton.Config({"BLOCK_Q": q, "BLOCK_T": t}, num_warps=w, num_stages=s)
    for q, t, w, s in [
        (128, 64, 4, 2),
        (128, 128, 4, 2),
        (128, 128, 8, 2),
        (128, 64, 4, 3),
        (64, 64, 4, 2),
    ]
]
# key blocks are powers of two: a key count that is a multiple of the largest fills every block
KEY_ALIGN = max(config.kwargs["BLOCK_T"] for config in CONFIGS)


@triton.jit
def _key_block(q, k_tile, v_tile, mask_row, t0, S, keys, HAS_MASK, EVEN_KEYS):
    """The key block at t0: q's scores against it [BLOCK_Q, BLOCK_T] (fp32; -inf for padding
    and past S) and its values [BLOCK_T, d]."""
    real = t0 + keys < S
    if EVEN_KEYS:
        k = tl.load(k_tile)  # [BLOCK_T, d]
        v = tl.load(v_tile)
    else:
        k = tl.load(k_tile, mask=real[:, None], other=0.0)
        v = tl.load(v_tile, mask=real[:, None], other=0.0)
    scores = tl.dot(q, tl.trans(k))  # [BLOCK_Q, BLOCK_T], fp32
    if HAS_MASK or not EVEN_KEYS:
        if HAS_MASK:
            real = real & (tl.load(mask_row + t0 + keys, mask=real, other=0) != 0)
        scores = tl.where(real[None, :], scores, float("-inf"))
    return scores, v


# tuned per head size, power-of-two band of the key count and the program count (see
# latent_attention), and launch kind
@triton.autotune(configs=CONFIGS, key=["D", "key_scale", "program_scale", "SHIFT_BY_BOUND"])
@triton.jit
def _attention_kernel(
    q_ptr, k_ptr, v_ptr, mask_ptr, q_norm_ptr, key_norm_ptr, out_ptr,
    T, S, key_scale, program_scale,
    stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
    stride_vb, stride_vh, stride_vt, stride_mask, stride_ob, stride_oh, stride_ot,
    H: tl.constexpr, GROUP: tl.constexpr, D: tl.constexpr, SCALE_LOG2: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_T: tl.constexpr, HAS_MASK: tl.constexpr, EVEN_KEYS: tl.constexpr,
    BOUND_LIMIT: tl.constexpr, SHIFT_BY_BOUND: tl.constexpr,
):  # fmt: skip
    # one grid axis (the others stop at 65,535 programs), a head's query blocks side by side:
    # they run together and share its keys and values in L2
    pid = tl.program_id(0)
    query_blocks = tl.cdiv(T, BLOCK_Q)
    bh = pid // query_blocks
    # 64-bit bases, 32-bit offsets within a tile: a row or head offset passes 2^31 from a few
    # million tokens
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    kv = h // GROUP  # the K/V head this query head reads (gqa's groups)
    first = (pid % query_blocks).to(tl.int64) * BLOCK_Q
    rows = tl.arange(0, BLOCK_Q)
    cols = tl.arange(0, D)
    keys = tl.arange(0, BLOCK_T)
    q_rows = q_ptr + b * stride_qb + h * stride_qh + first * stride_qt
    real_rows = (first + rows < T)[:, None]
    q = tl.load(q_rows + rows[:, None] * stride_qt + cols[None, :], mask=real_rows, other=0.0)
    k_tile = k_ptr + b * stride_kb + kv * stride_kh + keys[:, None] * stride_kt + cols[None, :]
    v_tile = v_ptr + b * stride_vb + kv * stride_vh + keys[:, None] * stride_vt + cols[None, :]
    ones = tl.full([BLOCK_T, 16], 1.0, v_ptr.dtype.element_ty)  # the narrowest tensor-core operand

    # Softmax is the same whatever constant a row's scores are shifted by. Where the block's
    # Cauchy-Schwarz bounds |q| max|k| (log2 units) are all under BOUND_LIMIT, each row is
    # shifted by its bound (FlashDecoding++'s unified max): no running max and no rescaling,
    # about 40 % of the key loop's instructions. Blocks over it take the running max. The two
    # kinds are two launches of this kernel (SHIFT_BY_BOUND), each skipping the other's blocks:
    # one kernel holding both loops behind a branch makes ptxas serialise the tensor-core
    # instructions. Both launches decide from the same stored norms, so each block is done once.
    bound = tl.load(
        q_norm_ptr + bh.to(tl.int64) * T + first + rows, mask=first + rows < T, other=0.0
    )
    bound = bound * (tl.load(key_norm_ptr + b * H // GROUP + kv) * SCALE_LOG2)  # [BLOCK_Q]
    if (tl.max(bound, axis=0) < BOUND_LIMIT) == SHIFT_BY_BOUND:
        running_sum = tl.zeros([BLOCK_Q, 16], tl.float32)  # 16 copies of each row's sum
        acc = tl.zeros([BLOCK_Q, D], tl.float32)
        mask_row = mask_ptr + b * stride_mask
        if SHIFT_BY_BOUND:
            for t0 in range(0, S, BLOCK_T):
                scores, v = _key_block(
                    q, k_tile, v_tile, mask_row, t0, S, keys, HAS_MASK, EVEN_KEYS
                )
                weights = tl.exp2(scores * SCALE_LOG2 - bound[:, None]).to(v.dtype)
                running_sum = tl.dot(weights, ones, running_sum)
                acc = tl.dot(weights, v, acc)
                k_tile += BLOCK_T * stride_kt
                v_tile += BLOCK_T * stride_vt
        else:
            running_max = tl.full([BLOCK_Q], float("-inf"), tl.float32)
            for t0 in range(0, S, BLOCK_T):
                scores, v = _key_block(
                    q, k_tile, v_tile, mask_row, t0, S, keys, HAS_MASK, EVEN_KEYS
                )
                new_max = tl.maximum(running_max, tl.max(scores, axis=1) * SCALE_LOG2)
                # a row whose keys so far are all padding keeps max -inf; exp2(-inf - 0) is 0
                safe_max = tl.where(new_max == float("-inf"), 0.0, new_max)
                rescale = tl.exp2(running_max - safe_max)  # [BLOCK_Q], one per row
                weights = tl.exp2(scores * SCALE_LOG2 - safe_max[:, None]).to(v.dtype)
                running_sum = running_sum * rescale[:, None] + tl.dot(weights, ones)
                acc = acc * rescale[:, None] + tl.dot(weights, v)
                running_max = new_max
                k_tile += BLOCK_T * stride_kt
                v_tile += BLOCK_T * stride_vt

        total = tl.max(running_sum, axis=1)
        # a row with no real key at all gets zeros, as SDPA gives, not 0 / 0
        out = acc / tl.where(total == 0.0, 1.0, total)[:, None]
        o_rows = out_ptr + b * stride_ob + h * stride_oh + first * stride_ot
        tl.store(
            o_rows + rows[:, None] * stride_ot + cols[None, :],
            out.to(out_ptr.dtype.element_ty),
            mask=real_rows,
        )


def handles(q: Tensor, v: Tensor) -> bool:
    """Whether the kernel takes these heads on this GPU: one power-of-two head size from 16 to 64
    for queries, keys and values (the small sizes where the exponentials bound FlashAttention-2)
    and bf16 tensor cores (compute capability 8.0 on)."""
    d = q.shape[-1]
    shapes = d & (d - 1) == 0 and 16 <= d <= 64 and v.shape[-1] == d
    # get_device_properties, not get_device_capability: see latent_attention.handles
    return shapes and torch.cuda.get_device_properties(q.device).major >= 8


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    """softmax(q k^T / sqrt(d)) v over the real keys: q [B, H, T, d], k and v [B, Hkv, S, d] with
    each K/V head read by H // Hkv consecutive query heads (any layout with unit stride along d),
    mask [B, S] bool (True = real) or None -> [B, H, T, d], a head view of a [B, T, H*d] buffer
    (so merging the heads copies nothing)."""
    b, h, t, d = q.shape
    n_kv, s = k.shape[1:3]
    assert h % n_kv == 0 and k.shape[-1] == d and (mask is None or mask.shape == (b, s))
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    out = torch.empty(b, t, h * d, device=q.device, dtype=q.dtype)
    heads = out.view(b, t, h, d).transpose(1, 2)
    has_mask = mask is not None
    if has_mask:
        mask = mask.contiguous()  # the kernel steps through a row's keys one element apart

    def grid(meta):
        return (triton.cdiv(t, meta["BLOCK_Q"]) * b * h,)

    # the bounds' factors: each query's length [B, H, T] and each K/V head's longest key [B, Hkv]
    q_norm = torch.linalg.vector_norm(q, dim=-1, dtype=torch.float32).contiguous()
    key_norm = torch.linalg.vector_norm(k, dim=-1, dtype=torch.float32).amax(dim=-1).contiguous()
    # fp16 weights take the running max everywhere (BOUND_LIMIT's comment)
    kinds = (True, False) if v.dtype == torch.bfloat16 else (False,)
    for shift_by_bound in kinds:
        _attention_kernel[grid](
            q, k, v, mask if has_mask else k, q_norm, key_norm, heads,  # no mask: never read
            t, s, s.bit_length(), (b * h * t).bit_length(),
            *q.stride()[:3], *k.stride()[:3], *v.stride()[:3],
            mask.stride(0) if has_mask else 0, *heads.stride()[:3],
            H=h, GROUP=h // n_kv, D=d, SCALE_LOG2=LOG2E / math.sqrt(d), HAS_MASK=has_mask,
            EVEN_KEYS=s % KEY_ALIGN == 0,
            BOUND_LIMIT=BOUND_LIMIT if v.dtype == torch.bfloat16 else 0.0,
            SHIFT_BY_BOUND=shift_by_bound,
        )  # fmt: skip
    return heads
