"""Every shipped model reproduces its model card: a fixed slice of the held-out evaluation set,
scored through the service's own preprocessing, lands where the bundle's metrics.json (written by
`rfcls evaluate` on the full set) says it should. A wrong weight file, a feature change the weights
were not trained on, or a broken backend drops accuracy to near chance and fails here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rfmodel.bundle import WEIGHTS_ROOT, load_bundle, shipped_models
from rfmodel.data import CLASSES, make_eval_set
from rfmodel.evaluate import EVAL_SEED, SUMMARY_HIGH_SNR_DB, predict

SHIPPED = shipped_models()
# the first N examples of each class are the first N of the card's own evaluation set
PER_CLASS = 32
SIGMAS = 4  # binomial standard errors allowed between the slice and the full set


def test_the_default_model_is_shipped():
    assert "mha-rmsnorm" in SHIPPED, f"no default weights under {WEIGHTS_ROOT}"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_matches_its_card(name):
    torch.set_num_threads(1)
    bundle = load_bundle(WEIGHTS_ROOT / name, device="cpu")
    assert bundle.classes == tuple(CLASSES)
    assert bundle.metrics is not None, f"{name}: no metrics.json; run `rfcls evaluate` on it"
    card = bundle.metrics
    assert card["eval_set"]["seed"] == EVAL_SEED
    assert card["eval_set"]["n_samples"] == 4096

    iq, labels, snr = make_eval_set(EVAL_SEED, PER_CLASS, 4096, card["eval_set"]["snr_values"])
    predicted = predict(bundle.model, bundle.feature_config, iq, torch.device("cpu"))
    high = np.isfinite(snr) & (snr >= SUMMARY_HIGH_SNR_DB)
    measured = float((predicted[high] == labels[high]).mean())

    expected = card["summary"][f"accuracy_snr_ge_{SUMMARY_HIGH_SNR_DB:g}db"]
    sigma = math.sqrt(expected * (1 - expected) / high.sum())
    assert abs(measured - expected) <= SIGMAS * sigma, (
        f"{name}: {measured:.3f} on {high.sum()} recordings at SNR >= 10 dB, "
        f"card says {expected:.3f}"
    )
    chance = 1 / len(CLASSES)
    assert measured > 4 * chance
