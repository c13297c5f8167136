"""Fixtures shared by every test folder: seeding, one shapes dataset, a tiny training config."""

import os
from pathlib import Path

import pytest
import torch
from hypothesis import settings

from detection.utils.logging import reset_logging

# CI runs the same examples every time (a red build is reproducible); HYPOTHESIS_PROFILE=explore
# draws new ones
settings.register_profile("ci", derandomize=True, database=None)
settings.register_profile("explore", max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

ROOT = Path(__file__).resolve().parents[1]

# The suite runs as on a CPU without native bf16, whatever CPU runs it: `auto` precision then
# resolves to fp32 everywhere, so tolerances and timings do not depend on the machine (set
# before any oneDNN primitive exists; tool subprocesses inherit it). Tests of the bf16 rule
# simulate the CPU they need. ONEDNN_MAX_CPU_ISA=ALL make test runs with native bf16 instead.
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_VNNI")

TINY = """\
_base_: {root}/configs/shapes/Base-shapes.yaml
model:
  backbone: {{name: resnet18, norm: GN, freeze_at: 0}}
  rpn: {{pre_nms_topk_train: 256, post_nms_topk_train: 32, pre_nms_topk_test: 256,
         post_nms_topk_test: 16}}
  roi_heads: {{batch_size_per_image: 16, pooler_resolution: 8}}
input: {{min_size_train: [128], max_size_train: 192, min_size_test: 128, max_size_test: 192,
        flip: false}}
data: {{num_workers: 0, aspect_ratio_grouping: false}}
solver: {{ims_per_batch: 2, base_lr: 0.01, max_iter: 6, steps: [4], warmup_iters: 2,
          checkpoint_period: 2, log_period: 1}}
test: {{eval_period: -1}}
output_dir: {out}
"""


@pytest.fixture(scope="session")
def datasets_root(tmp_path_factory):
    """One shapes dataset for the whole session (generated on first use)."""
    root = tmp_path_factory.mktemp("datasets")
    from detection.data import ensure_shapes

    ensure_shapes("shapes_train", root)
    ensure_shapes("shapes_val", root)
    return root


@pytest.fixture
def tiny_config(tmp_path, datasets_root, monkeypatch):
    """A seconds-long training config on shapes; returns (path, output_dir)."""
    monkeypatch.setenv("RESDET_DATASETS", str(datasets_root))
    out = tmp_path / "out"
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY.format(root=ROOT, out=out))
    return path, out


@pytest.fixture(autouse=True)
def _fresh_logging():
    """Tools run in-process install the console handler; each test starts without it, so what
    one test logs never depends on which tools ran before it."""
    yield
    reset_logging()


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield
