"""Running a detector over a data loader: COCO results per image, gathered over processes."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from ..data import worker_error
from ..utils.distributed import gather_to_main, get_rank
from .coco import detections_to_coco

logger = logging.getLogger(__name__)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel.

    Evaluation calls the bare module: DDP's forward broadcasts buffers, a collective that would
    hang when the ranks' shards differ by one image.
    """
    if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
        return model.module
    return model


def model_device(model: nn.Module, device: str | torch.device | None = None) -> torch.device:
    """`device`, or, when None, the device of the model's first parameter (CPU without any)."""
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    return torch.device(device)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """`model` in eval mode under torch.inference_mode; its train/eval mode comes back after."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield model
    finally:
        model.train(was_training)


def _num_images(loader: Iterable) -> int | None:
    """Images the loader yields, when that is known without iterating (for the progress bar)."""
    if isinstance(loader, torch.utils.data.DataLoader):
        if loader.batch_size is not None:
            return len(loader.sampler)  # type: ignore[arg-type]
        return None
    if isinstance(loader, list | tuple):
        return sum(len(images) for images, _ in loader)
    return None


def _image_ids(images: Sequence, targets: Sequence[Mapping[str, Any]]) -> list[int]:
    """The COCO image ids of a batch's targets, checked to be one per image."""
    if len(images) != len(targets):
        raise ValueError(f"a batch has {len(images)} images but {len(targets)} targets")
    ids = []
    for t in targets:
        if "image_id" not in t:
            raise ValueError(
                "evaluation needs targets with 'image_id' (the COCO image id); "
                f"got keys {sorted(t)}"
            )
        ids.append(int(t["image_id"]))
    return ids


def _log_speed(count: int, seconds: float) -> None:
    logger.info(
        "inference: %d images in %.1f s (%.2f images/s)",
        count,
        seconds,
        count / seconds if seconds > 0 else float("inf"),
    )


def infer_shard(
    model: nn.Module,
    loader: Iterable[tuple[list[torch.Tensor], list[Mapping[str, Any]]]],
    *,
    label_to_category_id: Mapping[int, int],
    device: str | torch.device | None = None,
    progress: bool = True,
) -> dict[int, list[dict[str, Any]]]:
    """{image id: COCO results} for the images of this process's loader (each id once).

    `loader` yields (list of CHW float images in original size, list of targets with
    "image_id"); the model's boxes are already in original image pixels. The model runs in eval
    mode under torch.inference_mode and gets its train/eval mode back afterwards. `device`
    defaults to the model's.
    """
    module = unwrap(model)
    device = model_device(module, device)
    per_image: dict[int, list[dict[str, Any]]] = {}
    bar = tqdm(
        total=_num_images(loader),
        desc="inference",
        unit="img",
        disable=not progress,
        dynamic_ncols=True,
        mininterval=1.0,
    )
    start = time.perf_counter()
    count = 0
    try:
        with eval_mode(module):
            for images, targets in loader:
                ids = _image_ids(images, targets)
                outputs = module([img.to(device, non_blocking=True) for img in images])
                for image_id, output in zip(ids, outputs, strict=True):
                    # an image seen twice (e.g. a padded sampler) keeps its first detections
                    if image_id not in per_image:
                        per_image[image_id] = detections_to_coco(
                            image_id, output, label_to_category_id
                        )
                count += len(images)
                bar.update(len(images))
    except Exception as e:
        clean = worker_error(e)  # a bad image in a loader worker: its own message, no traceback
        if clean is e:
            raise
        raise clean from None
    finally:
        bar.close()
    _log_speed(count, time.perf_counter() - start)
    return per_image


def merge_by_image(
    parts: Iterable[Mapping[int, list[dict[str, Any]]]],
) -> dict[int, list[dict[str, Any]]]:
    """The processes' {image id: results} in one dict; an id in several parts counts once
    (the first part's results are kept)."""
    merged: dict[int, list[dict[str, Any]]] = {}
    for part in parts:
        for image_id, results in part.items():
            merged.setdefault(int(image_id), results)
    return merged


def sorted_results(merged: Mapping[int, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The COCO results of merge_by_image's dict in one list, by image id."""
    return [r for image_id in sorted(merged) for r in merged[image_id]]


def inference_on_dataset(
    model: nn.Module, loader: Iterable, *, label_to_category_id: Mapping[int, int], **options: Any
) -> list[dict[str, Any]]:
    """COCO results of every image over all processes, sorted by image id: each rank infers its
    own loader with infer_shard (`options`: its device and progress), and rank 0 gets all (the
    others get []). Only rank 0 shows progress."""
    options["progress"] = options.get("progress", True) and get_rank() == 0
    per_image = infer_shard(model, loader, label_to_category_id=label_to_category_id, **options)
    parts = gather_to_main(per_image)
    return [] if parts is None else sorted_results(merge_by_image(parts))
