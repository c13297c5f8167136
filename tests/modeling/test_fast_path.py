"""The fast inference path's options: torch.compile (and its fallback), precision handling."""

import os
import subprocess
import sys

import pytest
import torch
from helpers import ROOT

from detection.config import load_config
from detection.modeling import build_model, prepare_for_inference

SMALL = [
    "model.backbone.name=resnet18",
    "model.backbone.norm=GN",
    "model.backbone.weights=null",
    "model.roi_heads.num_classes=3",
    "model.roi_heads.pooler_resolution=8",
    # small inputs (the training resize too): bf16 is emulated on most CPUs, 10-50x slower
    "input.min_size_train=[64]",
    "input.max_size_train=96",
    "input.min_size_test=64",
    "input.max_size_test=96",
    # few proposals: the C4 head runs res5 once per proposal
    "model.rpn.pre_nms_topk_test=300",
    "model.rpn.post_nms_topk_test=40",
]


def small_model():
    cfg = load_config(ROOT / "configs/coco/faster_rcnn_R50_C4_1x.yaml", SMALL)
    torch.manual_seed(0)
    model = build_model(cfg, load_weights=False).eval()
    with torch.no_grad():  # spread the scores so that random weights give detections
        model.roi_heads.predictor.cls_score.weight.mul_(30)
    return model


def test_compile_falls_back_to_eager_without_a_compiler(tmp_path):
    """A real compiler failure (no C++ compiler for inductor): a warning, then eager."""
    script = (
        "import logging, torch\n"
        "logging.basicConfig(level=logging.WARNING)\n"
        "from test_fast_path import small_model\n"
        "from detection.modeling import prepare_for_inference\n"
        "m = small_model()\n"
        "prepare_for_inference(m, compile=True)\n"
        "assert type(m.backbone).__name__ == 'ResNet', type(m.backbone)\n"
        "with torch.inference_mode():\n"
        "    m([torch.rand(3, 80, 100)])\n"
        "print('eager ok')\n"
    )
    env = {
        **os.environ,
        "CXX": str(tmp_path / "no-such-c++"),
        "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"),
        "PYTHONPATH": os.pathsep.join(
            [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests/modeling")]
        ),
    }
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "eager ok" in proc.stdout
    assert "model.compile=true: torch.compile failed" in proc.stderr
    assert "running the backbone eagerly" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_compiled_backbone_same_detections():
    eager = small_model()
    compiled = prepare_for_inference(small_model(), compile=True)
    assert type(compiled.backbone).__name__ == "OptimizedModule"
    images = [torch.rand(3, 90, 120, generator=torch.Generator().manual_seed(1))]
    with torch.inference_mode():
        (a,) = eager(images)
        (b,) = compiled(images)
    assert len(a["boxes"]) > 5
    torch.testing.assert_close(b["boxes"], a["boxes"], atol=1e-2, rtol=0)
    torch.testing.assert_close(b["scores"], a["scores"], atol=5e-3, rtol=0)


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision"):
        prepare_for_inference(small_model(), precision="int4")


def test_training_keeps_the_trainers_autocast():
    """The model's fp32 inference setting must not switch off an enclosing autocast (the
    trainer's solver.amp=bf16)."""
    model = small_model().train()
    seen = {}
    model.backbone.register_forward_hook(lambda m, i, o: seen.update(dtype=o["res4"].dtype))
    target = {"boxes": torch.tensor([[10.0, 10.0, 50.0, 60.0]]), "labels": torch.tensor([1])}
    with torch.autocast("cpu", torch.bfloat16):
        losses = model([torch.rand(3, 96, 128)], [target])
    assert seen["dtype"] == torch.bfloat16
    assert all(torch.isfinite(v) and v.dtype == torch.float32 for v in losses.values())


@pytest.mark.parametrize(
    "extra",
    [
        [],
        [
            "model.neck.name=fpn",
            "model.roi_heads.box_head=2fc",
            "model.anchors.sizes=[[16], [32], [64], [128], [256]]",
        ],
    ],
)
def test_bf16_weights_cast_once_give_autocasts_detections(extra):
    """prepare_for_inference(precision="bf16") casts conv and linear weights up front; autocast
    would cast the same tensors on every forward, so the detections are the same, bit for bit."""
    cfg = load_config(ROOT / "configs/coco/faster_rcnn_R50_C4_1x.yaml", SMALL + extra)
    torch.manual_seed(0)
    plain = build_model(cfg, load_weights=False).eval()
    with torch.no_grad():
        plain.roi_heads.predictor.cls_score.weight.mul_(30)
    plain.precision = "bf16"  # autocast only
    fast = build_model(cfg, load_weights=False)
    fast.load_state_dict(plain.state_dict())
    fast = prepare_for_inference(fast, fold_bn=False, channels_last=False, precision="bf16")
    convs = [m for m in fast.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    assert convs and all(m.weight.dtype == torch.bfloat16 for m in convs)
    norms = [m for m in fast.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(m.weight.dtype == torch.float32 for m in norms)
    torch.manual_seed(1)
    images = [torch.rand(3, 96, 128), torch.rand(3, 120, 100)]
    with torch.no_grad():
        expected, got = plain(images), fast(images)
    assert sum(len(d["boxes"]) for d in expected) > 0
    for a, b in zip(expected, got, strict=True):
        for key in ("boxes", "scores", "labels"):
            assert torch.equal(a[key], b[key]), key
