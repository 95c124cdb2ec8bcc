"""Does the GPU fast path (rfmodel.kernels) change what the shipped models answer?

Each shipped model in bf16 on a GPU classifies the first N recordings per class of its card's
evaluation set twice, on the fast path and inside reference_math(), and the two are compared:
accuracy of each, and the share of recordings where the predicted class differs.

    python docs/experiments/gpu_roofline/agreement.py [--per-class 100]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from rfmodel.bundle import WEIGHTS_ROOT, load_bundle, shipped_models
from rfmodel.data import make_eval_set
from rfmodel.evaluate import EVAL_SEED, predict
from rfmodel.kernels import reference_math


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per-class", type=int, default=100)
    args = p.parse_args()
    device = torch.device("cuda")
    for name in shipped_models():
        bundle = load_bundle(WEIGHTS_ROOT / name, device=device)
        model = bundle.model.to(torch.bfloat16)
        card = bundle.metrics["eval_set"]
        iq, labels, _ = make_eval_set(EVAL_SEED, args.per_class, 4096, card["snr_values"])
        fast = predict(model, bundle.feature_config, iq, device)
        with reference_math():
            reference = predict(model, bundle.feature_config, iq, device)
        row = {
            "model": name,
            "recordings": len(labels),
            "accuracy_fast": float(np.mean(fast == labels)),
            "accuracy_reference": float(np.mean(reference == labels)),
            "answers_differ": int(np.sum(fast != reference)),
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
