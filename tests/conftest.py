"""Fixtures shared by the test packages."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def full_fp32_matmuls():
    """No TF32 for the test: CUDA comparisons at float32 tolerances fail with it, and a test that
    trained on the GPU before (rfmodel/train.py turns it on) leaves it on in the process. Through
    the precision setting, which every torch version keeps (torch 2.11 on an H100 refused to
    monkeypatch matmul.allow_tf32: "no attribute")."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision(before)
