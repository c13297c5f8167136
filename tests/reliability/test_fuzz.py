"""Property tests (hypothesis): box coding, transforms, collate + model, config overrides.
(The matcher's and the sampler's are in tests/modeling/test_invariants.py.)"""

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detection.config import ConfigError, load_config
from detection.data import DetectionTransform, collate, train_augmentations
from detection.modeling import build_model
from detection.modeling.box_coder import DEFAULT_CLAMP, BoxCoder

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


WEIGHTS = st.sampled_from([(1, 1, 1, 1), (10, 10, 5, 5), (2, 3, 0.5, 7)])


@settings(max_examples=200, deadline=None)
@given(data=st.data(), weights=WEIGHTS)
def test_box_encode_decode_round_trip(data, weights):
    refs = data.draw(boxes())
    targets = data.draw(boxes(n=st.just(len(refs))))
    coder = BoxCoder(weights, clamp=float("inf"))
    decoded = coder.decode(coder.encode(targets, refs), refs)[:, 0]
    torch.testing.assert_close(decoded, targets, rtol=1e-6, atol=1e-6)


def deltas_for(data, n, dw_dh):
    """[n, 4] deltas: dx, dy within 5 (weighted) reference sizes; dw, dh drawn from `dw_dh`."""
    shift = st.floats(-5, 5, width=32)
    rows = [
        [data.draw(shift), data.draw(shift), data.draw(dw_dh), data.draw(dw_dh)] for _ in range(n)
    ]
    return torch.tensor(rows, dtype=torch.float32)


@settings(max_examples=100, deadline=None)
@given(data=st.data(), weights=WEIGHTS)
def test_decode_clamps_dw_dh_so_boxes_stay_finite(data, weights):
    """A box grows at most exp(clamp) times, however large the predicted dw/dh (an untrained
    or diverging head); it shrinks without bound. Centres move by dx, dy."""
    refs = data.draw(boxes()).float()
    huge = st.floats(-200, 1e30) | st.sampled_from([float("inf"), 20.0, 1e4])
    deltas = deltas_for(data, len(refs), huge)
    out = BoxCoder(weights).decode(deltas, refs)
    assert out.shape == (len(refs), 1, 4)
    out = out[:, 0]
    assert torch.isfinite(out).all()
    wx, wy, ww, wh = weights
    ref_wh = refs[:, 2:] - refs[:, :2]
    out_wh = out[:, 2:] - out[:, :2]
    growth = torch.exp(torch.clamp(deltas[:, 2:] / torch.tensor([ww, wh]), max=DEFAULT_CLAMP))
    torch.testing.assert_close(out_wh, ref_wh * growth, atol=1e-2, rtol=1e-4)
    assert (out_wh <= ref_wh * math.exp(DEFAULT_CLAMP) * 1.0001).all()
    centre = 0.5 * (out[:, :2] + out[:, 2:])
    moved = refs[:, :2] + 0.5 * ref_wh + deltas[:, :2] / torch.tensor([wx, wy]) * ref_wh
    torch.testing.assert_close(centre, moved, atol=1e-2, rtol=1e-5)


@settings(max_examples=100, deadline=None)
@given(data=st.data(), weights=WEIGHTS, k=st.integers(2, 4))
def test_decode_of_k_boxes_per_reference_decodes_each_alone(data, weights, k):
    """The RoI heads decode one box per class: [N, K*4] deltas give [N, K, 4], column j the
    decoding of deltas[:, 4j:4j+4]."""
    refs = data.draw(boxes()).float()
    deltas = torch.cat([deltas_for(data, len(refs), st.floats(-6, 6)) for _ in range(k)], 1)
    coder = BoxCoder(weights)
    out = coder.decode(deltas, refs)
    assert out.shape == (len(refs), k, 4)
    for j in range(k):
        assert torch.equal(out[:, j], coder.decode(deltas[:, 4 * j : 4 * j + 4], refs)[:, 0])


@settings(max_examples=200, deadline=None)
@given(data=st.data(), weights=WEIGHTS, shift=st.tuples(coord, coord), factor=st.floats(0.1, 10))
def test_encode_is_invariant_to_translation_and_scale(data, weights, shift, factor):
    """Deltas are relative to the reference: moving or scaling both boxes changes nothing
    (what lets one regressor serve anchors at every position and size)."""
    refs = data.draw(boxes())
    targets = data.draw(boxes(n=st.just(len(refs))))
    coder = BoxCoder(weights)
    deltas = coder.encode(targets, refs)
    move = torch.tensor([*shift, *shift], dtype=refs.dtype)
    torch.testing.assert_close(coder.encode(targets + move, refs + move), deltas)
    torch.testing.assert_close(coder.encode(targets * factor, refs * factor), deltas)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), weights=WEIGHTS)
def test_encode_inverts_decode(data, weights):
    """The other way round: deltas within the clamp come back from their decoded boxes."""
    refs = data.draw(boxes())
    limit = 0.99 * DEFAULT_CLAMP * min(weights[2:])
    deltas = deltas_for(data, len(refs), st.floats(-limit, limit)).double()
    coder = BoxCoder(weights)
    torch.testing.assert_close(coder.encode(coder.decode(deltas, refs)[:, 0], refs), deltas)


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
