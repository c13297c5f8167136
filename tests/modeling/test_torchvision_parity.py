"""Equal outputs with torchvision's fasterrcnn_resnet50_fpn on equal (converted) weights."""

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.detection import fasterrcnn_resnet50_fpn

from backbones import FrozenBatchNorm2d
from detection import load_model
from detection.cli import convert_weights
from detection.evaluation import load_checkpoint_model
from detection.modeling.convert import freeze_torchvision_bn

TAKE_ALL = 10_000_000  # sampler batch larger than any candidate count: no randomness


def images(seed: int, sizes) -> list[torch.Tensor]:
    """Blocky images: smooth regions and edges, so that features and boxes vary."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for h, w in sizes:
        coarse = torch.rand(3, h // 16 + 1, w // 16 + 1, generator=g)
        img = nn.functional.interpolate(coarse[None], scale_factor=16, mode="nearest")[0]
        out.append((img[:, :h, :w] * 0.8 + 0.2 * torch.rand(3, h, w, generator=g)).clamp(0, 1))
    return out


def assert_same_detections(a: dict, b: dict, box_atol: float, score_atol: float) -> None:
    """One-to-one equal detections up to float rounding. Rounding may reorder detections of
    equal score (the amplified random classifier saturates many at 1.0), so each of `a` is
    matched to an unused one of `b` with the same label, score and box within tolerance. The
    classifier's x30 weights amplify float differences too: tolerances of 1e-2 px, 5e-3 score."""
    assert a["boxes"].shape == b["boxes"].shape
    unused = torch.ones(len(b["boxes"]), dtype=torch.bool)
    for box, score, label in zip(a["boxes"], a["scores"], a["labels"], strict=True):
        close = (
            unused
            & (b["labels"] == label)
            & ((b["scores"] - score).abs() <= score_atol)
            & ((b["boxes"] - box).abs().amax(dim=1) <= box_atol)
        )
        assert close.any(), f"no twin for {label.item()} {score.item():.6f} {box.tolist()}"
        unused[torch.where(close)[0][0]] = False


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    torch.manual_seed(0)
    tv = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    # realistic BN statistics: accumulate them over a few images, then freeze
    body = tv.backbone.body
    for m in body.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    body.train()
    with torch.no_grad():
        for img in images(1, [(224, 224)] * 4):
            normalized = (img - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor(
                [0.229, 0.224, 0.225]
            )[:, None, None]
            body(normalized[None])
    freeze_torchvision_bn(tv)
    # spread the class scores so that random weights give detections above the threshold
    with torch.no_grad():
        tv.roi_heads.box_predictor.cls_score.weight.mul_(30)
    tv.transform.min_size = (320,)
    tv.transform.max_size = 512
    path = tmp_path_factory.mktemp("tv") / "tv_frcnn.pth"
    torch.save(tv.state_dict(), path)
    ckpt = path.with_name("ours.pth")
    assert convert_weights.main(["--input", str(path), "--output", str(ckpt)]) == 0
    ours = load_model(ckpt, ["input.min_size_test=320", "input.max_size_test=512"])
    return tv.eval(), ours, ckpt


def test_converted_config_and_classes(models):
    _, ours, _ = models
    assert ours.cfg.model.roi_heads.num_classes == 90
    assert ours.class_names[0] == "person" and len(ours.class_names) == 90
    assert not ours.training


def test_same_detections(models):
    tv, ours, _ = models
    batch = images(2, [(240, 320), (300, 200), (97, 130)])
    with torch.no_grad():
        theirs = tv(batch)
        mine = ours(batch)
    for a, b in zip(mine, theirs, strict=True):
        assert len(b["boxes"]) > 10  # the comparison is not vacuous
        assert a["boxes"].shape == b["boxes"].shape
        torch.testing.assert_close(a["boxes"], b["boxes"], atol=1e-3, rtol=0)
        torch.testing.assert_close(a["scores"], b["scores"], atol=1e-5, rtol=0)
        assert torch.equal(a["labels"], b["labels"])


def test_same_training_losses(models):
    tv, _, ckpt = models
    ours = load_model(
        ckpt,
        [
            f"model.rpn.batch_size_per_image={TAKE_ALL}",
            f"model.roi_heads.batch_size_per_image={TAKE_ALL}",
        ],
    ).train()
    tv.train()
    tv.transform._skip_resize = True  # our loader resizes in training; the model does not
    tv.rpn.fg_bg_sampler.batch_size_per_image = TAKE_ALL
    tv.roi_heads.fg_bg_sampler.batch_size_per_image = TAKE_ALL
    batch = images(4, [(256, 320), (192, 256)])
    targets = [
        {
            "boxes": torch.tensor([[10.0, 20.0, 120.0, 200.0], [150.0, 30.0, 300.0, 120.0]]),
            "labels": torch.tensor([1, 17]),
        },
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    try:
        theirs = tv(batch, targets)
        mine = ours(batch, targets)
    finally:
        tv.eval()
        tv.transform._skip_resize = False
    names = {
        "loss_rpn_cls": "loss_objectness",
        "loss_rpn_box": "loss_rpn_box_reg",
        "loss_cls": "loss_classifier",
        "loss_box": "loss_box_reg",
    }
    assert set(mine) == set(names)
    for ours_name, tv_name in names.items():
        torch.testing.assert_close(mine[ours_name], theirs[tv_name], atol=1e-5, rtol=1e-5)
        assert mine[ours_name].item() > 0


def test_converter_refuses_other_state_dicts(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    with pytest.raises(SystemExit) as e:
        convert_weights.main(["--input", str(path), "--output", str(tmp_path / "o.pth")])
    assert e.value.code == 2
    assert not (tmp_path / "o.pth").exists()


def test_fast_path_same_detections(models):
    """The evaluation/inference path (FrozenBN folded into the convs, channels_last, inference
    mode) gives the plain path's detections (which are torchvision's, test_same_detections)."""
    _, _, ckpt = models
    # no top-100 cut: among the saturated scores of the amplified random classifier, rounding
    # may pick other members of a tie at the cut
    overrides = ["input.min_size_test=320", "test.detections_per_image=1000"]
    fast, cfg = load_checkpoint_model(ckpt, overrides=overrides)
    plain = load_model(ckpt, overrides)
    assert cfg.test.fast_path and fast.channels_last
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in fast.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in plain.modules())
    conv = next(m for m in fast.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    batch = images(2, [(240, 320), (300, 200), (97, 130)])
    with torch.inference_mode():
        mine = fast(batch)
    with torch.no_grad():
        reference = plain(batch)
    for a, b in zip(mine, reference, strict=True):
        assert len(b["boxes"]) > 10
        assert_same_detections(a, b, box_atol=1e-2, score_atol=5e-3)


def test_bf16_path_close_to_fp32(models):
    """bf16 autocast: features within bf16 rounding of fp32's; boxes and scores in fp32."""
    _, _, ckpt = models
    overrides = ["input.min_size_test=320"]
    fp32, _ = load_checkpoint_model(ckpt, overrides=overrides)
    bf16, _ = load_checkpoint_model(ckpt, overrides=[*overrides, "test.precision=bf16"])
    batch = images(3, [(240, 320)])
    with torch.inference_mode():
        x, _ = fp32.preprocess(batch)
        ref = fp32.backbone(x.contiguous(memory_format=torch.channels_last))
        with torch.autocast("cpu", torch.bfloat16):
            low = bf16.backbone(x.contiguous(memory_format=torch.channels_last))
        (det,) = bf16(batch)
    for name in ref:
        assert low[name].dtype == torch.bfloat16
        cos = nn.functional.cosine_similarity(ref[name].flatten(), low[name].float().flatten(), 0)
        # a sanity bound: with random weights bf16 rounding grows over ~50 layers (AP on a
        # trained model is measured in the README)
        assert cos > 0.8, name
    assert det["boxes"].dtype == torch.float32 and det["scores"].dtype == torch.float32
    assert len(det["boxes"]) > 10
