"""How often a trained model's attention takes the flash kernel's bound shift: for each shipped
mha and gqa model, each (recording, head, layer)'s largest Cauchy-Schwarz bound on its scores,
|q| max|k| / sqrt(d) in log2 units (no query block of the recording has a larger one), over
held-out recordings, against rfmodel.kernels.flash_attention.BOUND_LIMIT. CPU, float32.

    python docs/experiments/gpu_roofline/trained_bounds.py [--per-class 8] [--samples 4096]

A recording's largest bound is an upper bound on each of its query blocks': with more frames than
one block holds (32,768 samples: 255 frames), a block may take the shift where this counts the
recording as over the limit.
"""

from __future__ import annotations

import argparse

import torch

from rfmodel.attention.gqa import GroupedQueryAttention
from rfmodel.attention.mha import MultiHeadAttention
from rfmodel.bundle import load_bundle, shipped_model_dir
from rfmodel.data.stream import make_eval_set
from rfmodel.evaluate import probabilities
from rfmodel.kernels.flash_attention import BOUND_LIMIT
from rfmodel.kernels.latent_attention import LOG2E

EVAL_SEED = 2000029  # the held-out set's (docs/model-card.md)


def record_bounds(cls: type, into: list[torch.Tensor]) -> None:
    """Wrap cls.attn to append each call's largest bound per (recording, head) to `into`."""
    attn = cls.attn

    def spy(self, q, k, v, mask, rope):
        q_rot, k_rot = rope.rotate(q).double(), rope.rotate(k).double()
        group = q.shape[1] // k.shape[1]
        key_norm = k_rot.norm(dim=-1).amax(dim=-1).repeat_interleave(group, dim=1)  # [B, H]
        bound = q_rot.norm(dim=-1).amax(dim=-1) * key_norm / q.shape[-1] ** 0.5
        into.append(bound.flatten() * LOG2E)
        return attn(self, q, k, v, mask, rope)

    cls.attn = spy


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per-class", type=int, default=8)
    p.add_argument("--samples", type=int, default=4096, help="samples a recording")
    args = p.parse_args()
    bounds: list[torch.Tensor] = []
    for cls in (MultiHeadAttention, GroupedQueryAttention):
        record_bounds(cls, bounds)
    recordings = make_eval_set(seed=EVAL_SEED, n_per_class=args.per_class, n_samples=args.samples)
    for backend in ("mha", "gqa"):
        bounds.clear()
        bundle = load_bundle(shipped_model_dir(backend))
        probabilities(bundle.model, bundle.feature_config, recordings.iq, torch.device("cpu"))
        every = torch.cat(bounds)
        print(
            f"{backend}: {len(every)} (recording, head, layer) triples, median "
            f"{every.median():.1f}, p99 {every.quantile(0.99):.1f}, max {every.max():.1f}; "
            f"under {BOUND_LIMIT:g}: {(every < BOUND_LIMIT).double().mean():.3f}"
        )


if __name__ == "__main__":
    main()
