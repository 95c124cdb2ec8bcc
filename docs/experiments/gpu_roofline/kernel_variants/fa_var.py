"""Variants of rfmodel.kernels.flash_attention's kernel (its key loop without masks, the keys a
multiple of the key block), one constexpr each. `_kernel`, session 26's A/B, keeps the running
maximum:

- EXP_MODE: how the weights' exponentials are taken. 0: `ex2.approx.f16x2` (the kernel until
  session 26); 1: fp32 `tl.exp2`, rounded to fp16 (the kernel since); 2: none at all, the
  exponent rounded to fp16 as the weight (wrong numbers: how fast the loop runs without the
  special-function unit); 3: a degree-3 polynomial on the FMA units (FlashAttention-4's trick);
  4: fp32 `tl.exp2` rounded to bf16 and the values read as bf16 (no conversion pass).
- POLY_EVERY: n > 0 takes every n-th key block's exponentials by the polynomial.
- SUM_MODE: the row sums as the weights times a block of ones (0, the kernel's), from ones
  appended to the values (1: one dot of twice the width), or as a reduction in fp32 (2).

`_bound_kernel` (session 27) is the loop of the kernel's bound shift (bf16 weights, no running
maximum), taking SUBS sub-blocks of 32 keys a step, the last POLY_SUBS of them with their
exponentials by the polynomial (FlashAttention-4's share of the FMA units) instead of the
special-function unit: with SUBS 4 and POLY_SUBS 1, a quarter of them.
"""

import math
import os

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634
PACKED_EXP = os.environ.get("TRITON_INTERPRET") != "1"
BF16_IN_FP16_RANGE = 65280.0
# degree-3 fit of 2^f on [-0.5, 0.5], relative error 7.7e-5 (fp16 rounding is 4.9e-4)
P0 = tl.constexpr(0.9999289048197669)
P1 = tl.constexpr(0.6932762833317945)
P2 = tl.constexpr(0.24260465590804678)
P3 = tl.constexpr(0.05508876703269269)
ROUND_MAGIC = tl.constexpr(
    12582912.0
)  # 1.5 * 2^23: x + it rounds x to an integer held in the low mantissa bits


@triton.jit
def _exp2_f16(x, PACKED: tl.constexpr):
    if PACKED:
        return tl.inline_asm_elementwise(
            "ex2.approx.f16x2 $0, $1;",
            "=r,r",
            [x.to(tl.float16)],
            dtype=tl.float16,
            is_pure=True,
            pack=2,
        )
    return tl.exp2(x).to(tl.float16)


@triton.jit
def _exp2_poly(x, DTYPE: tl.constexpr = tl.float16):
    """2^x for fp32 x <= 0 on the FMA units (FlashAttention-4's trick), -> DTYPE."""
    x = tl.maximum(x, -126.0)
    t = x + ROUND_MAGIC
    j = t - ROUND_MAGIC
    f = x - j
    p = P0 + f * (P1 + f * (P2 + f * P3))
    bits = p.to(tl.int32, bitcast=True) + (t.to(tl.int32, bitcast=True) << 23)
    return bits.to(tl.float32, bitcast=True).to(DTYPE)


@triton.jit
def _weights(x, MODE: tl.constexpr, PACKED: tl.constexpr):
    if MODE == 0:
        return _exp2_f16(x, PACKED)
    elif MODE == 1:
        return tl.exp2(x).to(tl.float16)
    elif MODE == 3:
        return _exp2_poly(x)
    elif MODE == 4:  # bf16 weights, as FlashAttention-2 rounds them
        return tl.exp2(x).to(tl.bfloat16)
    else:  # diagnostic: no exponential at all (wrong numbers, timing only)
        return x.to(tl.float16)


@triton.jit
def _program(T, H: tl.constexpr, GROUP: tl.constexpr, BLOCK_Q: tl.constexpr):
    """This program's (batch row x head, batch row, head, its K/V head, first query)."""
    pid = tl.program_id(0)
    query_blocks = tl.cdiv(T, BLOCK_Q)
    bh = pid // query_blocks
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    return bh, b, h, h // GROUP, (pid % query_blocks).to(tl.int64) * BLOCK_Q


@triton.jit
def _kernel(
    q_ptr, k_ptr, v_ptr, out_ptr, T, S,
    stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
    stride_vb, stride_vh, stride_vt, stride_ob, stride_oh, stride_ot,
    H: tl.constexpr, GROUP: tl.constexpr, D: tl.constexpr, SCALE_LOG2: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_T: tl.constexpr, PACKED_EXP: tl.constexpr,
    EXP_MODE: tl.constexpr, POLY_EVERY: tl.constexpr, SUM_MODE: tl.constexpr,
):  # fmt: skip
    _, b, h, kv, first = _program(T, H, GROUP, BLOCK_Q)
    rows = tl.arange(0, BLOCK_Q)
    cols = tl.arange(0, D)
    keys = tl.arange(0, BLOCK_T)
    q_rows = q_ptr + b * stride_qb + h * stride_qh + first * stride_qt
    real_rows = (first + rows < T)[:, None]
    q = tl.load(q_rows + rows[:, None] * stride_qt + cols[None, :], mask=real_rows, other=0.0)
    k_tile = k_ptr + b * stride_kb + kv * stride_kh + keys[:, None] * stride_kt + cols[None, :]
    if SUM_MODE == 1:  # V padded by the wrapper to 2D columns, the second half ones
        cols2 = tl.arange(0, 2 * D)
        v_tile = v_ptr + b * stride_vb + kv * stride_vh + keys[:, None] * stride_vt + cols2[None, :]
        acc = tl.zeros([BLOCK_Q, 2 * D], tl.float32)
    else:
        v_tile = v_ptr + b * stride_vb + kv * stride_vh + keys[:, None] * stride_vt + cols[None, :]
        acc = tl.zeros([BLOCK_Q, D], tl.float32)
    ones = tl.full([BLOCK_T, 16], 1.0, v_ptr.dtype.element_ty)
    running_max = tl.full([BLOCK_Q], float("-inf"), tl.float32)
    running_sum = tl.zeros([BLOCK_Q, 16], tl.float32)
    row_sum = tl.zeros([BLOCK_Q], tl.float32)
    for t0 in range(0, S, BLOCK_T):
        k = tl.load(k_tile)
        v = tl.load(v_tile)
        scores = tl.dot(q, tl.trans(k))
        new_max = tl.maximum(running_max, tl.max(scores, axis=1) * SCALE_LOG2)
        safe_max = tl.where(new_max == float("-inf"), 0.0, new_max)
        rescale = tl.exp2(running_max - safe_max)
        x = scores * SCALE_LOG2 - safe_max[:, None]
        if POLY_EVERY > 0:
            if (t0 // BLOCK_T) % POLY_EVERY == POLY_EVERY - 1:
                weights = _exp2_poly(x)
            else:
                weights = _weights(x, EXP_MODE, PACKED_EXP)
        else:
            weights = _weights(x, EXP_MODE, PACKED_EXP)
        if SUM_MODE == 0:
            running_sum = running_sum * rescale[:, None] + tl.dot(weights, ones)
        elif SUM_MODE == 2:
            row_sum = row_sum * rescale + tl.sum(weights.to(tl.float32), axis=1)
        acc = acc * rescale[:, None] + tl.dot(weights, v)
        running_max = new_max
        k_tile += BLOCK_T * stride_kt
        v_tile += BLOCK_T * stride_vt

    o_rows = out_ptr + b * stride_ob + h * stride_oh + first * stride_ot
    if SUM_MODE == 1:
        out = acc.reshape(BLOCK_Q, 2, D).permute(0, 2, 1)
        values, sums = tl.split(out)
        out = values / sums
    else:
        total = tl.max(running_sum, axis=1) if SUM_MODE == 0 else row_sum
        out = acc / total[:, None]
    tl.store(
        o_rows + rows[:, None] * stride_ot + cols[None, :],
        out.to(out_ptr.dtype.element_ty),
        mask=real_rows,
    )


@triton.jit
def _bound_kernel(
    q_ptr, k_ptr, v_ptr, bound_ptr, out_ptr, T, S,
    stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
    stride_vb, stride_vh, stride_vt, stride_ob, stride_oh, stride_ot,
    H: tl.constexpr, GROUP: tl.constexpr, D: tl.constexpr, SCALE_LOG2: tl.constexpr,
    BLOCK_Q: tl.constexpr, SUBS: tl.constexpr, POLY_SUBS: tl.constexpr,
):  # fmt: skip
    bh, b, h, kv, first = _program(T, H, GROUP, BLOCK_Q)
    rows = tl.arange(0, BLOCK_Q)
    cols = tl.arange(0, D)
    keys = tl.arange(0, 32)
    q_rows = q_ptr + b * stride_qb + h * stride_qh + first * stride_qt
    real_rows = (first + rows < T)[:, None]
    q = tl.load(q_rows + rows[:, None] * stride_qt + cols[None, :], mask=real_rows, other=0.0)
    bound = tl.load(
        bound_ptr + bh.to(tl.int64) * T + first + rows, mask=first + rows < T, other=0.0
    )
    k_tile = k_ptr + b * stride_kb + kv * stride_kh + keys[:, None] * stride_kt + cols[None, :]
    v_tile = v_ptr + b * stride_vb + kv * stride_vh + keys[:, None] * stride_vt + cols[None, :]
    ones = tl.full([32, 16], 1.0, v_ptr.dtype.element_ty)
    running_sum = tl.zeros([BLOCK_Q, 16], tl.float32)
    acc = tl.zeros([BLOCK_Q, D], tl.float32)
    for _t0 in range(0, S, 32 * SUBS):
        for sub in tl.static_range(SUBS):
            k = tl.load(k_tile + sub * 32 * stride_kt)
            v = tl.load(v_tile + sub * 32 * stride_vt)
            x = tl.dot(q, tl.trans(k)) * SCALE_LOG2 - bound[:, None]
            if sub >= SUBS - POLY_SUBS:
                weights = _exp2_poly(x, v_ptr.dtype.element_ty)
            else:
                weights = tl.exp2(x).to(v_ptr.dtype.element_ty)
            running_sum = tl.dot(weights, ones, running_sum)
            acc = tl.dot(weights, v, acc)
        k_tile += 32 * SUBS * stride_kt
        v_tile += 32 * SUBS * stride_vt
    out = acc / tl.max(running_sum, axis=1)[:, None]
    o_rows = out_ptr + b * stride_ob + h * stride_oh + first * stride_ot
    tl.store(
        o_rows + rows[:, None] * stride_ot + cols[None, :],
        out.to(out_ptr.dtype.element_ty),
        mask=real_rows,
    )


def attention_bound(q, k, v, *, block_q, subs, poly_subs, warps, stages):
    """`_bound_kernel` on bf16 q, k, v [B, H, T, d] (every block shifted by its bound: only for
    inputs whose bounds are under the kernel's BOUND_LIMIT, as the benchmark's random ones)."""
    b, h, t, d = q.shape
    n_kv, s = k.shape[1:3]
    assert s % (32 * subs) == 0 and v.dtype == torch.bfloat16
    group = h // n_kv
    key_norm = torch.linalg.vector_norm(k, dim=-1, dtype=torch.float32).amax(dim=-1)
    q_norm = torch.linalg.vector_norm(q, dim=-1, dtype=torch.float32)
    bound = (q_norm * key_norm.repeat_interleave(group, dim=1)[..., None]).contiguous()
    bound *= LOG2E / math.sqrt(d)
    out = torch.empty(b, t, h * d, device=q.device, dtype=q.dtype)
    heads = out.view(b, t, h, d).transpose(1, 2)
    _bound_kernel[(triton.cdiv(t, block_q) * b * h,)](
        q, k, v, bound, heads, t, s,
        *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *heads.stride()[:3],
        H=h, GROUP=group, D=d, SCALE_LOG2=LOG2E / math.sqrt(d), BLOCK_Q=block_q, SUBS=subs,
        POLY_SUBS=poly_subs, num_warps=warps, num_stages=stages,
    )  # fmt: skip
    return heads


def prepare_v(v, sum_mode, exp_mode=0):
    """The values as the variant reads them."""
    if exp_mode == 4:
        return v
    if v.dtype != torch.float16:
        v = v.clamp(-BF16_IN_FP16_RANGE, BF16_IN_FP16_RANGE).to(torch.float16)
    if sum_mode == 1:
        v = torch.cat([v, torch.ones_like(v)], dim=-1)
    return v


def attention(
    q,
    k,
    v,
    *,
    block_q,
    block_t,
    warps,
    stages,
    exp_mode=0,
    poly_every=0,
    sum_mode=0,
    v_ready=False,
    maxnreg=None,
):
    b, h, t, d = q.shape
    n_kv, s = k.shape[1:3]
    assert s % block_t == 0
    if not v_ready:
        v = prepare_v(v, sum_mode, exp_mode)
    out = torch.empty(b, t, h * d, device=q.device, dtype=q.dtype)
    heads = out.view(b, t, h, d).transpose(1, 2)
    grid = (triton.cdiv(t, block_q) * b * h,)
    _kernel[grid](
        q,
        k,
        v,
        heads,
        t,
        s,
        *q.stride()[:3],
        *k.stride()[:3],
        *v.stride()[:3],
        *heads.stride()[:3],
        H=h,
        GROUP=h // n_kv,
        D=d,
        SCALE_LOG2=LOG2E / math.sqrt(d),
        BLOCK_Q=block_q,
        BLOCK_T=block_t,
        PACKED_EXP=PACKED_EXP,
        EXP_MODE=exp_mode,
        POLY_EVERY=poly_every,
        SUM_MODE=sum_mode,
        num_warps=warps,
        num_stages=stages,
        **({} if maxnreg is None else {"maxnreg": maxnreg}),
    )
    return heads
