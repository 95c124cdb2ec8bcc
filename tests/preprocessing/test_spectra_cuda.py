"""CUDA must give what the CPU gives (the service may run either)."""

import pytest
import torch

from preprocessing.features import FeatureConfig, batch_features, compute_features
from preprocessing.recording import batch_recording_features
from preprocessing.spectra import power_spectra

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def random_complex(shape, dtype):
    return torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(11))


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize(("nfft", "hop", "window"), [(256, 128, "hann"), (63, 20, "blackman")])
def test_power_spectra_cuda_equals_cpu(dtype, nfft, hop, window):
    x = random_complex((4, 5000), dtype)
    cpu = power_spectra(x, nfft, hop, window=window)
    cuda = power_spectra(x.cuda(), nfft, hop, window=window)
    assert cuda.device.type == "cuda"
    tol = 1e-5 if dtype == torch.complex64 else 1e-12
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=tol, atol=tol * cpu.max().item())


def test_features_cuda_equal_cpu():
    cfg = FeatureConfig(transforms=("x", "x2", "x4", "env"))
    x = random_complex((3, 8192), torch.complex64)
    cpu = compute_features(x, cfg)
    cuda = compute_features(x.cuda(), cfg)
    assert cuda.device.type == "cuda" and cuda.dtype == torch.float32
    # dB: round-off differs only where the floor does not hide it
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=0, atol=0.05)


def test_distribution_features_cuda_equal_cpu():
    cfg = FeatureConfig(transforms=("x", "amp_q", "if_q"))
    x = random_complex((3, 8192), torch.complex128)
    cpu = compute_features(x, cfg)
    cuda = compute_features(x.cuda(), cfg)
    # complex128: round-off moves no value across the +-pi cut of if_q or the noise filter's
    # threshold (either would move a quantile far)
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=1e-5, atol=1e-4)
    x32 = x.to(torch.complex64)
    cuda32 = compute_features(x32.cuda(), cfg)[..., 256:512]
    torch.testing.assert_close(
        cuda32.cpu(), compute_features(x32, cfg)[..., 256:512], rtol=0, atol=0.05
    )


def test_batch_features_on_cuda():
    cfg = FeatureConfig()
    recs = [random_complex((n,), torch.complex64) for n in (4000, 1000, 4000)]
    x, mask = batch_features(recs, cfg, device="cuda")
    assert x.device.type == mask.device.type == "cuda"
    x_cpu, mask_cpu = batch_features(recs, cfg)
    assert torch.equal(mask.cpu(), mask_cpu)
    torch.testing.assert_close(x.cpu(), x_cpu, rtol=0, atol=0.05)


def test_recording_features_cuda_equal_cpu():
    cfg = FeatureConfig(recording_segment=4096)
    recs = [random_complex((n,), torch.complex128) for n in (9000, 1000, 9000)]
    cuda = batch_recording_features(recs, cfg, device="cuda")
    assert cuda.device.type == "cuda"
    # complex128 as above; the segment means and quantiles add no cut of their own
    torch.testing.assert_close(
        cuda.cpu(), batch_recording_features(recs, cfg), rtol=1e-5, atol=1e-4
    )
