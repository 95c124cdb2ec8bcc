"""Time variants of the flash kernel (`fa_var.py`) at the reference size's attention: B
recordings x 8 heads x 4,096 tokens, head size 32, bf16 q/k/v laid out as the model's fused
projection writes them. Each row is the kernel alone (the values already in the variant's dtype),
one median of `--reps` CUDA-event timings after 3 warm-up calls, its attention TFLOP/s
(4 B H T^2 d), and its largest error against fp32 softmax attention on two recordings.

    python docs/experiments/gpu_roofline/kernel_variants/bench.py \
        --configs "128,64,4,3;64,128,4,3" --variants "0,0,0;1,0,0;2,0,0" \
        --bound-variants "128,2,0,4,3;128,4,1,4,2"

A config is BLOCK_Q,BLOCK_T,warps,stages[,maxnreg]; a variant is exp_mode,poly_every,sum_mode
(`fa_var.attention`); a bound variant is BLOCK_Q,SUBS,POLY_SUBS,warps,stages
(`fa_var.attention_bound`, the bound shift's loop with a share of polynomial exponentials). One
JSON line per row on stdout, with the GPU's bf16 matmul peak, SDPA's FlashAttention-2 and the
committed kernel (autotuned; in session 26 with its fp16 conversion of V) first.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # probe.py
sys.path.insert(0, str(Path(__file__).resolve().parents[4]))  # the repository
import fa_var
from probe import median_ms

from rfmodel.kernels import flash_attention

HEADS, TOKENS, HEAD_SIZE = 8, 4096, 32


def timed(fn, reps: int) -> float:
    """probe.py's median, after two more warm-up calls (Triton's first calls compile)."""
    fn()
    fn()
    return median_ms(fn, reps)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--configs", default="128,64,4,3")
    p.add_argument("--variants", default="0,0,0;1,0,0")
    p.add_argument("--bound-variants", default="")
    args = p.parse_args()
    flop = 4 * args.batch * HEADS * TOKENS**2 * HEAD_SIZE
    torch.manual_seed(0)
    fused = torch.randn(
        args.batch, TOKENS, 3, HEADS, HEAD_SIZE, device="cuda", dtype=torch.bfloat16
    )
    q, k, v = (fused[:, :, i].transpose(1, 2) for i in range(3))  # [B, H, T, d] views
    qs, ks, vs = (x[:2].float() for x in (q, k, v))
    reference = torch.softmax(qs @ ks.transpose(-1, -2) / math.sqrt(HEAD_SIZE), -1) @ vs

    def row(name: str, fn, check: bool = True) -> None:
        try:
            ms = timed(fn, args.reps)
            err = (fn()[:2].float() - reference).abs().max().item() if check else None
            line = dict(name=name, ms=round(ms, 3), tflops=round(flop / ms / 1e9, 1), err=err)
        except Exception as e:  # a config that does not compile or fit is a row, not the end
            line = dict(name=name, error=repr(e)[:300])
        print(json.dumps(line), flush=True)

    print(json.dumps(dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, B=args.batch)))
    square = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    ms = timed(lambda: square @ square, args.reps)
    print(json.dumps(dict(name="matmul8192", tflops=round(2 * 8192**3 / ms / 1e9, 1))))
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        row("sdpa-flash2", lambda: F.scaled_dot_product_attention(q, k, v))
    row("committed(autotuned)", lambda: flash_attention.attention(q, k, v, None))
    best = str(flash_attention._attention_kernel.best_config)
    print(json.dumps(dict(name="committed-best-config", config=best)))
    # the values as each variant reads them: (ones appended, bf16 weights) -> tensor
    values = {(False, False): fa_var.prepare_v(v, 0), (True, False): fa_var.prepare_v(v, 1)}
    values[(False, True)] = v
    row("prepare_v fp16", lambda: fa_var.prepare_v(v, 0), check=False)
    row("prepare_v fp16+ones", lambda: fa_var.prepare_v(v, 1), check=False)
    configs = [tuple(map(int, c.split(","))) for c in args.configs.split(";")]
    variants = [tuple(map(int, c.split(","))) for c in filter(None, args.variants.split(";"))]
    for config, (exp_mode, poly_every, sum_mode) in itertools.product(configs, variants):
        block_q, block_t, warps, stages, *maxnreg = config
        values_in = values[(sum_mode == 1, exp_mode == 4)]
        kwargs = dict(
            block_q=block_q, block_t=block_t, warps=warps, stages=stages, exp_mode=exp_mode,
            poly_every=poly_every, sum_mode=sum_mode, v_ready=True,
            maxnreg=maxnreg[0] if maxnreg else None,
        )  # fmt: skip
        row(
            f"q{block_q} t{block_t} w{warps} s{stages} r{maxnreg[0] if maxnreg else None} "
            f"exp{exp_mode} poly{poly_every} sum{sum_mode}",
            lambda kwargs=kwargs, values_in=values_in: fa_var.attention(q, k, values_in, **kwargs),
            check=exp_mode != 2,
        )

    for variant in filter(None, args.bound_variants.split(";")):
        block_q, subs, poly_subs, warps, stages = map(int, variant.split(","))
        kwargs = dict(block_q=block_q, subs=subs, poly_subs=poly_subs, warps=warps, stages=stages)
        row(
            f"bound q{block_q} subs{subs} poly{poly_subs} w{warps} s{stages}",
            lambda kwargs=kwargs: fa_var.attention_bound(q, k, v, **kwargs),
        )


if __name__ == "__main__":
    main()
