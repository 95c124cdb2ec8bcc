import numpy as np
import pytest
import scipy.signal
import torch

from preprocessing import spectra
from preprocessing.errors import InvalidParameter, TooFewSamples
from preprocessing.spectra import frames_of, n_frames, power_spectra, window_tensor

CASES = [
    (256, 128, "hann"),
    (256, 256, "hamming"),
    (128, 37, "blackman"),
    (64, 1, "boxcar"),
    (33, 10, "hann"),  # odd nfft: fftshift by roll instead of the (-1)^n modulation
    (100, 60, "flattop"),
]


def random_complex(rng, shape, dtype=np.complex128):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)


def scipy_power(x, nfft, hop, window):
    """|STFT|^2 from scipy, frames starting at sample 0 without padding: k_offset = nfft//2 puts
    the first window's start (its centre minus nfft//2) at sample 0. Returns [..., T, nfft]."""
    stft = scipy.signal.ShortTimeFFT(
        scipy.signal.get_window(window, nfft, fftbins=True), hop, fs=1.0, fft_mode="centered"
    )
    p = stft.spectrogram(x, p0=0, p1=n_frames(x.shape[-1], nfft, hop), k_offset=nfft // 2)
    return np.swapaxes(p, -1, -2)


@pytest.mark.parametrize(("nfft", "hop", "window"), CASES)
def test_matches_scipy_float64(nfft, hop, window):
    rng = np.random.default_rng(nfft * 1000 + hop)
    x = random_complex(rng, (3, 1500))
    ours = power_spectra(torch.from_numpy(x), nfft, hop, window=window)
    ref = scipy_power(x, nfft, hop, window)
    assert ours.dtype == torch.float64
    assert ours.shape == (3, n_frames(1500, nfft, hop), nfft) == ref.shape
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-10, atol=1e-12 * ref.max())


@pytest.mark.parametrize(("nfft", "hop", "window"), CASES)
def test_matches_scipy_float32(nfft, hop, window):
    rng = np.random.default_rng(nfft * 1000 + hop + 1)
    x = random_complex(rng, (2, 1200), np.complex64)
    ours = power_spectra(torch.from_numpy(x), nfft, hop, window=window)
    assert ours.dtype == torch.float32
    ref = scipy_power(x.astype(np.complex128), nfft, hop, window)
    ours = ours.double().numpy()
    assert np.abs(ours - ref).sum() / ref.sum() < 1e-5
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5 * ref.max())


def test_leading_dimensions_are_batch_dimensions():
    x = torch.from_numpy(random_complex(np.random.default_rng(3), (2, 3, 700)))
    out = power_spectra(x, 64, 32)
    assert out.shape == (2, 3, n_frames(700, 64, 32), 64)
    torch.testing.assert_close(out[1, 2], power_spectra(x[1, 2][None], 64, 32)[0])


def test_dc_lands_in_the_centre_bin():
    nfft = 64
    tone = torch.exp(2j * torch.pi * (5 / nfft) * torch.arange(512, dtype=torch.float64))
    for x, peak in ((torch.ones(1, 512, dtype=torch.complex128), nfft // 2), (tone[None], 37)):
        p = power_spectra(x, nfft, nfft // 2, window="boxcar")
        assert (p.argmax(-1) == peak).all()


def test_n_frames_counts_whole_frames():
    for n in range(0, 60):
        for nfft, hop in ((16, 16), (16, 5), (7, 3), (1, 1)):
            starts = [s for s in range(n) if s + nfft <= n and s % hop == 0]
            assert n_frames(n, nfft, hop) == len(starts)


def test_frames_are_a_view_not_a_copy():
    x = torch.randn(2, 1000, dtype=torch.complex64)
    frames = frames_of(x, 128, 64)
    assert frames.data_ptr() == x.data_ptr() and frames.stride()[-2:] == (64, 1)


def test_db_is_floored_log():
    x = torch.from_numpy(random_complex(np.random.default_rng(4), (1, 600)))
    x[0, :64] = 0  # a silent frame, whose power is exactly 0
    p = power_spectra(x, 64, 32)
    db = power_spectra(x, 64, 32, db=True, floor_db=-90.0)
    expected = 10 * torch.log10(torch.clamp(p, min=1e-9))
    torch.testing.assert_close(db, expected)
    assert (db[0, 0] == -90.0).all()


def test_frame_rms_normalisation_against_direct_formula():
    rng = np.random.default_rng(5)
    nfft, hop = 128, 50
    x = random_complex(rng, (2, 900)) * rng.uniform(0.01, 100, size=(2, 900))  # uneven power
    out = power_spectra(torch.from_numpy(x), nfft, hop, normalize="frame_rms").numpy()
    w = scipy.signal.get_window("hann", nfft)
    for b in range(2):
        for t in range(out.shape[1]):
            frame = x[b, t * hop : t * hop + nfft]
            raw = np.abs(np.fft.fftshift(np.fft.fft(w * frame))) ** 2
            expected = raw / (np.mean(np.abs(frame) ** 2) * np.sum(w**2))
            np.testing.assert_allclose(out[b, t], expected, rtol=1e-10, atol=1e-12)


def test_frame_rms_is_gain_and_phase_invariant_and_white_noise_is_0db():
    rng = np.random.default_rng(6)
    x = torch.from_numpy(random_complex(rng, (4, 8192)))
    ref = power_spectra(x, 256, 128, normalize="frame_rms")
    for gain in (1e-4, 0.37, 2.0, 5e3):
        phase = np.exp(1j * rng.uniform(0, 2 * np.pi))
        scaled = power_spectra(x * gain * phase, 256, 128, normalize="frame_rms")
        torch.testing.assert_close(scaled, ref, rtol=1e-9, atol=1e-12)
    # mean over bins is the window-weighted frame power / frame power: ~1 for white noise
    assert abs(ref.mean().item() - 1.0) < 0.02


def test_frame_rms_holds_at_any_float32_level():
    """Squared as they stand, float32 samples past about 1e19 overflow and below 1e-19 underflow:
    the normalised spectra must not see it."""
    rng = np.random.default_rng(7)
    x = torch.from_numpy(random_complex(rng, (2, 4096))).to(torch.complex64)
    ref = power_spectra(x, 64, 64, db=True, normalize="frame_rms")
    for gain in (1e-30, 1e-20, 1e20, 1e30):
        scaled = power_spectra(x * gain, 64, 64, db=True, normalize="frame_rms")
        torch.testing.assert_close(scaled, ref, rtol=1e-4, atol=1e-4)


def test_window_computed_once_per_key():
    args = ("hamming", 96, torch.device("cpu"), torch.float32, False)
    assert window_tensor(*args) is window_tensor(*args)
    assert window_tensor(*args) is not window_tensor(
        "hamming", 96, torch.device("cpu"), torch.float64, False
    )


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"nfft": 0}, "nfft"),
        ({"nfft": -8}, "nfft"),
        ({"nfft": 64.0}, "nfft"),
        ({"nfft": "64"}, "nfft"),
        ({"nfft": True}, "nfft"),
        ({"nfft": 1 << 17}, "nfft"),
        ({"hop": 0}, "hop"),
        ({"hop": 65}, "hop"),
        ({"hop": 2.5}, "hop"),
        ({"window": "no-such-window"}, "window"),
        ({"window": "kaiser"}, "window"),  # needs a beta parameter
        ({"window": ("kaiser", 8.0)}, "window"),
        ({"normalize": "recording"}, "normalize"),
        ({"floor_db": float("nan")}, "floor_db"),
        ({"floor_db": 10.0}, "floor_db"),
    ],
)
def test_invalid_parameters_name_the_field(kwargs, field):
    args = {"nfft": 64, "hop": 32, **kwargs}
    with pytest.raises(InvalidParameter) as err:
        power_spectra(torch.randn(1, 1000, dtype=torch.complex64), **args)
    assert err.value.field == field


def test_hop_error_states_the_limit():
    with pytest.raises(InvalidParameter, match="nfft=64"):
        power_spectra(torch.randn(1, 1000, dtype=torch.complex64), 64, 65)


def test_real_input_refused():
    with pytest.raises(InvalidParameter) as err:
        power_spectra(torch.randn(1, 1000), 64, 32)
    assert err.value.field == "x"


def test_too_few_samples():
    with pytest.raises(TooFewSamples) as err:
        power_spectra(torch.randn(1, 63, dtype=torch.complex64), 64, 32)
    assert err.value.field == "samples" and "nfft=64" in err.value.message


def test_blockwise_evaluation_equals_one_block(monkeypatch):
    """Small inputs fit one block; force many (ragged) blocks and compare."""
    x = torch.from_numpy(random_complex(np.random.default_rng(12), (2, 3, 2000)))
    whole = power_spectra(x, 64, 24, db=True, normalize="frame_rms")
    monkeypatch.setattr(spectra, "BLOCK_BYTES", 7 * 2 * 64 * 16)  # 7 frames per block
    blocked = power_spectra(x, 64, 24, db=True, normalize="frame_rms")
    torch.testing.assert_close(blocked, whole, rtol=1e-12, atol=1e-10)
