"""Training and test transforms: boxes follow the object pixels through resize and flip."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest
import torch
from PIL import Image

from detection.config import load_config
from detection.data import (
    COCODataset,
    DetectionTransform,
    build_transforms,
    resize_test,
    train_augmentations,
)
from detection.data.transforms import resized_shape

COLORS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], np.uint8)


def scene(rng: np.random.Generator):
    """A black image with up to four solid rectangles of distinct colours: (image, boxes, colour
    index of each box); the object pixels are known exactly."""
    h, w = int(rng.integers(60, 200)), int(rng.integers(60, 200))
    img = np.zeros((h, w, 3), np.uint8)
    boxes, colors = [], []
    for c in rng.permutation(len(COLORS))[: rng.integers(1, 5)]:
        bw, bh = int(rng.integers(12, w // 2)), int(rng.integers(12, h // 2))
        x, y = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
        # later rectangles overwrite earlier ones: keep them apart by re-drawing nothing over
        if img[y : y + bh, x : x + bw].any():
            continue
        img[y : y + bh, x : x + bw] = COLORS[c]
        boxes.append([x, y, x + bw, y + bh])
        colors.append(int(c))
    return img, np.array(boxes, np.float32).reshape(-1, 4), np.array(colors)


def pixel_box(image: torch.Tensor, color: np.ndarray) -> np.ndarray:
    """Tight xyxy box around the pixels close to `color` (in the transformed image)."""
    arr = (image.permute(1, 2, 0).numpy() * 255).astype(np.float32)
    mask = np.abs(arr - color).max(axis=2) < 60
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def test_multiscale_resize_and_flip_keep_boxes_on_their_objects():
    min_sizes, max_size = [80, 120, 160], 220
    transform = DetectionTransform(train_augmentations(min_sizes, max_size, flip=True))
    rng = np.random.default_rng(0)
    flips = sizes = 0
    seen_sizes, seen_flip = set(), set()
    for seed in range(40):
        img, boxes, colors = scene(rng)
        image, out_boxes, kept = transform(img, boxes, seed=seed)
        h, w = image.shape[1:]
        assert (h, w) in {resized_shape(*img.shape[:2], s, max_size) for s in min_sizes}
        assert min(h, w) in min_sizes or max(h, w) <= max_size
        seen_sizes.add(min(h, w))
        assert out_boxes.dtype == np.float32 and len(out_boxes) == len(kept) == len(boxes)
        assert (out_boxes[:, :2] >= 0).all() and (out_boxes[:, 2] <= w).all()
        assert (out_boxes[:, 3] <= h).all()
        # labels travel with boxes: each box sits on the pixels of its own colour
        for box, k in zip(out_boxes, kept, strict=True):
            np.testing.assert_allclose(box, pixel_box(image, COLORS[colors[k]]), atol=1.5)
        scale = w / img.shape[1]
        flipped = abs(out_boxes[0, 0] - boxes[0, 0] * scale) > 1.5
        seen_flip.add(bool(flipped))
        flips += flipped
        sizes += 1
    assert seen_flip == {True, False} and 5 < flips < 35
    assert len(seen_sizes) > 1


def test_vertical_flip_keeps_boxes_on_their_objects():
    transform = DetectionTransform(train_augmentations([100], 400, flip=False, vflip=True))
    rng = np.random.default_rng(3)
    seen_flip = []
    for seed in range(30):
        img, boxes, colors = scene(rng)
        image, out_boxes, kept = transform(img, boxes, seed=seed)
        h, w = image.shape[1:]
        assert len(out_boxes) == len(boxes)
        for box, k in zip(out_boxes, kept, strict=True):
            np.testing.assert_allclose(box, pixel_box(image, COLORS[colors[k]]), atol=1.5)
        sx, sy = w / img.shape[1], h / img.shape[0]
        # x never moves without the horizontal flip; y mirrors about the middle when flipped
        np.testing.assert_allclose(out_boxes[:, 0::2], boxes[:, 0::2] * sx, atol=1.5)
        mirrored = h - boxes[:, [3, 1]] * sy
        seen_flip.append(bool(np.allclose(out_boxes[:, 1::2], mirrored, atol=1.5)))
        if not seen_flip[-1]:
            np.testing.assert_allclose(out_boxes[:, 1::2], boxes[:, 1::2] * sy, atol=1.5)
    assert 5 < sum(seen_flip) < 25


def test_same_seed_same_augmentation():
    transform = DetectionTransform(train_augmentations([64, 96, 128], 200, photometric=True))
    img, boxes, _ = scene(np.random.default_rng(1))
    a = transform(img, boxes, seed=7)
    b = transform(img, boxes, seed=7)
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    others = [transform(img, boxes, seed=s)[0] for s in range(8)]
    assert len({(o.shape, float(o.sum())) for o in others}) > 1


def test_resize_test_is_deterministic_and_eval_transform_keeps_the_original():
    img, boxes, _ = scene(np.random.default_rng(2))
    t = resize_test(100, 150)
    out1, b1, _ = t(img, boxes)
    out2, b2, _ = t(img, boxes)
    assert torch.equal(out1, out2) and np.array_equal(b1, b2)
    assert tuple(out1.shape[1:]) == resized_shape(*img.shape[:2], 100, 150)
    cfg = load_config(None, ["input.min_size_train=[32]"])
    image, out_boxes, _ = build_transforms(cfg, train=False)(img, boxes)
    torch.testing.assert_close(image, torch.from_numpy(img).permute(2, 0, 1).float() / 255)
    np.testing.assert_array_equal(out_boxes, boxes)


def test_build_transforms_follows_the_config():
    cfg = load_config(None, ["input.min_size_train=[50]", "input.max_size_train=60"])
    img = np.zeros((100, 300, 3), np.uint8)
    image, _, _ = build_transforms(cfg, train=True)(img, np.zeros((0, 4)), seed=0)
    assert tuple(image.shape[1:]) == (20, 60)  # the 60 cap wins over the 50 shortest side
    with pytest.raises(ValueError, match="positive sizes"):
        build_transforms(load_config(None, ["input.min_size_train=[0]"]), train=True)


def test_image_whose_boxes_all_vanish(tmp_path, coco_writer):
    Image.new("RGB", (50, 40), (10, 20, 30)).save(tmp_path / "a.png")
    ann = coco_writer(
        tmp_path / "ann.json",
        [{"id": 1, "file_name": "a.png", "width": 50, "height": 40}],
        [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [30, 25, 10, 10], "iscrowd": 0}],
        [{"id": 1, "name": "thing"}],
    )
    crop = DetectionTransform([A.Crop(x_min=0, y_min=0, x_max=20, y_max=20)])
    ds = COCODataset(ann, tmp_path, train=True, transform=crop)
    image, target = ds[0]
    assert image.shape == (3, 20, 20)
    assert target["boxes"].shape == (0, 4) and target["boxes"].dtype == torch.float32
    assert target["labels"].shape == (0,) and target["labels"].dtype == torch.int64
