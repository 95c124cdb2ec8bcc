"""What the attention weights' precision costs, emulated in float64 on the CPU (no GPU needed).

Softmax attention over bf16 q, k, v (head size 32, 1,000 keys, queries scaled so the weights are
peaked), computed three ways against the exact float64 answer:

- `sdpa`: the exponent in fp32, the weights rounded to bf16 (FlashAttention-2 in bf16, and the
  flash kernel since session 27);
- `f16x2`: the exponent and the weights in fp16, the values converted to fp16 (the flash
  kernel until session 26, `ex2.approx.f16x2`; in session 26 the exponent was fp32 and only the
  weights fp16, between this and `sdpa`);
- `bf16x2`: the exponent and the weights in bf16, the values as they are (the variant with
  `ex2.approx.ftz.bf16x2`).

Each way normalises by the sum of its own rounded weights, as the kernels do. The special
function's own approximation error is not modelled: only the roundings.

    python docs/experiments/gpu_roofline/weight_precision.py
"""

from __future__ import annotations

import torch

LOG2E = 1.4426950408889634
# name -> (the exponent's type, the weights' type, the values' type)
WAYS = {
    "sdpa": (torch.float32, torch.bfloat16, torch.bfloat16),
    "f16x2": (torch.float16, torch.float16, torch.float16),
    "bf16x2": (torch.bfloat16, torch.bfloat16, torch.bfloat16),
}


def largest_errors(peak: float, heads: int = 8, tokens: int = 1000, d: int = 32) -> dict:
    q, k, v = (torch.randn(2, heads, tokens, d).bfloat16().double() for _ in range(3))
    scores = (peak * q) @ k.transpose(-1, -2) / d**0.5
    want = torch.softmax(scores, dim=-1) @ v
    exponent = (scores - scores.amax(dim=-1, keepdim=True)) * LOG2E  # <= 0
    errors = {}
    for name, (exp_type, weight_type, value_type) in WAYS.items():
        weights = torch.exp2(exponent.to(exp_type).double()).to(weight_type).double()
        got = weights @ v.to(value_type).double() / weights.sum(dim=-1, keepdim=True)
        errors[name] = (got - want).abs().max().item()
    return errors


def main() -> None:
    torch.manual_seed(0)
    print("| queries x | " + " | ".join(WAYS) + " |")
    print("| ---: |" + " ---: |" * len(WAYS))
    for peak in (1.0, 4.0, 8.0):
        errors = largest_errors(peak)
        print(f"| {peak:g} | " + " | ".join(f"{errors[n]:.1e}" for n in WAYS) + " |")


if __name__ == "__main__":
    main()
