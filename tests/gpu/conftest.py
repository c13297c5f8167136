"""tests/gpu: the CUDA paths (fp16 with GradScaler, bf16 / fp16 inference, deterministic resume,
NCCL, out-of-memory handling). Every test here is skipped, with the reason shown, where torch
sees no CUDA device; tools/gpu_check.sh runs them on a GPU machine."""

import os
from pathlib import Path

import pytest
import torch

CUDA = torch.cuda.is_available()  # no CUDA context is made by asking

if CUDA:
    # cuBLAS is deterministic only with a fixed workspace (what torch's deterministic mode asks
    # for); it is read when cuBLAS starts, so it is set at collection, before any test runs
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def pytest_collection_modifyitems(config, items):
    """Mark this folder's tests skipped (before any fixture runs) when CUDA is absent."""
    if CUDA:
        return
    here = Path(__file__).parent
    skip = pytest.mark.skip(reason="CUDA is not available")
    for item in items:
        if here in item.path.parents:
            item.add_marker(skip)
