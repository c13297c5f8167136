"""Classification data: the embedded shapes set, the ImageFolder layout, crops and flips."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from classification_helpers import write_image_folder

from detection.classification import shapes_cls
from detection.classification.config import ClassifierInputConfig, load_classifier_config
from detection.classification.data import (
    build_datasets,
    eval_crops,
    scan_image_folder,
    train_transform,
)
from detection.data.shapes import CLASSES


@pytest.fixture
def small_splits(monkeypatch):
    monkeypatch.setattr(shapes_cls, "SPLITS", {"train": (40, 11), "val": (15, 12)})


def _files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


def test_shapes_set_is_deterministic_in_imagefolder_layout(tmp_path, small_splits):
    a = shapes_cls.ensure_shapes_cls(tmp_path / "a")
    b = shapes_cls.generate_shapes_cls(tmp_path / "b")
    assert _files(a) == _files(b) and len(_files(a)) == 55
    for split, n in (("train", 40), ("val", 15)):
        paths, labels, names = scan_image_folder(a / split)
        assert names == sorted(CLASSES) and len(paths) == n
        assert np.bincount(labels).tolist() == [n // 5] * 5  # balanced
    img, label = shapes_cls.render_crop(11, 7)
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8 and label == 7 % 5
    written = (a / "train" / CLASSES[label] / "000007.png").read_bytes()
    decoded = cv2.imdecode(np.frombuffer(written, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    assert np.array_equal(decoded, img)  # lossless
    assert not [p for p in a.iterdir() if p.name.startswith(".tmp")]
    assert not np.array_equal(shapes_cls.render_crop(12, 7)[0], img)  # the seed matters


def test_shapes_set_is_regenerated_for_another_version(tmp_path, small_splits, monkeypatch):
    base = shapes_cls.ensure_shapes_cls(tmp_path)
    stamp = (base / "train" / "star" / "000003.png").stat().st_mtime_ns
    assert shapes_cls.ensure_shapes_cls(tmp_path) == base  # current: kept
    assert (base / "train" / "star" / "000003.png").stat().st_mtime_ns == stamp
    monkeypatch.setattr(shapes_cls, "GENERATOR_VERSION", shapes_cls.GENERATOR_VERSION + 1)
    (base / "train" / "star" / "stale.png").write_bytes(b"old")
    shapes_cls.ensure_shapes_cls(tmp_path)
    assert not (base / "train" / "star" / "stale.png").exists()
    assert len(_files(base)) == 55


def test_ten_crops_equal_torchvisions():
    img = np.random.default_rng(0).integers(0, 256, (41, 57, 3), dtype=np.uint8)
    cfg = ClassifierInputConfig(test_scale=None, test_crop=24, ten_crop=True)
    ours = eval_crops(img, cfg)
    theirs = TF.ten_crop(torch.from_numpy(img).permute(2, 0, 1), [24, 24])
    assert len(ours) == len(theirs) == 10
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(torch.from_numpy(a.copy()).permute(2, 0, 1), b)
    centre = eval_crops(img, ClassifierInputConfig(test_scale=None, test_crop=24))
    assert len(centre) == 1
    expected = TF.center_crop(torch.from_numpy(img).permute(2, 0, 1), [24, 24])
    assert torch.equal(torch.from_numpy(centre[0].copy()).permute(2, 0, 1), expected)


def test_training_crops_follow_the_seed_and_the_config():
    img = np.arange(40 * 60 * 3, dtype=np.int64).reshape(40, 60, 3).astype(np.uint8)
    cfg = ClassifierInputConfig(train_scale=[48, 64], crop=32)
    a, b = train_transform(img, cfg, seed=5), train_transform(img, cfg, seed=5)
    assert a.shape == (32, 32, 3) and np.array_equal(a, b)
    seeds = range(40)
    crops = [train_transform(img, cfg, s) for s in seeds]
    assert len({c.tobytes() for c in crops}) > 30  # scales, positions and flips vary
    # CIFAR's augmentation: 4 zero pixels on each side, a 32 crop: offsets 0..8, both flips
    cifar = ClassifierInputConfig(train_scale=[], pad=4, crop=32)
    small = np.full((32, 32, 3), 200, np.uint8)
    small[:, :16] = 100  # left half darker, to see flips
    out = [train_transform(small, cifar, s) for s in range(200)]
    assert all(o.shape == (32, 32, 3) for o in out)
    zero_rows = {int((o == 0).all(axis=(1, 2)).sum()) for o in out}
    assert zero_rows == set(range(5))  # 0..4 padding rows visible
    flipped = sum(int(o[16, 4:12].mean() > o[16, 20:28].mean()) for o in out)
    assert 60 < flipped < 140


def test_image_folder_errors_name_the_folder(tmp_path):
    root = write_image_folder(tmp_path / "ok")
    cfg = load_classifier_config(None, [f"data.root={root}"])
    train, val = build_datasets(cfg)
    assert train.class_names == val.class_names == ["cat", "dog", "fox"]
    assert len(train) == 18 and len(val) == 6
    with pytest.raises(FileNotFoundError, match="image folder not found: .*missing"):
        build_datasets(
            load_classifier_config(None, [f"data.root={root}", "data.val_split=missing"])
        )
    empty = root / "train" / "emu"
    empty.mkdir()
    with pytest.raises(ValueError, match=f"class folder {empty} has no images"):
        build_datasets(cfg)
    (empty / "a.png").write_bytes((root / "train" / "cat" / "000.png").read_bytes())
    with pytest.raises(ValueError, match=r"only in training \['emu'\]"):
        build_datasets(cfg)
