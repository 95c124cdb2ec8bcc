"""Test-time views: does averaging the model's log-probabilities over statistically equivalent
views of a recording (its conjugate, its time reversal) gain accuracy? mha-rmsnorm, held-out
seed; argument: recordings per class (default 100)."""

import sys
import time

import numpy as np
import torch

from rfmodel.bundle import load_bundle
from rfmodel.data import make_eval_set
from rfmodel.iq_logits import iq_logits

VIEWS = {
    "x": lambda x: x,
    "conj": lambda x: x.conj(),
    "rev": lambda x: x.flip(-1),
    "conjrev": lambda x: x.conj().flip(-1),
}


def main() -> None:
    torch.set_num_threads(1)
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    bundle = load_bundle("rfmodel/weights/mha-rmsnorm", device=torch.device("cpu"))
    iq, labels, snr = make_eval_set(2000029, n, 4096)
    logp = {}
    started = time.time()
    with torch.inference_mode():
        for name, view in VIEWS.items():
            out = []
            for i in range(0, len(iq), 200):
                x = torch.from_numpy(np.ascontiguousarray(iq[i : i + 200]))
                x = view(x).resolve_conj().contiguous()
                logits = iq_logits(bundle.model, x, bundle.feature_config)
                out.append(torch.log_softmax(logits, -1))
            logp[name] = torch.cat(out).numpy()
            print(name, f"{time.time() - started:.0f}s", flush=True)
    high, zero = np.isfinite(snr) & (snr >= 10), snr == 0

    def report(tag: str, lp: np.ndarray) -> None:
        hit = lp.argmax(-1) == labels
        print(
            f"{tag:12s} overall {hit.mean():.4f}  >=10dB {hit[high].mean():.4f}"
            f"  0dB {hit[zero].mean():.4f}"
        )

    for name in VIEWS:
        report(name, logp[name])
    report("x+conj", logp["x"] + logp["conj"])
    report("x+rev", logp["x"] + logp["rev"])
    report("all4", sum(logp.values()))


if __name__ == "__main__":
    main()
