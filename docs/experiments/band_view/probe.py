"""Experiment: what the band-limited view of the recording (preprocessing.band) adds, read by new
heads over a frozen model.

The model's pooled transformer output and its recording features (the plain view, and the band
view computed beside it) are taken for 42,000 training recordings (another seed domain of
make_eval_set, 3,000 per class, in-band SNR -10..30 dB in steps of 2.5) and for the held-out
set of `rfcls evaluate`; heads fitted on the first are scored on the second:

    HEADS: linear layers or MLPs with hidden layers of 256 (GELU), with or without dropout 0.2
    and label smoothing 0.05, alone or added to the frozen model's own logits, over inputs
    standardised per value or (the recording's views) layer-normed per view; 40 epochs each

The model that made the shipped band-view weights' starting point (commit 22be477):

    git worktree add /tmp/prev 22be477
    python docs/experiments/band_view/probe.py /tmp/prev/rfmodel/weights/mha-rmsnorm

About 20 minutes on 2 vCPUs.
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from preprocessing.features import compute_features
from preprocessing.recording import recording_features
from rfmodel.bundle import load_bundle
from rfmodel.data import make_eval_set
from rfmodel.evaluate import EVAL_SEED

TRAIN_SEED, TRAIN_PER_CLASS = 777, 3000
EPOCHS, BATCH = 40, 512


@torch.no_grad()
def embeddings(bundle, iq: np.ndarray) -> dict[str, torch.Tensor]:
    """Pooled output h, the model's logits, the plain and the band-limited recording views."""
    cfg = dataclasses.replace(bundle.feature_config, recording_band_limit=True)
    pooled = {}
    hook = bundle.model.head.register_forward_hook(lambda m, i, o: pooled.update(h=i[0]))
    parts: dict[str, list[torch.Tensor]] = {"h": [], "logits": [], "plain": [], "band": []}
    for start in range(0, len(iq), 256):
        x = torch.from_numpy(iq[start : start + 256])
        plain, band = recording_features(x, cfg).chunk(2, dim=-1)
        parts["logits"].append(bundle.model(compute_features(x, cfg), recording=plain))
        parts["h"].append(pooled["h"])
        parts["plain"].append(plain)
        parts["band"].append(band)
    hook.remove()
    return {name: torch.cat(values) for name, values in parts.items()}


@dataclasses.dataclass(frozen=True)
class Head:
    """What is fitted: over the named inputs, `layers` hidden layers of 256 (0: linear) with
    `dropout`, label smoothing `smoothing`, added to the frozen model's logits or alone. The
    inputs are standardised per value over the training set; with `layer_normed` the recording's
    views are instead each layer-normed over their own values (recording_norm "layer", as the
    classifier did before)."""

    inputs: tuple[str, ...]
    layers: int
    dropout: float = 0.0
    smoothing: float = 0.0
    on_logits: bool = True
    layer_normed: bool = False

    def __str__(self) -> str:
        kind = f"{self.layers}-layer MLP" if self.layers else "linear"
        extra = f", dropout {self.dropout:g}" if self.dropout else ""
        extra += f", smoothing {self.smoothing:g}" if self.smoothing else ""
        norm = "layer-normed" if self.layer_normed else "standardised"
        base = "the model's logits + " if self.on_logits else ""
        return f"{base}{kind}{extra} over {norm} {'+'.join(self.inputs)}"


REGULARISED = dict(dropout=0.2, smoothing=0.05)
HEADS = (
    Head(("h", "plain"), 2, **REGULARISED, on_logits=False),
    Head(("h", "plain", "band"), 2, **REGULARISED, on_logits=False),
    Head(("h", "plain", "band"), 0),
    Head(("plain", "band"), 1, layer_normed=True),  # the shape of run 6, as it shipped
    Head(("plain", "band"), 1),
    Head(("plain", "band"), 1, dropout=0.2),
    Head(("plain", "band"), 2),
    Head(("plain", "band"), 2, dropout=0.2),  # the shape of run 7
    Head(("plain", "band"), 3, dropout=0.2),
    Head(("h", "plain", "band"), 2, dropout=0.2),
    Head(("plain", "band"), 2, **REGULARISED),
    Head(("plain", "band"), 2, **REGULARISED, on_logits=False),  # no transformer
)


def fit_and_score(train, test, head: Head) -> np.ndarray:
    """Predicted labels of the test set from a head fitted on the train set."""
    torch.manual_seed(0)

    def inputs(part):
        views = [
            F.layer_norm(part[n], part[n].shape[-1:])
            if head.layer_normed and n in ("plain", "band")
            else part[n]
            for n in head.inputs
        ]
        return torch.cat(views, -1)

    xt, xe = inputs(train), inputs(test)
    if not head.layer_normed:
        mean, std = xt.mean(0), xt.std(0) + 1e-6
        xt, xe = (xt - mean) / std, (xe - mean) / std
    width, classes = xt.shape[1], int(train["labels"].max()) + 1
    layers: list[torch.nn.Module] = []
    for _ in range(head.layers):
        layers += [torch.nn.Linear(width, 256), torch.nn.GELU(), torch.nn.Dropout(head.dropout)]
        width = 256
    net = torch.nn.Sequential(*layers, torch.nn.Linear(width, classes))
    base_t = train["logits"] if head.on_logits else torch.zeros(len(xt), classes)
    base_e = test["logits"] if head.on_logits else torch.zeros(len(xe), classes)
    steps = EPOCHS * (len(xt) // BATCH + 1)
    opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps)
    for _ in range(EPOCHS):
        net.train()
        for idx in torch.randperm(len(xt)).split(BATCH):
            logits = base_t[idx] + net(xt[idx])
            loss = F.cross_entropy(logits, train["labels"][idx], label_smoothing=head.smoothing)
            opt.zero_grad()
            loss.backward()
            opt.step()
            schedule.step()
    net.eval()
    with torch.no_grad():
        return (base_e + net(xe)).argmax(-1).numpy()


def summary(predicted: np.ndarray, labels: np.ndarray, snr: np.ndarray) -> str:
    ok = predicted == labels
    return f"{ok.mean():.3f} / {ok[snr >= 10].mean():.3f} / {ok[snr == 0].mean():.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir")
    args = parser.parse_args()
    torch.manual_seed(0)
    bundle = load_bundle(args.model_dir)
    train_set = make_eval_set(TRAIN_SEED, TRAIN_PER_CLASS, snr_values=np.arange(-10, 31, 2.5))
    test_set = make_eval_set(EVAL_SEED, 400)
    train = {**embeddings(bundle, train_set.iq), "labels": torch.from_numpy(train_set.labels)}
    test = embeddings(bundle, test_set.iq)
    print("overall / SNR >= 10 dB / 0 dB on the held-out set")
    own = test["logits"].argmax(-1).numpy()
    print(f"the frozen model itself: {summary(own, test_set.labels, test_set.snr)}")
    for head in HEADS:
        print(f"{head}: {summary(fit_and_score(train, test, head), test_set.labels, test_set.snr)}")


if __name__ == "__main__":
    main()
