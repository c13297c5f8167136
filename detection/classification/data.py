"""Classification datasets (ImageFolder layout, CIFAR-10 batches, the embedded shapes set), their
augmentation and their loaders.

A dataset item is (uint8 CHW image tensor, label); the main process converts and normalises the
batch. Training items are drawn by detection.data's TrainingBatchSampler as (index, seed): each
image's augmentation is a function of its seed, so a resumed run sees the same crops and flips.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader

from detection.data.samplers import InferenceSampler, TrainingBatchSampler

from .cifar import read_cifar10
from .config import ClassifierConfig, ClassifierInputConfig
from .shapes_cls import ensure_shapes_cls

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


class ImageReadError(OSError):
    """An image file cannot be decoded."""


# -- storage -----------------------------------------------------------------------------------


def scan_image_folder(split_dir: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(paths as a bytes array, labels, sorted class names) of `split_dir/<class>/<image>`.

    Paths are kept in one numpy array, not a list of str: with ImageNet's 1.28M files the
    loader workers would otherwise copy every object they touch (copy-on-write of refcounts).
    """
    if not split_dir.is_dir():
        raise FileNotFoundError(
            f"image folder not found: {split_dir}; the ImageFolder layout is "
            "root/<split>/<class>/*.jpg (data.root, data.train_split, data.val_split)"
        )
    classes = sorted(e.name for e in os.scandir(split_dir) if e.is_dir())
    if not classes:
        raise ValueError(f"{split_dir} has no class folders; expected {split_dir}/<class>/*.jpg")
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(
            e.path
            for e in os.scandir(split_dir / name)
            if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)
        )
        if not files:
            raise ValueError(
                f"class folder {split_dir / name} has no images ({', '.join(IMAGE_EXTENSIONS)}); "
                "add images or remove the folder"
            )
        paths.extend(os.fsencode(f) for f in files)
        labels.extend([label] * len(files))
    return np.array(paths), np.array(labels, np.int64), classes


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """An image file as an HxWx3 uint8 RGB array."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ImageReadError(
            f"cannot decode image {os.fsdecode(path)}: {e}; remove or replace the file"
        ) from e


@dataclass
class ImageSource:
    """A split's images: file paths (decoded on demand) or an in-memory uint8 array."""

    labels: np.ndarray
    class_names: list[str]
    paths: np.ndarray | None = None
    images: np.ndarray | None = None  # [N, H, W, 3]
    where: str = ""

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, index: int) -> np.ndarray:
        """Image `index` as HxWx3 uint8 RGB."""
        if self.images is not None:
            return self.images[index]
        return read_rgb(os.fsdecode(self.paths[index]))


def image_source(cfg: ClassifierConfig, split: str) -> ImageSource:
    """The "train" or "val" images of cfg.data (the shapes set is generated on first use)."""
    d = cfg.data
    if d.dataset == "cifar10":
        images, labels, names = read_cifar10(d.root, "train" if split == "train" else "test")
        return ImageSource(labels, names, images=images, where=f"{d.root} ({split})")
    if d.dataset == "shapes_cls":
        root = Path(d.root) if d.root else ensure_shapes_cls()
        folder = root / split
    else:
        root = Path(d.root)
        if not root.is_dir():
            raise FileNotFoundError(f"data.root={root} does not exist (or is not a folder)")
        folder = root / (d.train_split if split == "train" else d.val_split)
    paths, labels, names = scan_image_folder(folder)
    return ImageSource(labels, names, paths=paths, where=str(folder))


# -- augmentation ------------------------------------------------------------------------------


def resize_shorter(img: np.ndarray, side: int) -> np.ndarray:
    """Resize so that the shorter side is `side` (area filter when shrinking)."""
    h, w = img.shape[:2]
    if min(h, w) == side:
        return img
    scale = side / min(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(img, size, interpolation=interp)


def _pad_to(img: np.ndarray, side: int) -> np.ndarray:
    """Zero-pad (bottom and right) so that both sides are at least `side`."""
    h, w = img.shape[:2]
    if h >= side and w >= side:
        return img
    return cv2.copyMakeBorder(img, 0, max(0, side - h), 0, max(0, side - w), cv2.BORDER_CONSTANT)


def train_transform(img: np.ndarray, i: ClassifierInputConfig, seed: int) -> np.ndarray:
    """Scale augmentation, padding, random crop and flip, all drawn from `seed`."""
    rng = np.random.default_rng(seed)
    if i.train_scale:
        img = resize_shorter(img, int(rng.integers(i.train_scale[0], i.train_scale[1] + 1)))
    if i.pad:
        p = i.pad
        img = cv2.copyMakeBorder(img, p, p, p, p, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    img = _pad_to(img, i.crop)
    h, w = img.shape[:2]
    y, x = int(rng.integers(0, h - i.crop + 1)), int(rng.integers(0, w - i.crop + 1))
    img = img[y : y + i.crop, x : x + i.crop]
    if i.flip and rng.random() < 0.5:
        img = img[:, ::-1]
    return img


def _five_crops(img: np.ndarray, c: int) -> list[np.ndarray]:
    """Top-left, top-right, bottom-left, bottom-right and centre crops (torchvision's order and
    centre rounding)."""
    h, w = img.shape[:2]
    y, x = int(round((h - c) / 2.0)), int(round((w - c) / 2.0))
    corners = [(0, 0), (0, w - c), (h - c, 0), (h - c, w - c), (y, x)]
    return [img[a : a + c, b : b + c] for a, b in corners]


def eval_crops(img: np.ndarray, i: ClassifierInputConfig) -> list[np.ndarray]:
    """The centre crop, or the ten crops: the five crops of the image and of its mirror image
    (torchvision's TenCrop)."""
    if i.test_scale is not None:
        img = resize_shorter(img, i.test_scale)
    img = _pad_to(img, i.test_crop)
    if not i.ten_crop:
        return _five_crops(img, i.test_crop)[-1:]
    return _five_crops(img, i.test_crop) + _five_crops(img[:, ::-1], i.test_crop)


def _chw(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))


class ClassificationDataset(torch.utils.data.Dataset):
    """(uint8 image tensor, label) items of an ImageSource: [3, crop, crop] for training (items
    are (index, augmentation seed)), [crops, 3, c, c] for testing (items are indices)."""

    def __init__(self, source: ImageSource, cfg: ClassifierInputConfig, *, train: bool) -> None:
        self.source = source
        self.cfg = cfg
        self.train = train
        self.class_names = source.class_names

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, item) -> tuple[torch.Tensor, int]:
        if self.train:
            index, seed = item
            img = train_transform(self.source.image(index), self.cfg, seed)
            return _chw(img), int(self.source.labels[index])
        crops = eval_crops(self.source.image(item), self.cfg)
        return torch.stack([_chw(c) for c in crops]), int(self.source.labels[item])


def build_datasets(cfg: ClassifierConfig) -> tuple[ClassificationDataset, ClassificationDataset]:
    """The training and validation datasets; the classes must be the same in both."""
    train, val = image_source(cfg, "train"), image_source(cfg, "val")
    if val.class_names != train.class_names:
        only_val = sorted(set(val.class_names) - set(train.class_names))
        only_train = sorted(set(train.class_names) - set(val.class_names))
        raise ValueError(
            f"the validation classes ({val.where}) differ from the training classes "
            f"({train.where}): only in validation {only_val[:5]}, only in training "
            f"{only_train[:5]}; both splits need the same class folders"
        )
    return (
        ClassificationDataset(train, cfg.input, train=True),
        ClassificationDataset(val, cfg.input, train=False),
    )


# -- loaders -----------------------------------------------------------------------------------


def collate(batch: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(images [N, ...] uint8, labels [N] int64)."""
    images, labels = zip(*batch, strict=True)
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64)


def _worker_init(worker_id: int) -> None:
    # the workers are the parallelism: nested thread pools only oversubscribe the cores
    torch.set_num_threads(1)
    cv2.setNumThreads(0)


def _loader(dataset: ClassificationDataset, workers: int, **sampling) -> DataLoader:
    return DataLoader(
        dataset,
        collate_fn=collate,
        num_workers=workers,
        worker_init_fn=_worker_init if workers > 0 else None,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0,
        **sampling,
    )


def train_loader(
    cfg: ClassifierConfig,
    dataset: ClassificationDataset,
    *,
    rank: int = 0,
    world_size: int = 1,
    start_iter: int = 0,
) -> DataLoader:
    """Endless training batches for one rank: solver.ims_per_batch / world_size images each, a
    function of (seed, rank, world_size, iteration), so `start_iter=k` resumes at batch k."""
    sampler = TrainingBatchSampler(
        len(dataset),
        cfg.solver.ims_per_batch // world_size,
        seed=cfg.seed,
        rank=rank,
        world_size=world_size,
        start_iter=start_iter,
    )
    return _loader(dataset, cfg.data.num_workers, batch_sampler=sampler)


def val_loader(
    cfg: ClassifierConfig, dataset: ClassificationDataset, *, rank: int = 0, world_size: int = 1
) -> DataLoader:
    """Every validation image once over all ranks (rank r takes the r-th contiguous shard)."""
    sampler = InferenceSampler(len(dataset), rank=rank, world_size=world_size)
    return _loader(
        dataset, cfg.data.num_workers, sampler=sampler, batch_size=cfg.test.ims_per_batch
    )
