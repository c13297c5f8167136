"""Anchors, box coding, matching, sampling, pooling and FPN against torchvision's pieces."""

from collections import OrderedDict

import pytest
import torch
from torchvision.models.detection import _utils as tv_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign, roi_pool
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.poolers import LevelMapper

from backbones import build_backbone
from backbones.fpn import FPN
from detection.modeling.anchors import AnchorGenerator
from detection.modeling.box_coder import BoxCoder
from detection.modeling.matcher import Matcher
from detection.modeling.poolers import RoIPooler, assign_levels
from detection.modeling.sampler import sample_balanced


def random_boxes(n: int, size: float = 300.0, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * size
    wh = torch.rand(n, 2, generator=g) * size / 2 + 8
    return torch.cat([xy, xy + wh], dim=1)


@pytest.mark.parametrize(
    "sizes, grids",
    [
        ([[32, 64, 128, 256, 512]], [(20, 25)]),  # C4 / VGG-16: 15 anchors at stride 16
        ([[32], [64], [128], [256], [512]], [(80, 96), (40, 48), (20, 24), (10, 12), (5, 6)]),
    ],
)
def test_anchors_equal_torchvision(sizes, grids):
    ratios = [0.5, 1.0, 2.0]
    stride0 = 16 if len(sizes) == 1 else 4
    padded = (grids[0][0] * stride0, grids[0][1] * stride0)
    feats = [torch.zeros(1, 8, h, w) for h, w in grids]
    ours = torch.cat(AnchorGenerator(sizes, ratios)(feats, padded))
    tv = TVAnchorGenerator(tuple(tuple(s) for s in sizes), ((0.5, 1.0, 2.0),) * len(sizes))
    theirs = tv(ImageList(torch.zeros(1, 3, *padded), [padded]), feats)[0]
    assert torch.equal(ours, theirs)
    per_location = 15 if len(sizes) == 1 else 3
    assert ours.shape[0] == sum(h * w for h, w in grids) * per_location


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_box_coder_equals_torchvision(weights):
    refs, gts = random_boxes(500, seed=1), random_boxes(500, seed=2)
    ours, theirs = BoxCoder(weights), tv_utils.BoxCoder(weights)
    deltas = ours.encode(gts, refs)
    assert torch.equal(deltas, theirs.encode_single(gts, refs))
    many = torch.randn(500, 3 * 4) * 3  # 3 classes, large dw/dh hit the clamp
    assert torch.equal(ours.decode(many, refs), theirs.decode(many, [refs]))
    near = refs + torch.randn(500, 4).clamp(-2, 2)  # within the dw/dh clamp: exact round trip
    back = ours.decode(ours.encode(near, refs), refs)[:, 0]
    torch.testing.assert_close(back, near, atol=1e-3, rtol=1e-5)


@pytest.mark.parametrize("low_quality", [True, False])
def test_matcher_equals_torchvision(low_quality):
    torch.manual_seed(0)
    iou = torch.rand(7, 300) * 0.9
    iou[2, 5] = iou[2].max()  # a tie for a ground truth's best match
    ours = Matcher(0.3, 0.7, allow_low_quality_matches=low_quality)(iou)
    theirs = tv_utils.Matcher(0.7, 0.3, allow_low_quality_matches=low_quality)(iou)
    assert torch.equal(ours, theirs)
    assert set(ours.unique().tolist()) <= {-2, -1, *range(7)}


def test_sampler():
    labels = torch.tensor([1] * 100 + [0] * 500 + [-1] * 100)
    pos, neg = sample_balanced(labels, 256, 0.25)
    assert len(pos) == 64 and len(neg) == 192
    assert (labels[pos] == 1).all() and (labels[neg] == 0).all()
    assert len(set(pos.tolist())) == 64
    pos, neg = sample_balanced(labels[50:], 256, 0.25)  # few positives: negatives fill up
    assert len(pos) == 50 and len(neg) == 206
    pos, neg = sample_balanced(labels, 10_000, 0.5)  # takes every candidate
    assert len(pos) == 100 and len(neg) == 500
    pos, neg = sample_balanced(torch.tensor([0, 0, -1]), 256, 0.5)  # no positive
    assert len(pos) == 0 and len(neg) == 2


def test_level_assignment_equals_torchvision():
    boxes = random_boxes(1000, size=800, seed=3)
    ours = assign_levels(boxes, 2, 5)
    assert torch.equal(ours, LevelMapper(2, 5)([boxes]))


def test_multilevel_roi_align_equals_torchvision():
    g = torch.Generator().manual_seed(0)
    feats = OrderedDict(
        (str(i), torch.randn(2, 4, 128 // 2**i, 160 // 2**i, generator=g)) for i in range(4)
    )
    boxes = [random_boxes(40, size=400, seed=4), random_boxes(25, size=400, seed=5)]
    sizes = [(512, 640), (500, 600)]
    theirs = MultiScaleRoIAlign(list(feats), 7, 2)(feats, boxes, sizes)
    pooler = RoIPooler("roi_align", 7, [4, 8, 16, 32], sampling_ratio=2)
    assert torch.equal(pooler(list(feats.values()), boxes), theirs)


def test_single_level_roi_pool():
    x = torch.randn(2, 8, 20, 30)
    boxes = [random_boxes(10, size=200, seed=6), random_boxes(3, size=200, seed=7)]
    out = RoIPooler("roi_pool", 14, [16])([x], boxes)
    rois = torch.cat(
        [torch.cat([torch.full((len(b), 1), float(i)), b], 1) for i, b in enumerate(boxes)]
    )
    assert torch.equal(out, roi_pool(x, rois, (14, 14), 1 / 16))
    assert out.shape == (13, 8, 14, 14)
    empty = RoIPooler("roi_align", 7, [16])([x], [torch.zeros(0, 4), torch.zeros(0, 4)])
    assert empty.shape == (0, 8, 7, 7)


def test_fpn_equals_torchvision():
    body = build_backbone("resnet18", out_features=["res2", "res3", "res4", "res5"]).eval()
    ours = FPN(body, ["res2", "res3", "res4", "res5"], 32).eval()
    assert ours.out_features == ["p2", "p3", "p4", "p5", "p6"]
    assert ours.strides == {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}
    tv = FeaturePyramidNetwork([64, 128, 256, 512], 32, extra_blocks=LastLevelMaxPool()).eval()
    with torch.no_grad():
        for i in range(4):
            tv.inner_blocks[i][0].weight.copy_(ours.lateral[i].weight)
            tv.inner_blocks[i][0].bias.copy_(ours.lateral[i].bias)
            tv.layer_blocks[i][0].weight.copy_(ours.output[i].weight)
            tv.layer_blocks[i][0].bias.copy_(ours.output[i].bias)
        x = torch.randn(1, 3, 96, 128)
        feats = body(x)
        theirs = tv(OrderedDict((k, feats[k]) for k in ["res2", "res3", "res4", "res5"]))
        mine = ours(x)
    for a, b in zip(mine.values(), theirs.values(), strict=True):
        assert torch.equal(a, b)


def test_rpn_head_runs_its_two_1x1_convs_as_one():
    """One stacked conv gives what the objectness and delta convs give apart; the keys (which
    checkpoints and the torchvision converter use) are the two modules'."""
    from detection.modeling.rpn import RPNHead

    torch.manual_seed(0)
    head = RPNHead(16, 3)
    for p in head.parameters():
        torch.nn.init.normal_(p, std=0.1)
    assert sorted(head.state_dict()) == [
        f"{m}.{p}" for m in ("conv", "deltas", "objectness") for p in ("bias", "weight")
    ]
    features = [torch.randn(2, 16, 12, 10), torch.randn(2, 16, 6, 5)]
    logits, deltas = head(features)
    for f, lg, d in zip(features, logits, deltas, strict=True):
        t = torch.relu(head.conv(f))
        torch.testing.assert_close(lg, head.objectness(t), atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(d, head.deltas(t), atol=1e-6, rtol=1e-5)
    sum(lg.sum() + d.square().sum() for lg, d in zip(logits, deltas, strict=True)).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
