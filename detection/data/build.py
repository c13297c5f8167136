"""From a config to datasets and data loaders."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from detection.config import Config, ConfigError

from .catalog import resolve_dataset
from .coco import COCODataset
from .samplers import InferenceSampler, TrainingBatchSampler, aspect_groups
from .shapes import SHAPES_DATASETS, ensure_shapes
from .transforms import build_transforms


def collate(batch: list[tuple[torch.Tensor, dict]]) -> tuple[list[torch.Tensor], list[dict]]:
    """(list of images, list of targets): images differ in size, the model pads them."""
    return [image for image, _ in batch], [target for _, target in batch]


def batch_to_device(
    images: list[torch.Tensor], targets: list[dict], device: str
) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """A training batch on `device` (boxes and labels of the targets; asynchronous from pinned
    memory on CUDA)."""
    nb = device.startswith("cuda")
    images = [img.to(device, non_blocking=nb) for img in images]
    targets = [
        {
            "boxes": t["boxes"].to(device, non_blocking=nb),
            "labels": t["labels"].to(device, non_blocking=nb),
        }
        for t in targets
    ]
    return images, targets


def worker_error(error: BaseException) -> BaseException:
    """An exception raised in a DataLoader worker, as the original error with its own message.

    The loader re-raises worker errors with the worker's whole traceback in the message; a user
    should read "cannot decode image X", not a traceback.
    """
    text = str(error)
    if "Original Traceback" not in text:
        return error
    cls = type(error)
    for prefix in (f"{cls.__module__}.{cls.__qualname__}: ", f"{cls.__name__}: "):
        at = text.rfind("\n" + prefix)
        if at >= 0:
            try:
                return cls(text[at + 1 + len(prefix) :].rstrip())
            except Exception:  # an exception type that needs other arguments
                return error
    return error


def dataset_files(cfg: Config, split: str) -> tuple[Path, Path]:
    """(annotation json, image folder) of the config's "train" or "test" dataset; the synthetic
    shapes sets are generated under the dataset root on first use."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    spec = cfg.data.train if split == "train" else cfg.data.test
    if spec.name in SHAPES_DATASETS and spec.annotations is None:
        ann, images = ensure_shapes(spec.name)
        if spec.images is not None:
            images = spec.images
    else:
        ann, images = resolve_dataset(spec.name, spec.annotations, spec.images)
    return Path(ann), Path(images)


def build_dataset(cfg: Config, split: str) -> COCODataset:
    """The "train" or "test" dataset of a config, with its transforms (see dataset_files)."""
    ann, images = dataset_files(cfg, split)
    train = split == "train"
    return COCODataset(
        ann,
        images,
        train=train,
        transform=build_transforms(cfg, train=train),
        filter_empty=cfg.data.filter_empty,
        skip_bad_images=cfg.data.skip_bad_images,
    )


def _worker_init(worker_id: int) -> None:
    # torch seeds each worker from the loader's generator; numpy and random follow it so any
    # randomness outside the per-sample augmentation seed is reproducible too
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    # the workers are the parallelism: nested thread pools only oversubscribe the cores
    torch.set_num_threads(1)
    import cv2

    cv2.setNumThreads(0)


def _loader(cfg: Config, dataset: COCODataset, **sampling) -> DataLoader:
    """A DataLoader of (list of images, list of targets) with cfg.data.num_workers workers
    (seeded, single-threaded), pinned memory on CUDA, and `sampling`'s batching arguments."""
    workers = cfg.data.num_workers
    return DataLoader(
        dataset,
        collate_fn=collate,
        num_workers=workers,
        worker_init_fn=_worker_init if workers > 0 else None,
        pin_memory=torch.cuda.is_available(),
        **sampling,
    )


def per_rank_batch_size(ims_per_batch: int, world_size: int, accumulate: int = 1) -> int:
    """The images each process loads per iteration: solver.ims_per_batch split evenly, in
    `accumulate` passes (solver.accumulate) of equal size. ConfigError when they do not split."""
    if world_size <= 0 or ims_per_batch <= 0 or ims_per_batch % world_size:
        raise ConfigError(
            f"solver.ims_per_batch={ims_per_batch} must be a positive multiple of the number of "
            f"processes ({world_size}); change solver.ims_per_batch or the process count"
        )
    per_rank = ims_per_batch // world_size
    if accumulate <= 0 or per_rank % accumulate:
        raise ConfigError(
            f"solver.ims_per_batch={ims_per_batch} over {world_size} process(es) is {per_rank} "
            f"images per process, which solver.accumulate={accumulate} passes cannot share "
            "equally; make solver.accumulate divide ims_per_batch / processes"
        )
    return per_rank


def build_train_loader(
    cfg: Config,
    *,
    rank: int = 0,
    world_size: int = 1,
    start_iter: int = 0,
    dataset: COCODataset | None = None,
) -> DataLoader:
    """An endless loader of (list of images, list of targets) batches for one rank.

    The batches (images and augmentations) are a function of cfg.seed, rank, world_size and the
    iteration: `start_iter=k` continues a run exactly at iteration k. Each rank gets
    solver.ims_per_batch / world_size images per iteration, as solver.accumulate consecutive
    batches (passes) of ims_per_batch / (world_size * accumulate) images; which images and
    augmentations an iteration gets does not depend on solver.accumulate.
    """
    accumulate = cfg.solver.accumulate
    batch_size = per_rank_batch_size(cfg.solver.ims_per_batch, world_size, accumulate)
    dataset = dataset if dataset is not None else build_dataset(cfg, "train")
    if len(dataset) == 0:
        raise ValueError(
            f"the training set {dataset.annotations_path} has no images with boxes "
            f"(dropped: {dataset.drop_counts})"
        )
    groups = aspect_groups(dataset.aspect_ratios) if cfg.data.aspect_ratio_grouping else None
    sampler = TrainingBatchSampler(
        len(dataset),
        batch_size,
        groups=groups,
        seed=cfg.seed,
        rank=rank,
        world_size=world_size,
        start_iter=start_iter,
        passes=accumulate,
    )
    return _loader(
        cfg,
        dataset,
        batch_sampler=sampler,
        persistent_workers=cfg.data.num_workers > 0,
        generator=torch.Generator().manual_seed(cfg.seed * 1000 + rank),
    )


def build_test_loader(
    cfg: Config,
    *,
    rank: int = 0,
    world_size: int = 1,
    batch_size: int = 1,
    dataset: COCODataset | None = None,
) -> DataLoader:
    """Loader over this rank's contiguous shard of the test set (original images, no resize)."""
    dataset = dataset if dataset is not None else build_dataset(cfg, "test")
    return _loader(
        cfg,
        dataset,
        batch_size=batch_size,
        sampler=InferenceSampler(len(dataset), rank=rank, world_size=world_size),
    )
