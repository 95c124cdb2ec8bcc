import json

import numpy as np
import pytest

from preprocessing.features import FeatureConfig, feature_frames
from preprocessing.formats import encode, write_sigmf
from service.cli import main


def random_iq(n):
    rng = np.random.default_rng(n)
    return (0.3 * (rng.standard_normal(n) + 1j * rng.standard_normal(n))).astype(np.complex64)


def run_json(capsys, *argv):
    assert main(["spectra", *map(str, argv), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("name", ["rec.sigmf-meta", "rec"])  # the metadata, or the base name
def test_sigmf_recording(tmp_path, capsys, name):
    write_sigmf(tmp_path / "rec", random_iq(5000), 1e6, 915e6, "ci16_le")
    out = run_json(capsys, tmp_path / name)
    assert out["datatype"] == "ci16_le" and out["sample_rate"] == 1e6
    assert out["shape"] == [1, feature_frames(5000, FeatureConfig()), FeatureConfig().n_features]


def test_a_sigmf_recording_with_a_format_is_refused_not_read_as_samples(tmp_path, capsys):
    meta = write_sigmf(tmp_path / "rec", random_iq(5000), 1e6, 915e6, "ci16_le")
    assert main(["spectra", str(meta), "--format", "ci8"]) == 2
    assert "names its own datatype" in capsys.readouterr().err


@pytest.mark.parametrize(("suffix", "fmt"), [(".cu8", "cu8"), (".cs16", "ci16"), (".dat", "ci8")])
def test_raw_file_format_from_extension_or_flag(tmp_path, capsys, suffix, fmt):
    path = tmp_path / f"rec{suffix}"
    path.write_bytes(encode(random_iq(3000), fmt))
    flags = ["--format", fmt] if suffix == ".dat" else []
    out = run_json(capsys, path, "--nfft", 128, "--hop", 64, *flags)
    assert out["datatype"] == fmt
    cfg = FeatureConfig(nfft=128, hop=64)
    assert out["shape"] == [1, feature_frames(3000, cfg), cfg.n_features]


@pytest.mark.parametrize(
    ("name", "argv", "message"),
    [
        ("rec.dat", [], "--format"),
        ("rec.cf32", ["--hop", "300"], "hop"),
        ("rec.cf32", ["--nfft", "8192"], "samples"),
    ],
)
def test_errors_exit_2_with_a_message(tmp_path, capsys, name, argv, message):
    path = tmp_path / name
    path.write_bytes(encode(random_iq(1000), "cf32"))
    assert main(["spectra", str(path), *argv]) == 2
    assert message in capsys.readouterr().err


def test_hop_defaults_to_half_the_fft_so_nfft_alone_works(tmp_path, capsys):
    path = tmp_path / "rec.cf32"
    path.write_bytes(encode(random_iq(3000), "cf32"))
    out = run_json(capsys, path, "--nfft", 64)
    assert out["features"]["hop"] == 32
    assert out["shape"][1] == feature_frames(3000, FeatureConfig(nfft=64, hop=32))


def test_ranges_are_per_transform_in_its_own_unit(tmp_path, capsys):
    path = tmp_path / "rec.cf32"
    path.write_bytes(encode(random_iq(5000), "cf32"))
    out = run_json(capsys, path)
    cfg = FeatureConfig()
    assert list(out["ranges"]) == list(cfg.transforms)
    for name, (low, high) in out["ranges"].items():
        assert low <= high
        if name != "if_q":  # dB, on or above the floor
            assert low >= cfg.floor_db
    # if_q is in FFT bins about the frame's mean frequency: within half the band either way
    assert -cfg.nfft / 2 <= out["ranges"]["if_q"][0] < 0 < out["ranges"]["if_q"][1] <= cfg.nfft / 2
