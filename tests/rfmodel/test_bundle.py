"""A model directory can only be saved and loaded with the features its model reads."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from preprocessing.features import FeatureConfig
from rfmodel.bundle import CONFIG_FILE, WEIGHTS_FILE, BundleError, load_bundle, save_bundle
from rfmodel.classifier import RFClassifier
from rfmodel.config import ModelConfig

FEATURES = FeatureConfig(nfft=32, hop=32, recording_segment=128)
CLASSES = ("a", "b", "c")


def tiny(**overrides) -> RFClassifier:
    sizes = dict(d_model=16, n_layers=1, n_heads=2, n_classes=3, recording_head=True)
    sizes["recording_views"] = FEATURES.recording_views
    return RFClassifier(ModelConfig(**{"n_features": FEATURES.n_features, **sizes, **overrides}))


def test_a_saved_bundle_loads_with_its_recording_head(tmp_path):
    torch.manual_seed(0)
    model = tiny()
    torch.nn.init.normal_(model.recording_head.weight)
    width = FEATURES.recording_views * FEATURES.n_features
    # dB-like values, where float16 would step by 0.06
    model.fit_recording_norm(torch.randn(16, width, dtype=torch.float64) * 30 - 90)
    bundle = load_bundle(save_bundle(tmp_path, model, FEATURES, CLASSES))
    assert bundle.feature_config == FEATURES and bundle.model_config.recording_head
    # parameters stored as float16 and loaded back as float32, buffers as they were
    stored = load_file(tmp_path / WEIGHTS_FILE)
    parameters = {name for name, _ in model.named_parameters()}
    assert {k for k, v in stored.items() if v.dtype == torch.float16} == parameters
    assert stored["recording_shift"].dtype == torch.float32
    rounded = copy.deepcopy(model)
    with torch.no_grad():
        for p in rounded.parameters():
            p.copy_(p.half())
    loaded = bundle.model.state_dict()
    for name, value in rounded.state_dict().items():
        assert loaded[name].dtype == torch.float32
        torch.testing.assert_close(loaded[name], value, rtol=0, atol=0, msg=name)
    x = torch.randn(2, 5, FEATURES.n_features)
    recording = torch.randn(2, width) * 30 - 90
    rounded.eval()
    torch.testing.assert_close(
        bundle.model(x, recording=recording), rounded(x, recording=recording)
    )


@pytest.mark.parametrize(
    ("model", "features", "message"),
    [
        (dict(n_features=7 * 16), FEATURES, "values per frame"),
        ({}, FeatureConfig(nfft=32, hop=32, recording_segment=0), "has recording head but"),
        (dict(recording_head=False), FEATURES, "has no recording head but"),
        (dict(recording_views=1), FEATURES, "reads 1 of the recording's views but the features"),
    ],
)
def test_saving_refuses_features_the_model_does_not_read(tmp_path, model, features, message):
    with pytest.raises(BundleError, match=message):
        save_bundle(tmp_path, tiny(**model), features, CLASSES)


def test_loading_refuses_a_config_whose_features_were_changed(tmp_path):
    path = save_bundle(tmp_path, tiny(), FEATURES, CLASSES)
    config = json.loads((path / CONFIG_FILE).read_text())
    config["features"]["recording_segment"] = 0
    (path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(BundleError, match=f"{path}: the model has recording head but"):
        load_bundle(path)


def test_loading_refuses_features_other_than_the_weights_were_trained_on(tmp_path):
    """Shapes that still fit (the same widths) but another hop and floor: the weights file's own
    record of its features catches what the shape checks cannot."""
    path = save_bundle(tmp_path, tiny(), FEATURES, CLASSES)
    config = json.loads((path / CONFIG_FILE).read_text())
    config["features"].update(hop=FEATURES.hop // 2, floor_db=-60.0)
    (path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(BundleError, match=r"differ from those the weights were trained on: .*hop"):
        load_bundle(path)


def test_a_bundle_saved_before_the_weights_recorded_their_features_still_loads(tmp_path):
    path = save_bundle(tmp_path, tiny(), FEATURES, CLASSES)
    save_file(load_file(path / WEIGHTS_FILE), path / WEIGHTS_FILE)  # no metadata
    assert load_bundle(path).feature_config == FEATURES


def damage_weights(path):
    weights = path / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:100])


def damage_config(change):
    def damage(path):
        config = json.loads((path / CONFIG_FILE).read_text())
        change(config)
        (path / CONFIG_FILE).write_text(json.dumps(config))

    return damage


@pytest.mark.parametrize(
    "damage",
    [
        damage_weights,
        damage_config(lambda c: c["model"].update(d_model="big")),
        damage_config(lambda c: c["model"].update(d_model=32)),  # weights of another shape
        damage_config(lambda c: c.update(classes=5)),
        damage_config(lambda c: c.update(classes=c["classes"][:-1])),  # an output without a name
        damage_config(lambda c: c.update(classes="".join(c["classes"]))),
        damage_config(lambda c: c.update(classes=[c["classes"][0]] * len(c["classes"]))),
        damage_config(lambda c: c.update(model=None)),
        damage_config(lambda c: c["features"].update(nfft=-1)),
        lambda path: (path / CONFIG_FILE).write_text("[1, 2]"),
        lambda path: (path / "metrics.json").write_text("{not json"),
    ],
    ids=[
        "truncated weights",
        "d_model a string",
        "d_model of another model",
        "classes a number",
        "classes one short",
        "classes a string",
        "classes repeated",
        "model null",
        "nfft negative",
        "config a list",
        "metrics not JSON",
    ],
)
def test_a_damaged_model_directory_is_a_bundle_error_naming_it(tmp_path, damage):
    path = save_bundle(tmp_path, tiny(), FEATURES, CLASSES)
    damage(path)
    with pytest.raises(BundleError, match=str(path)):
        load_bundle(path)
