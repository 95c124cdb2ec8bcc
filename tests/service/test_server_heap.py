"""The server process hands its start-up objects out of the cyclic collector's reach, so a full
collection during serving walks only what requests left behind."""

from __future__ import annotations

import gc

from service.server import load_server
from service.settings import load_settings


def test_a_loaded_server_has_frozen_its_start_up_objects(tiny_bundle):
    gc.unfreeze()
    try:
        assert gc.get_freeze_count() == 0
        server = load_server(load_settings(model_dir=str(tiny_bundle), device="cpu"))
        assert server is not None
        # torch, the model and the app: far more than any test's own objects
        assert gc.get_freeze_count() > 50_000
    finally:
        gc.unfreeze()
