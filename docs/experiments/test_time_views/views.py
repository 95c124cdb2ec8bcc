"""Test-time views: does averaging the model's log-probabilities over statistically equivalent
views of a recording (its conjugate, its time reversal) gain accuracy? And over the five RMSNorm
backends' models (--ensemble)? Held-out seed; argument: recordings per class (default 100)."""

import argparse
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
BACKENDS = ("mha", "gqa", "latent", "mla", "latte")


def log_probabilities(model_dir: str, iq: np.ndarray, views: dict) -> dict[str, np.ndarray]:
    bundle = load_bundle(model_dir, device=torch.device("cpu"))
    logp = {}
    started = time.time()
    with torch.inference_mode():
        for name, view in views.items():
            out = []
            for i in range(0, len(iq), 200):
                x = torch.from_numpy(np.ascontiguousarray(iq[i : i + 200]))
                x = view(x).resolve_conj().contiguous()
                logits = iq_logits(bundle.model, x, bundle.feature_config)
                out.append(torch.log_softmax(logits, -1))
            logp[name] = torch.cat(out).numpy()
            print(model_dir, name, f"{time.time() - started:.0f}s", flush=True)
    return logp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("n", type=int, nargs="?", default=100)
    parser.add_argument("--ensemble", action="store_true", help="the backends, view x only")
    args = parser.parse_args()
    torch.set_num_threads(1)
    iq, labels, snr = make_eval_set(2000029, args.n, 4096)
    high, zero = np.isfinite(snr) & (snr >= 10), snr == 0

    def report(tag: str, lp: np.ndarray) -> None:
        hit = lp.argmax(-1) == labels
        print(
            f"{tag:12s} overall {hit.mean():.4f}  >=10dB {hit[high].mean():.4f}"
            f"  0dB {hit[zero].mean():.4f}"
        )

    if args.ensemble:
        models = {b: f"rfmodel/weights/{b}-rmsnorm" for b in BACKENDS}
        logp = {b: log_probabilities(m, iq, {"x": VIEWS["x"]})["x"] for b, m in models.items()}
        for backend, lp in logp.items():
            report(backend, lp)
        report("all five", sum(logp.values()))
        wrong = np.stack([lp.argmax(-1) != labels for lp in logp.values()])
        print(
            f"at >=10dB: {int(wrong[:, high].all(0).sum())} recordings every model gets wrong, "
            f"{int(wrong[:, high].any(0).sum())} some model does"
        )
        return
    logp = log_probabilities("rfmodel/weights/mha-rmsnorm", iq, VIEWS)
    for name in VIEWS:
        report(name, logp[name])
    report("x+conj", logp["x"] + logp["conj"])
    report("x+rev", logp["x"] + logp["rev"])
    report("all4", sum(logp.values()))


if __name__ == "__main__":
    main()
