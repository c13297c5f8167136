"""Every zoo config builds and trains a step; backbone swaps; edge cases; checkpoints."""

from pathlib import Path

import pytest
import torch

from detection import build_model, load_config, load_model
from detection.config import ConfigError
from detection.utils.checkpoint import model_checkpoint, save_atomic

ROOT = Path(__file__).resolve().parents[2]
ZOO = sorted((ROOT / "configs/coco").glob("faster_rcnn_*_1x.yaml"))
SMALL = [
    "model.backbone.weights=null",
    "input.min_size_test=96",
    "input.max_size_test=160",
    # few RoIs: the res5 head runs once per RoI, and CPU time is what these tests spend
    "model.rpn.post_nms_topk_train=64",
    "model.rpn.post_nms_topk_test=32",
    "model.roi_heads.batch_size_per_image=32",
]


def small_model(config, *overrides):
    return build_model(load_config(config, [*SMALL, *overrides]))


def two_images():
    torch.manual_seed(0)
    return [torch.rand(3, 96, 128), torch.rand(3, 128, 80)]


class _Enough(Exception):
    pass


def _largest_outputs(model, layers, images) -> list[torch.Tensor]:
    """Largest absolute output of each of `layers` over a forward of `images`."""
    seen = [[] for _ in layers]
    hooks = [
        layer.register_forward_hook(lambda m, i, out, s=s: s.append(out.detach().abs().amax()))
        for layer, s in zip(layers, seen, strict=True)
    ]
    try:
        with torch.no_grad():
            model.eval()(images)
    finally:
        for hook in hooks:
            hook.remove()
    return [torch.stack(s).amax() for s in seen]


def spread_outputs(model, images):
    """Make random weights give detections, so that the tests below compare something.

    With unit FrozenBN statistics the deeper random backbones grow features to 1e5..1e8: the
    RPN's deltas push every proposal off the image and no detection is left; elsewhere the
    softmax scores of 81 near-equal logits stay under score_thresh. Each head's last layer
    has zero bias, so its output is linear in its weight: scale the RPN deltas, then the box
    deltas (largest 1) and the class logits (largest 10) as measured on `images`.
    """
    # the head runs its two 1x1 convs as one (the deltas module itself is not called): read
    # the deltas from the head's output, (logits, deltas) per level
    largest = []

    def deltas_then_stop(module, inputs, out):
        largest.append(max(d.detach().abs().amax() for d in out[1]))
        raise _Enough

    hook = model.rpn.head.register_forward_hook(deltas_then_stop)
    try:
        with torch.no_grad():
            model.eval()(images)
    except _Enough:
        pass
    finally:
        hook.remove()
    with torch.no_grad():
        model.rpn.head.deltas.weight.mul_(1.0 / largest[0])
    predictor = model.roi_heads.predictor
    box, cls = _largest_outputs(model, [predictor.bbox_pred, predictor.cls_score], images)
    with torch.no_grad():
        predictor.bbox_pred.weight.mul_(1.0 / box)
        predictor.cls_score.weight.mul_(10.0 / cls)
    return model


def assert_valid_detections(det, image, num_classes=80, score_thresh=0.05, min_count=1):
    """At least `min_count` detections, inside `image`, with valid scores and labels."""
    assert set(det) == {"boxes", "scores", "labels"}
    boxes, scores, labels = det["boxes"], det["scores"], det["labels"]
    assert len(boxes) >= min_count, f"{len(boxes)} detections: the checks below are vacuous"
    assert boxes.shape == (len(boxes), 4) and scores.shape == labels.shape == (len(boxes),)
    assert boxes.dtype == scores.dtype == torch.float32 and labels.dtype == torch.int64
    h, w = image.shape[-2:]
    assert torch.isfinite(boxes).all()
    assert (boxes >= 0).all()
    assert (boxes[:, 0::2] <= w + 1e-4).all() and (boxes[:, 1::2] <= h + 1e-4).all()
    assert (boxes[:, 2:] > boxes[:, :2]).all(), "empty boxes survived"
    assert ((scores > score_thresh) & (scores <= 1)).all()
    assert (scores[:-1] >= scores[1:]).all(), "detections are not sorted by score"
    assert labels.min() >= 1 and labels.max() <= num_classes


def assert_same_detections(a, b, box_atol, score_atol):
    assert len(a["boxes"]) > 0
    torch.testing.assert_close(a["boxes"], b["boxes"], atol=box_atol, rtol=0)
    torch.testing.assert_close(a["scores"], b["scores"], atol=score_atol, rtol=0)
    assert torch.equal(a["labels"], b["labels"])


def two_targets():
    return [
        {"boxes": torch.tensor([[10.0, 12.0, 60.0, 80.0]]), "labels": torch.tensor([3])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},  # no objects
    ]


def test_the_zoo_is_complete():
    names = {p.name for p in ZOO}
    expected = {f"faster_rcnn_R{d}_C4_1x.yaml" for d in (18, 34, 50, 101, 152)}
    expected |= {"faster_rcnn_VGG16_1x.yaml", "faster_rcnn_R50_FPN_1x.yaml"}
    expected |= {"faster_rcnn_R101_FPN_1x.yaml"}
    assert expected <= names
    for p in ZOO:
        assert load_config(p).model.roi_heads.num_classes == 80


@pytest.mark.parametrize("config", ZOO, ids=lambda p: p.stem)
def test_zoo_config_trains_and_infers(config):
    model = small_model(config)
    model.train()
    losses = model(two_images(), two_targets())
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box"}
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    sum(losses.values()).backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    frozen = [p for p in model.parameters() if not p.requires_grad]
    assert frozen, "freeze_at=2 freezes the stem and the first stage"
    assert all(p.grad is None for p in frozen)
    with_grad = sum(p.grad is not None for p in trainable)
    assert with_grad == len(trainable)
    spread_outputs(model, two_images())
    with torch.no_grad():
        out = model.eval()(two_images())
    assert len(out) == 2
    for det, img in zip(out, two_images(), strict=True):
        assert_valid_detections(det, img, min_count=10)


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet152"])
def test_swap_backbone_on_fpn(name):
    model = small_model(
        ROOT / "configs/coco/faster_rcnn_R50_FPN_1x.yaml", f"model.backbone.name={name}"
    )
    kinds = ("BasicBlock", "Bottleneck")
    blocks = [m for m in model.backbone.modules() if type(m).__name__ in kinds]
    depth = {"resnet18": (8, "BasicBlock"), "resnet34": (16, "BasicBlock")}
    assert (len(blocks), type(blocks[0]).__name__) == depth.get(name, (50, "Bottleneck"))
    spread_outputs(model, two_images())
    with torch.no_grad():
        out = model.eval()(two_images())
    assert len(out) == 2
    for det, img in zip(out, two_images(), strict=True):
        assert_valid_detections(det, img, min_count=10)


def test_vgg16_on_fpn():
    model = small_model(
        ROOT / "configs/coco/faster_rcnn_R50_FPN_1x.yaml", "model.backbone.name=vgg16_bn"
    )
    assert model.backbone.bottom_up.out_features == ["conv3", "conv4", "conv5", "pool5"]
    assert model.backbone.strides == {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}
    spread_outputs(model, two_images())
    with torch.no_grad():
        out = model.eval()(two_images())
    for det, img in zip(out, two_images(), strict=True):
        assert_valid_detections(det, img, min_count=10)


def test_zero_detections_after_threshold():
    model = small_model(
        ROOT / "configs/coco/faster_rcnn_R18_C4_1x.yaml", "model.roi_heads.score_thresh=1.0"
    )
    assert model.roi_heads.score_thresh == 1.0
    model.roi_heads.score_thresh = 0.05
    spread_outputs(model, two_images())
    with torch.no_grad():
        assert all(len(d["boxes"]) > 0 for d in model.eval()(two_images()))  # not vacuous
        model.roi_heads.score_thresh = 1.0
        out = model(two_images())
    for det in out:
        assert det["boxes"].shape == (0, 4) and det["scores"].shape == (0,)
        assert det["labels"].dtype == torch.int64


def test_one_tiny_and_one_large_image():
    model = small_model(
        ROOT / "configs/coco/faster_rcnn_R18_C4_1x.yaml",
        "input.min_size_test=200",
        "input.max_size_test=400",
    ).eval()
    images = [torch.rand(3, 12, 9), torch.rand(3, 300, 420)]
    spread_outputs(model, images)
    with torch.no_grad():
        out = model(images)
    for det, img in zip(out, images, strict=True):
        assert_valid_detections(det, img)
    # boxes of the 12x9 image, found at 267x200, are scaled back to it (not shrunk further)
    assert out[0]["boxes"][:, 2].max() > 6 and out[0]["boxes"][:, 3].max() > 8
    model.train()
    losses = model(images, [two_targets()[1], two_targets()[0]])
    assert all(torch.isfinite(v) for v in losses.values())


def test_degenerate_proposals_are_removed():
    model = small_model(ROOT / "configs/coco/faster_rcnn_R18_C4_1x.yaml")
    spread_outputs(model, two_images())
    with torch.no_grad():
        assert all(len(d["boxes"]) > 0 for d in model.eval()(two_images()))  # not vacuous
        # huge negative dw/dh: every proposal collapses below min_box_size
        model.rpn.head.deltas.bias[2::4] = -50.0
        model.rpn.head.deltas.bias[3::4] = -50.0
        out = model(two_images())
    assert all(len(d["boxes"]) == 0 for d in out)
    model.train()
    losses = model(two_images(), two_targets())  # ground truth still gives RoIs in training
    assert all(torch.isfinite(v) for v in losses.values())


def test_bad_inputs_have_clear_errors():
    model = small_model(ROOT / "configs/coco/faster_rcnn_R18_C4_1x.yaml")
    with pytest.raises(TypeError, match="divide uint8 images by 255"):
        model.eval()([torch.zeros(3, 32, 32, dtype=torch.uint8)])
    with pytest.raises(ValueError, match="expected a 3xHxW tensor"):
        model.eval()([torch.zeros(1, 3, 32, 32)])
    with pytest.raises(ValueError, match="one target dict per image"):
        model.train()(two_images())
    bad = [{"boxes": torch.tensor([[10.0, 10.0, 5.0, 20.0]]), "labels": torch.tensor([1])}] * 2
    with pytest.raises(ValueError, match="no positive width/height"):
        model.train()(two_images(), bad)


def test_architecture_mismatches_are_config_errors():
    base = ROOT / "configs/coco/faster_rcnn_R50_C4_1x.yaml"
    with pytest.raises(ConfigError, match="res5 is the ResNet C4 design"):
        small_model(base, "model.backbone.name=vgg16")
    with pytest.raises(ConfigError, match="anchors.sizes has 1 level"):
        small_model(base, "model.neck.name=fpn", "model.roi_heads.box_head=2fc")
    vgg = ROOT / "configs/coco/faster_rcnn_VGG16_1x.yaml"
    with pytest.raises(ConfigError, match="vgg_fc pools 512-channel conv5_3 features"):
        small_model(vgg, "model.neck.name=fpn", "model.anchors.sizes=[[32],[64],[128],[256],[512]]")


def test_bgr_caffe_mode_and_autocast_and_channels_last():
    cfg = ROOT / "configs/coco/faster_rcnn_R18_C4_1x.yaml"
    caffe = small_model(
        cfg,
        "model.input_format=BGR",
        "model.pixel_mean=[103.53, 116.28, 123.675]",
        "model.pixel_std=[1.0, 1.0, 1.0]",
    ).eval()
    img = two_images()
    batch, _ = caffe.preprocess(img)
    expected = img[0].flip(0) * 255 - torch.tensor([103.53, 116.28, 123.675])[:, None, None]
    # min_size_test=96 is the short side of image 0: the eval resize keeps it as it is
    torch.testing.assert_close(batch[0, :, :96, :128], expected)
    model = spread_outputs(small_model(cfg), img)
    with torch.no_grad():
        ref = model(img)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(img)
        cl = model.to(memory_format=torch.channels_last)(img)
    assert len(low) == 2
    for image, a, b, c in zip(img, ref, cl, low, strict=True):
        assert_valid_detections(a, image, min_count=10)
        assert_same_detections(a, b, box_atol=5e-3, score_atol=1e-4)  # measured: 6e-4, 1e-6
        # bf16 features give other detections, but valid ones, in fp32
        assert_valid_detections(c, image)


def test_checkpoint_round_trip_and_errors(tmp_path):
    cfg = load_config(ROOT / "configs/coco/faster_rcnn_R18_C4_1x.yaml", SMALL)
    model = build_model(cfg, class_names=[f"c{i}" for i in range(80)])
    spread_outputs(model, two_images())
    path = save_atomic(
        model_checkpoint(model.state_dict(), cfg, model.class_names), tmp_path / "m.pth"
    )
    loaded = load_model(path)
    assert loaded.cfg == cfg and loaded.class_names == model.class_names and not loaded.training
    with torch.no_grad():
        for a, b in zip(model(two_images()), loaded(two_images()), strict=True):
            assert len(a["boxes"]) > 0
            for key in ("boxes", "scores", "labels"):
                assert torch.equal(a[key], b[key]), key
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_model(tmp_path / "nope.pth")
    torch.save({"weights": {}}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not a resdet checkpoint"):
        load_model(tmp_path / "other.pth")
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"model": Payload(), "config": {}}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="weights_only=True"):
        load_model(tmp_path / "evil.pth")
    assert not marker.exists()
    # overrides apply on top of the embedded config
    assert load_model(path, ["model.roi_heads.score_thresh=0.5"]).roi_heads.score_thresh == 0.5
