"""`latent`'s two attention steps as Triton kernels (forward only).

Why: SDPA's FlashAttention tiles are 128 queries by 128 keys. `pack` has 32 queries (the latents)
and `unpack` 32 keys (the summaries), so most of every tile is padding, and the pair ran at a
third of its memory bound on an H100 (docs/experiments/gpu_roofline). Both steps are
memory-bound: what has to move is the token keys and values (pack) and the token queries and
outputs (unpack). These kernels read and write just that, once:

- pack rotates the keys (RoPE) as it loads them, so the rotated keys are never written out;
- both read q, k, v in the projection's [B, T, H*d] layout and unpack writes its output in the
  layout `wo` reads, so no head transposes are copied.

pack splits the tokens into chunks when batch x heads alone cannot fill the GPU (a batch of one
has 8 programs for 132 SMs); each chunk keeps the online softmax's running max, sum and weighted
values, and the chunks are merged in torch (flash-decoding). With one chunk the kernel writes
the summaries itself. On an H100 at the reference size (batch 256, 4k tokens) the pair took
3.96 ms against SDPA's 7.89, moving about 70 % of the card's copy bandwidth.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

# The softmax scale is a compile-time constant (one per head size): passed as a run-time float,
# torch.compile's launcher hands it over as fp64, which would turn the scores fp64.
LOG2E = 1.4426950408889634

# programs to aim for when choosing pack's chunks: two waves of an H100's 132 SMs
TARGET_PROGRAMS = 264
# pack's chunks are whole multiples of the largest token block either kernel is tuned with
CHUNK_ALIGN = 128


def _tiles(shapes: list[tuple[int, int, int]]) -> list[triton.Config]:
    """(tokens a program takes at a time, warps, pipeline stages) -> autotuning configs."""
    return [triton.Config({"BLOCK_T": t}, num_warps=w, num_stages=s) for t, w, s in shapes]


# Tuned per head size, latent count and power-of-two band of the sizes (`*_scale`), not per
# exact size: a new recording length would otherwise stall a request on a fresh tuning. A band
# the service's warm-up does not reach is tuned on the first request that meets it.
@triton.autotune(
    configs=_tiles([(64, 4, 2), (128, 4, 2), (128, 8, 2), (64, 4, 3), (128, 4, 3)]),
    key=["M", "D", "token_scale", "program_scale"],
)
@triton.jit
def _pack_kernel(
    lat_ptr, k_ptr, v_ptr, cos_ptr, sin_ptr, mask_ptr,
    max_ptr, sum_ptr, acc_ptr, out_ptr,
    T, chunk, token_scale, program_scale,
    stride_kb, stride_kt, stride_vb, stride_vt, stride_mask, stride_ob, stride_om,
    H: tl.constexpr, M: tl.constexpr, D: tl.constexpr, SCALE_LOG2: tl.constexpr,
    BLOCK_T: tl.constexpr, HAS_MASK: tl.constexpr, ONE_CHUNK: tl.constexpr,
):  # fmt: skip
    bh = tl.program_id(0)
    split = tl.program_id(1)
    n_splits = tl.num_programs(1)
    b = (bh // H).to(tl.int64)  # b * a batch stride passes 2^31 from about 2.8M tokens a batch
    h = bh % H
    HALF: tl.constexpr = D // 2
    rows = tl.arange(0, M)
    half = tl.arange(0, HALF)
    cols = tl.arange(0, D)

    lat = lat_ptr + h * M * D + rows[:, None] * D
    lat_lo = tl.load(lat + half[None, :])  # [M, d/2]
    lat_hi = tl.load(lat + HALF + half[None, :])  # [M, d/2]

    running_max = tl.full([M], float("-inf"), tl.float32)
    running_sum = tl.zeros([M], tl.float32)
    acc = tl.zeros([M, D], tl.float32)
    start = split * chunk
    end = tl.minimum(start + chunk, T)
    for t0 in range(start, end, BLOCK_T):
        tok = t0 + tl.arange(0, BLOCK_T)
        real = tok < end
        key = k_ptr + b * stride_kb + tok[:, None] * stride_kt + h * D
        k_lo = tl.load(key + half[None, :], mask=real[:, None], other=0.0).to(tl.float32)
        k_hi = tl.load(key + HALF + half[None, :], mask=real[:, None], other=0.0).to(tl.float32)
        angle = tok[:, None] * HALF + half[None, :]
        cos = tl.load(cos_ptr + angle, mask=real[:, None], other=0.0).to(tl.float32)
        sin = tl.load(sin_ptr + angle, mask=real[:, None], other=0.0).to(tl.float32)
        # half-split RoPE, as rfmodel.rope.Rope.rotate
        rot_lo = (k_lo * cos - k_hi * sin).to(lat_lo.dtype)  # [BLOCK_T, d/2]
        rot_hi = (k_lo * sin + k_hi * cos).to(lat_lo.dtype)
        scores = tl.dot(lat_lo, tl.trans(rot_lo)) + tl.dot(lat_hi, tl.trans(rot_hi))
        scores = scores * SCALE_LOG2  # [M, BLOCK_T], base-2 logits
        if HAS_MASK:
            real = real & (tl.load(mask_ptr + b * stride_mask + tok, mask=real, other=0) != 0)
        scores = tl.where(real[None, :], scores, float("-inf"))
        new_max = tl.maximum(running_max, tl.max(scores, axis=1))
        # a chunk whose keys are all padding keeps max -inf; exp2(-inf - 0) is 0, not NaN
        safe_max = tl.where(new_max == float("-inf"), 0.0, new_max)
        rescale = tl.exp2(running_max - safe_max)
        weights = tl.exp2(scores - safe_max[:, None])  # [M, BLOCK_T]
        running_sum = running_sum * rescale + tl.sum(weights, axis=1)
        value = v_ptr + b * stride_vb + tok[:, None] * stride_vt + h * D + cols[None, :]
        v = tl.load(value, mask=real[:, None], other=0.0)  # [BLOCK_T, d]
        acc = acc * rescale[:, None] + tl.dot(weights.to(v.dtype), v)
        running_max = new_max

    if ONE_CHUNK:  # the summaries themselves, in the [B, M, H*d] layout wk_summary reads
        out = acc / running_sum[:, None]
        dst = out_ptr + b * stride_ob + rows[:, None] * stride_om + h * D + cols[None, :]
        tl.store(dst, out.to(out_ptr.dtype.element_ty))
    else:  # this chunk's running max, sum and weighted values, merged in torch
        part = bh.to(tl.int64) * n_splits + split
        tl.store(max_ptr + part * M + rows, running_max)
        tl.store(sum_ptr + part * M + rows, running_sum)
        tl.store(acc_ptr + part * M * D + rows[:, None] * D + cols[None, :], acc)


@triton.autotune(
    configs=_tiles([(64, 4, 2), (128, 4, 2), (128, 8, 2), (256, 8, 2)]),
    key=["M", "D", "row_scale"],
)
@triton.jit
def _unpack_kernel(
    q_ptr, k_ptr, v_ptr, out_ptr,
    T, row_scale,
    stride_qb, stride_qt, stride_kb, stride_km, stride_vb, stride_vm, stride_ob, stride_ot,
    H: tl.constexpr, M: tl.constexpr, D: tl.constexpr, SCALE_LOG2: tl.constexpr,
    BLOCK_T: tl.constexpr,
):  # fmt: skip
    bh = tl.program_id(0)
    b = (bh // H).to(tl.int64)  # b * a batch stride passes 2^31 from about 2.8M tokens a batch
    h = bh % H
    tok = tl.program_id(1) * BLOCK_T + tl.arange(0, BLOCK_T)
    real = tok < T
    rows = tl.arange(0, M)
    cols = tl.arange(0, D)

    q = tl.load(
        q_ptr + b * stride_qb + tok[:, None] * stride_qt + h * D + cols[None, :],
        mask=real[:, None],
        other=0.0,
    )  # [BLOCK_T, d]
    k = tl.load(k_ptr + b * stride_kb + rows[:, None] * stride_km + h * D + cols[None, :])
    v = tl.load(v_ptr + b * stride_vb + rows[:, None] * stride_vm + h * D + cols[None, :])
    scores = tl.dot(q, tl.trans(k)) * SCALE_LOG2  # [BLOCK_T, M]
    top = tl.max(scores, axis=1)
    weights = tl.exp2(scores - top[:, None])
    out = tl.dot(weights.to(v.dtype), v) / tl.sum(weights, axis=1)[:, None]  # [BLOCK_T, d]
    tl.store(
        out_ptr + b * stride_ob + tok[:, None] * stride_ot + h * D + cols[None, :],
        out.to(out_ptr.dtype.element_ty),
        mask=real[:, None],
    )


def handles(latents: Tensor) -> bool:
    """Whether these kernels take this latent backend's shapes on this GPU: power-of-two head
    size (at least 32, so each rotated half fills a tensor-core step) and latent count (at least
    16), and bf16 tensor cores (compute capability 8.0 on)."""
    _, m, d = latents.shape
    shapes = all(n & (n - 1) == 0 for n in (m, d)) and d >= 32 and m >= 16
    # get_device_properties, not get_device_capability: torch.compile folds the first into a
    # constant and would stop its graph at the second
    return shapes and torch.cuda.get_device_properties(latents.device).major >= 8


def _token_rows(x: Tensor) -> Tensor:
    """[B, H, T, d] head view -> the [B, T, H*d] buffer behind it (the projection's layout)."""
    d = x.shape[-1]
    rows = x.transpose(1, 2)  # [B, T, H, d]
    if rows.stride(3) != 1 or rows.stride(2) != d:
        rows = rows.contiguous()
    return rows.flatten(2)  # a view: the heads sit side by side in each token's row


def pack(
    latents: Tensor, k: Tensor, v: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None
) -> Tensor:
    """The latents [H, M, d] attend over the RoPE-rotated keys k and values v [B, H, T, d] (real
    tokens only: mask [B, T] bool or None) -> the summaries [B, M, H*d]. cos, sin: [T, d/2]."""
    b, h, t, d = k.shape
    m = latents.shape[1]
    keys, values = _token_rows(k), _token_rows(v)
    blocks = triton.cdiv(t, CHUNK_ALIGN)
    n_splits = max(1, min(blocks, TARGET_PROGRAMS // (b * h)))
    chunk = triton.cdiv(blocks, n_splits) * CHUNK_ALIGN
    n_splits = triton.cdiv(t, chunk)
    out = torch.empty(b, m, h * d, device=k.device, dtype=k.dtype)
    partial = [torch.empty(0, device=k.device)] * 3  # unused with one chunk
    if n_splits > 1:
        f32 = dict(device=k.device, dtype=torch.float32)
        partial = [torch.empty(b * h, n_splits, m, *extra, **f32) for extra in ((), (), (d,))]
    has_mask = mask is not None
    if has_mask:
        mask = mask.contiguous()  # the kernel steps through a row's tokens one element apart
    _pack_kernel[(b * h, n_splits)](
        latents.contiguous(), keys, values, cos.contiguous(), sin.contiguous(),
        mask if has_mask else keys,  # never read without HAS_MASK
        *partial, out,
        t, chunk, t.bit_length(), (b * h * n_splits).bit_length(),
        keys.stride(0), keys.stride(1), values.stride(0), values.stride(1),
        mask.stride(0) if has_mask else 0, out.stride(0), out.stride(1),
        H=h, M=m, D=d, SCALE_LOG2=LOG2E / math.sqrt(d), HAS_MASK=has_mask,
        ONE_CHUNK=n_splits == 1,
    )  # fmt: skip
    if n_splits == 1:
        return out
    part_max, part_sum, part_acc = partial
    top = part_max.amax(dim=1, keepdim=True)  # [B*H, 1, M]; finite: a row has a real token
    share = torch.exp2(part_max - top)  # [B*H, S, M]
    total = (share * part_sum).sum(dim=1)  # [B*H, M]
    summaries = (share[..., None] * part_acc).sum(dim=1) / total[..., None]  # [B*H, M, d]
    return summaries.view(b, h, m, d).transpose(1, 2).reshape(b, m, h * d).to(k.dtype)


def unpack(q: Tensor, k_sum: Tensor, v_sum: Tensor) -> Tensor:
    """Each token's query q [B, H, T, d] attends over the summaries' keys and values [B, H, M, d]
    -> [B, H, T, d], a head view of a [B, T, H*d] buffer (so merging the heads copies nothing)."""
    b, h, t, d = q.shape
    m = k_sum.shape[2]
    queries, keys, values = _token_rows(q), _token_rows(k_sum), _token_rows(v_sum)
    out = torch.empty(b, t, h * d, device=q.device, dtype=q.dtype)

    # heads fastest: a token block's heads run side by side and share its rows' cache lines
    def grid(meta):
        return (b * h, triton.cdiv(t, meta["BLOCK_T"]))

    _unpack_kernel[grid](
        queries, keys, values, out,
        t, (b * t).bit_length(),
        queries.stride(0), queries.stride(1), keys.stride(0), keys.stride(1),
        values.stride(0), values.stride(1), out.stride(0), out.stride(1),
        H=h, M=m, D=d, SCALE_LOG2=LOG2E / math.sqrt(d),
    )  # fmt: skip
    return out.view(b, t, h, d).transpose(1, 2)


# unpack with `wo`, the block's residual add and the MLP's RMSNorm folded in
#
# Unpack's output for a head is its softmax weights times the summaries' values, and `wo` is
# linear, so wo(unpack) = sum over heads of weights_h @ (v_h @ Wo_h^T): `wo` moves onto the 32
# summary rows a head (VW, computed in torch) instead of every token. The heads' sum is then the
# attention branch itself, a whole row per token in one program, so the residual add and the
# next RMSNorm follow in the same kernel. Per layer that drops `wo`'s matmul and the writes and
# reads of unpack's output and of the branch (docs/experiments/gpu_roofline, session 19).
#
# A first cut looped over the heads one at a time: [64, 32] x [32, 256] dots, their reduction
# dimension a single tensor-core step, at a third of the memory bound. Here GROUP heads share
# each dot: their keys laid out block-diagonally ([GROUP*M, GROUP*d], zero where a summary row
# meets another head's query columns), so a group's scores are one dot and its weights times
# its VW rows another, [BLOCK_T, GROUP*M] x [GROUP*M, DIM]. The softmax stays per head.


def _wo_norm_configs() -> list[triton.Config]:
    """(tokens a program takes, heads a dot takes, warps, pipeline stages) -> configs.

    Registers bound this kernel: the [BLOCK_T, DIM] fp32 accumulator alone is 64 a thread at
    64 x 256 with 8 warps, and ptxas (sm_90, reference size) puts 64-token configs at 88-246 a
    thread, so the list keeps those that fit two programs on an SM (64 tokens, 1 head, 4 or 8
    warps), those with 16 warps, and a few that run one program an SM with its loads pipelined.
    Left out for spilling: 4 heads with 16 warps, 2 heads with 4 warps. Shared memory is a
    stage's q, block-diagonal keys and VW tiles: 26-224 KiB, within sm_80's and sm_90's limits
    (tests/rfmodel/test_kernels_compile.py)."""
    shapes = [
        (64, 1, 4, 2), (64, 1, 8, 2), (64, 2, 8, 1), (64, 2, 8, 2), (64, 2, 16, 1),
        (64, 2, 16, 2), (64, 4, 8, 2), (128, 1, 8, 2), (128, 2, 8, 2),
    ]  # fmt: skip
    return [
        triton.Config({"BLOCK_T": t, "GROUP": g}, num_warps=w, num_stages=s)
        for t, g, w, s in shapes
    ]


# Every config's head group must divide the head count, so handles_wo_norm asks for a multiple
# of the largest. Not pruned by head count in the autotuner: torch 2.11's torch.compile then
# fails on a model whose layers call the kernel twice ("ListVariable ... is already tracked for
# mutation": dynamo wraps the config list for each call; H100, session 24).
WO_NORM_HEADS = max(c.kwargs["GROUP"] for c in _wo_norm_configs())


@triton.autotune(configs=_wo_norm_configs(), key=["H", "M", "D", "DIM", "row_scale"])
@triton.jit
def _unpack_wo_norm_kernel(
    q_ptr, k_ptr, vw_ptr, x_ptr, g_ptr, x_out_ptr, normed_ptr,
    T, row_scale,
    stride_qb, stride_qt, stride_kb, stride_km, stride_wb, stride_wh, stride_wm,
    stride_ob, stride_ot,
    H: tl.constexpr, M: tl.constexpr, D: tl.constexpr, DIM: tl.constexpr,
    SCALE_LOG2: tl.constexpr, EPS: tl.constexpr, BLOCK_T: tl.constexpr, GROUP: tl.constexpr,
):  # fmt: skip
    # one program per token block, a batch row's blocks side by side: they share its VW in L2
    n_blocks = tl.cdiv(T, BLOCK_T)
    pid = tl.program_id(0)
    b = (pid // n_blocks).to(tl.int64)  # b * a batch stride passes 2^31 at large batches
    tok = (pid % n_blocks) * BLOCK_T + tl.arange(0, BLOCK_T)
    real = tok < T
    GD: tl.constexpr = GROUP * D
    GM: tl.constexpr = GROUP * M
    q_cols = tl.arange(0, GD)  # a group's query columns
    rows = tl.arange(0, GM)  # a group's summary rows: head rows // M, latent rows % M
    cols = tl.arange(0, DIM)
    same_head = (rows[:, None] // M) == (q_cols[None, :] // D)  # [GM, GD] the block diagonal
    # 64-bit only where it has to be: the batch's base (scalar) and VW's heads, B*M*DIM apart
    queries = q_ptr + b * stride_qb + tok[:, None] * stride_qt + q_cols[None, :]
    keys = k_ptr + b * stride_kb + (rows % M)[:, None] * stride_km + q_cols[None, :]
    head_stride = stride_wh.to(tl.int64)
    head_rows = (rows // M) * head_stride + (rows % M) * stride_wm
    values = vw_ptr + b * stride_wb + head_rows[:, None] + cols[None, :]

    acc = tl.zeros([BLOCK_T, DIM], tl.float32)
    for group in range(H // GROUP):
        q = tl.load(queries + group * GD, mask=real[:, None], other=0.0)  # [BLOCK_T, GD]
        k = tl.load(keys + group * GD, mask=same_head, other=0.0)  # [GM, GD]
        scores = tl.dot(q, tl.trans(k)) * SCALE_LOG2  # [BLOCK_T, GM], base-2 logits
        # each head's own max and sum: a max shared across heads could underflow one to 0/0
        scores = tl.reshape(scores, [BLOCK_T, GROUP, M])
        weights = tl.exp2(scores - tl.max(scores, axis=2)[:, :, None])
        weights = weights * (1.0 / tl.sum(weights, axis=2))[:, :, None]
        weights = tl.reshape(weights, [BLOCK_T, GM])
        vw = tl.load(values + group * GROUP * head_stride)  # [GM, DIM]
        acc = tl.dot(weights.to(vw.dtype), vw, acc)  # the group's heads through wo

    # the residual after the loop, not as the accumulator's start: that held it through the
    # loop, about 36 registers a thread more (ptxas, sm_90)
    batch = b * stride_ob  # x, x_out and normed alike
    rows_out = tok[:, None] * stride_ot + cols[None, :]  # 32-bit: within a batch row
    x = tl.load(x_ptr + batch + rows_out, mask=real[:, None], other=0.0)
    new = (x.to(tl.float32) + acc).to(x_out_ptr.dtype.element_ty)  # [BLOCK_T, DIM]
    tl.store(x_out_ptr + batch + rows_out, new, mask=real[:, None])
    # normed from the rounded row, as the norm would read it back
    new = new.to(tl.float32)
    inv_rms = tl.rsqrt(tl.sum(new * new, axis=1) / DIM + EPS)
    gain = tl.load(g_ptr + cols).to(tl.float32)
    normed = new * inv_rms[:, None] * gain[None, :]
    normed = normed.to(normed_ptr.dtype.element_ty)
    tl.store(normed_ptr + batch + rows_out, normed, mask=real[:, None])


def handles_wo_norm(latents: Tensor, wo: Tensor) -> bool:
    """Whether unpack_wo_norm takes these shapes: `handles`, a power-of-two head count and
    model width (tl.arange), the width at most 512 (its fp32 row lives in registers), and a
    head count that every config's head group divides (WO_NORM_HEADS)."""
    h, _, _ = latents.shape
    dim = wo.shape[0]
    powers = all(n & (n - 1) == 0 for n in (h, dim))
    heads = h % WO_NORM_HEADS == 0
    return powers and heads and 32 <= dim <= 512 and handles(latents)


def unpack_wo_norm(
    q: Tensor,
    k_sum: Tensor,
    v_sum: Tensor,
    wo: Tensor,
    x: Tensor,
    norm_weight: Tensor,
    eps: float,
) -> tuple[Tensor, Tensor]:
    """x + wo(merged heads of unpack(q, k_sum, v_sum)), and that through an RMSNorm with weight
    norm_weight [D] -> both [B, T, D]. q [B, H, T, d], k_sum, v_sum [B, H, M, d], wo [D, H*d]
    (nn.Linear's weight), x [B, T, D]."""
    b, h, t, d = q.shape
    m = k_sum.shape[2]
    dim = wo.shape[0]
    queries, keys = _token_rows(q), _token_rows(k_sum)
    # VW: each head's summary values through its slice of wo, [H, B*M, d] @ [H, d, D]
    per_head = v_sum.transpose(0, 1).reshape(h, b * m, d)
    vw = torch.bmm(per_head, wo.reshape(dim, h, d).permute(1, 2, 0)).view(h, b, m, dim)
    x = x.contiguous()  # the kernel reads x with its outputs' strides
    x_out, normed = torch.empty_like(x), torch.empty_like(x)

    def grid(meta):
        return (b * triton.cdiv(t, meta["BLOCK_T"]),)

    _unpack_wo_norm_kernel[grid](
        queries, keys, vw, x, norm_weight.to(x.dtype).contiguous(), x_out, normed,
        t, (b * t).bit_length(),
        queries.stride(0), queries.stride(1), keys.stride(0), keys.stride(1),
        vw.stride(1), vw.stride(0), vw.stride(2),
        x.stride(0), x.stride(1),
        H=h, M=m, D=d, DIM=dim, SCALE_LOG2=LOG2E / math.sqrt(d), EPS=float(eps),
    )  # fmt: skip
    return x_out, normed
