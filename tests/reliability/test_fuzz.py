"""Property tests (hypothesis): box coding, IoU, transforms, collate + model, config overrides."""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torchvision.ops import box_iou

from detection.config import ConfigError, load_config
from detection.data import DetectionTransform, collate, train_augmentations
from detection.modeling import build_model
from detection.modeling.box_coder import BoxCoder

coord = st.floats(-1000, 1000, allow_nan=False, width=32)
size = st.floats(1, 500, allow_nan=False, width=32)


@st.composite
def boxes(draw, n=None):
    """Valid xyxy boxes: a corner and a positive width and height."""
    k = draw(n if n is not None else st.integers(1, 8))
    x = draw(st.lists(coord, min_size=k, max_size=k))
    y = draw(st.lists(coord, min_size=k, max_size=k))
    w = draw(st.lists(size, min_size=k, max_size=k))
    h = draw(st.lists(size, min_size=k, max_size=k))
    x, y, w, h = (torch.tensor(v, dtype=torch.float64) for v in (x, y, w, h))
    return torch.stack([x, y, x + w, y + h], 1)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), weights=st.sampled_from([(1, 1, 1, 1), (10, 10, 5, 5), (2, 3, 0.5, 7)]))
def test_box_encode_decode_round_trip(data, weights):
    refs = data.draw(boxes())
    targets = data.draw(boxes(n=st.just(len(refs))))
    coder = BoxCoder(weights, clamp=float("inf"))
    decoded = coder.decode(coder.encode(targets, refs), refs)[:, 0]
    torch.testing.assert_close(decoded, targets, rtol=1e-6, atol=1e-6)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), shift=st.tuples(coord, coord))
def test_iou_properties(data, shift):
    a, b = data.draw(boxes()), data.draw(boxes())
    iou = box_iou(a, b)
    assert ((iou >= 0) & (iou <= 1 + 1e-9)).all()
    torch.testing.assert_close(iou, box_iou(b, a).T)  # symmetric
    torch.testing.assert_close(torch.diagonal(box_iou(a, a)), torch.ones(len(a), dtype=a.dtype))
    move = torch.tensor([*shift, *shift], dtype=a.dtype)
    torch.testing.assert_close(box_iou(a + move, b + move), iou, atol=1e-6, rtol=1e-4)


@st.composite
def image_and_boxes(draw):
    h, w = draw(st.integers(8, 300)), draw(st.integers(8, 300))
    k = draw(st.integers(0, 10))
    pts = draw(
        st.lists(
            st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1), st.floats(0, 1)),
            min_size=k,
            max_size=k,
        )
    )
    out = []
    for x1, y1, x2, y2 in pts:
        x1, x2 = sorted((x1 * w, x2 * w))
        y1, y2 = sorted((y1 * h, y2 * h))
        out.append([x1, y1, max(x2, x1 + 0.5), max(y2, y1 + 0.5)])
    box_array = np.array(out, np.float32).reshape(-1, 4).clip(0, [w, h, w, h])
    return np.zeros((h, w, 3), np.uint8), box_array


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sample=image_and_boxes(),
    min_size=st.integers(16, 200),
    flip=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_transforms_keep_boxes_inside_the_image(sample, min_size, flip, seed):
    image, box_array = sample
    transform = DetectionTransform(train_augmentations([min_size], 333, flip=flip))
    tensor, out, kept = transform(image, box_array, seed=seed)
    h, w = tensor.shape[-2:]
    out = np.asarray(out).reshape(-1, 4)
    assert len(out) == len(kept) and set(np.asarray(kept).tolist()) <= set(range(len(box_array)))
    assert (out[:, 0] >= 0).all() and (out[:, 1] >= 0).all()
    assert (out[:, 2] <= w + 1e-3).all() and (out[:, 3] <= h + 1e-3).all()
    assert (out[:, 2] >= out[:, 0]).all() and (out[:, 3] >= out[:, 1]).all()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from helpers import ROOT

    cfg = load_config(
        ROOT / "configs/shapes/Base-shapes.yaml",
        [
            "model.backbone.name=resnet18",
            "model.backbone.norm=GN",
            "model.roi_heads.batch_size_per_image=16",
            "model.roi_heads.pooler_resolution=4",
            "model.rpn.post_nms_topk_train=16",
            "input.min_size_train=[64]",
            "input.max_size_train=96",
        ],
    )
    model = build_model(cfg, class_names=[f"c{i}" for i in range(5)])
    return model.train()


@st.composite
def samples(draw):
    """A training sample as the dataset yields it: no box, one box or many."""
    h, w = draw(st.integers(24, 96)), draw(st.integers(24, 96))
    k = draw(st.sampled_from([0, 1, draw(st.integers(2, 30))]))
    xy = draw(
        st.lists(st.tuples(st.integers(0, w - 4), st.integers(0, h - 4)), min_size=k, max_size=k)
    )
    out = [[x, y, min(w, x + 3 + (x * 7) % 20), min(h, y + 3 + (y * 5) % 20)] for x, y in xy]
    target = {
        "boxes": torch.tensor(out, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor([1 + i % 5 for i in range(k)], dtype=torch.int64),
        "image_id": draw(st.integers(0, 10**6)),
    }
    return torch.rand(3, h, w), target


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(samples(), min_size=1, max_size=3))
def test_collate_and_training_step_on_any_batch_composition(tiny_model, batch):
    images, targets = collate(batch)
    assert len(images) == len(targets) == len(batch)
    for (image, target), i, t in zip(batch, images, targets, strict=True):
        assert i is image and t is target
    losses = tiny_model(images, targets)
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()


KEYS = [
    "model.backbone.name",
    "solver.base_lr",
    "solver.steps",
    "input.min_size_train",
    "model.roi_heads.num_classes",
    "seed",
    "nope",
    "model",
    "solver.amp",
    "",
]
junk = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40) | (
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS), st.text(max_size=20))
)


@settings(max_examples=300, deadline=None)
@given(overrides=st.lists(junk, max_size=3))
def test_config_overrides_with_junk_give_clean_errors(overrides):
    from helpers import ROOT

    try:
        load_config(ROOT / "configs/shapes/demo_R18_C4.yaml", overrides)
    except ConfigError as e:
        assert str(e)  # a message for the user, and nothing but a ConfigError
