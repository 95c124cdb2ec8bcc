"""Settings -> the model card and the torch runner for the engine."""

from __future__ import annotations

import torch

from rfmodel.bundle import BundleError, load_bundle, shipped_model_dir, shipped_models
from rfmodel.cpus import usable_cpus
from service.context import ModelCard
from service.engine import warmup_batch_sizes
from service.inference import TorchRunner, resolve_device, resolve_precision
from service.settings import Settings


def default_torch_threads(workers: int) -> int:
    """A worker's share of the cores this process may use, but one, which is left to its HTTP
    event loop: on a small machine, intra-op threads that compete with the loop for a core stall
    each other (on a busy 2-core machine, 2 threads gave a model p99 near 1 s where 1 thread gave
    35 ms)."""
    return max(1, usable_cpus() // workers - 1)


def load_model(settings: Settings) -> tuple[ModelCard, TorchRunner]:
    """Raises rfmodel.bundle.BundleError or service.inference.DeviceError with a message fit for
    the operator."""
    torch.set_num_threads(settings.torch_threads or default_torch_threads(settings.workers))
    device = resolve_device(settings.device)
    dtype = resolve_precision(settings.precision, device)
    path = settings.model_dir or shipped_model_dir(settings.attn_backend, settings.norm)
    if settings.model_dir is None and not path.is_dir():
        raise BundleError(
            f"no shipped weights for {settings.attn_backend} with {settings.norm}; shipped: "
            f"{', '.join(shipped_models())} (flash serves mha's); RFCLS_MODEL_DIR serves your own"
        )
    # an explicit model directory keeps its own backend unless one is asked for as well
    backend_asked = settings.model_dir is None or "attn_backend" in settings.model_fields_set
    bundle = load_bundle(
        path, attn_backend=settings.attn_backend if backend_asked else None, device=device
    )
    card = ModelCard(
        version=bundle.version,
        backend=bundle.model_config.attn_backend,
        norm=bundle.model_config.norm,
        classes=bundle.classes,
        model_config=bundle.model_config.to_dict(),
        feature_config=bundle.feature_config,
        device=str(device),
        precision=str(dtype).removeprefix("torch."),
        path=bundle.path,
        evaluation=bundle.metrics,
    )
    lengths = settings.warmup_lengths(bundle.feature_config.nfft)
    runner = TorchRunner(
        bundle.model,
        bundle.feature_config,
        device,
        dtype=dtype,
        graph_lengths=lengths if settings.cuda_graphs else (),
        graph_batch_sizes=warmup_batch_sizes(settings.max_batch),
    )
    return card, runner
