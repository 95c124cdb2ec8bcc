"""Softmax attention over every key (`flash`'s and `gqa`'s core on the GPU fast path) as a Triton
kernel for small head sizes (forward only).

Why: at the reference size's head size of 32 a score costs 128 FLOPs of matmul and one
exponential, so FlashAttention-2 is held by the special-function units' exponential throughput,
not by its tensor cores (docs/experiments/gpu_roofline). This kernel spends fewer instructions
around each exponential: the row sums come from the tensor cores, as the rounded weights times a
block of ones (so the normaliser is the sum of exactly the weights used), and the exponentials
are taken in fp32 and rounded once to fp16. (A packed `ex2.approx.f16x2` was used until session
26: on sm_90 ptxas splits it into two scalar `MUFU.EX2.F16` plus the byte shuffles to unpack and
repack the halves, so it cost more instructions than fp32 and rounded the exponent to fp16 first.)

Half precision, not bfloat16, for the weights: they lie in (0, 1], where fp16's 10 mantissa bits
beat bf16's 7. bf16 values are converted to fp16 once, before the kernel (one pass over V,
where inside it every query block would convert every tile again): exact from 2^-14 to fp16's
largest, 65,504, and clamped to the largest bf16 below it (this model's activations are far
below). Unlike SDPA's flash kernel it also takes a key-padding mask.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

from rfmodel.kernels.latent_attention import LOG2E

# the largest bf16 within fp16's range (65,504 itself rounds to 65,536 in bf16, inf in fp16)
BF16_IN_FP16_RANGE = 65280.0


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


# tuned per head size and power-of-two band of the key count and the program count (see
# latent_attention)
@triton.autotune(configs=CONFIGS, key=["D", "key_scale", "program_scale"])
@triton.jit
def _attention_kernel(
    q_ptr, k_ptr, v_ptr, mask_ptr, out_ptr,
    T, S, key_scale, program_scale,
    stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
    stride_vb, stride_vh, stride_vt, stride_mask, stride_ob, stride_oh, stride_ot,
    H: tl.constexpr, GROUP: tl.constexpr, D: tl.constexpr, SCALE_LOG2: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_T: tl.constexpr, HAS_MASK: tl.constexpr, EVEN_KEYS: tl.constexpr,
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
    ones = tl.full([BLOCK_T, 16], 1.0, tl.float16)  # the narrowest tensor-core operand

    running_max = tl.full([BLOCK_Q], float("-inf"), tl.float32)
    running_sum = tl.zeros([BLOCK_Q, 16], tl.float32)  # 16 copies of each row's sum
    acc = tl.zeros([BLOCK_Q, D], tl.float32)
    for t0 in range(0, S, BLOCK_T):
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
                flags = tl.load(mask_ptr + b * stride_mask + t0 + keys, mask=real, other=0)
                real = real & (flags != 0)
            scores = tl.where(real[None, :], scores, float("-inf"))
        new_max = tl.maximum(running_max, tl.max(scores, axis=1) * SCALE_LOG2)
        # a row whose keys so far are all padding keeps max -inf; exp2(-inf - 0) is 0, not NaN
        safe_max = tl.where(new_max == float("-inf"), 0.0, new_max)
        rescale = tl.exp2(running_max - safe_max)  # [BLOCK_Q], one per row: fp32 is cheap
        weights = tl.exp2(scores * SCALE_LOG2 - safe_max[:, None]).to(tl.float16)
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
    if v.dtype != torch.float16:  # past fp16's range a bf16 value would turn inf
        v = v.clamp(-BF16_IN_FP16_RANGE, BF16_IN_FP16_RANGE).to(torch.float16)
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    out = torch.empty(b, t, h * d, device=q.device, dtype=q.dtype)
    heads = out.view(b, t, h, d).transpose(1, 2)
    has_mask = mask is not None
    if has_mask:
        mask = mask.contiguous()  # the kernel steps through a row's keys one element apart

    def grid(meta):
        return (triton.cdiv(t, meta["BLOCK_Q"]) * b * h,)

    _attention_kernel[grid](
        q, k, v, mask if has_mask else k, heads,  # the mask is never read without HAS_MASK
        t, s, s.bit_length(), (b * h * t).bit_length(),
        *q.stride()[:3], *k.stride()[:3], *v.stride()[:3],
        mask.stride(0) if has_mask else 0, *heads.stride()[:3],
        H=h, GROUP=h // n_kv, D=d, SCALE_LOG2=LOG2E / math.sqrt(d), HAS_MASK=has_mask,
        EVEN_KEYS=s % KEY_ALIGN == 0,
    )  # fmt: skip
    return heads
