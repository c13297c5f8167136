"""Running a detector over a data loader: COCO results per image, gathered over processes."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from ..data import worker_error
from ..engine.distributed import gather_to_main, get_rank
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


def _num_images(loader: Iterable) -> int | None:
    """Images the loader yields, when that is known without iterating (for the progress bar)."""
    if isinstance(loader, torch.utils.data.DataLoader):
        if loader.batch_size is not None:
            return len(loader.sampler)  # type: ignore[arg-type]
        return None
    if isinstance(loader, list | tuple):
        return sum(len(images) for images, _ in loader)
    return None


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
    mode under torch.inference_mode and gets its train/eval mode back afterwards.
    """
    module = unwrap(model)
    if device is None:
        param = next(module.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    was_training = module.training
    module.eval()
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
        with torch.inference_mode():
            for images, targets in loader:
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
        module.train(was_training)
    seconds = time.perf_counter() - start
    logger.info(
        "inference: %d images in %.1f s (%.2f images/s)",
        count,
        seconds,
        count / seconds if seconds > 0 else float("inf"),
    )
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


def inference_on_dataset(
    model: nn.Module,
    loader: Iterable[tuple[list[torch.Tensor], list[Mapping[str, Any]]]],
    *,
    label_to_category_id: Mapping[int, int],
    device: str | torch.device | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """COCO results of every image over all processes, sorted by image id; under
    torch.distributed each rank infers its own loader and rank 0 gets all (the others get [])."""
    per_image = infer_shard(
        model,
        loader,
        label_to_category_id=label_to_category_id,
        device=device,
        progress=progress and get_rank() == 0,
    )
    parts = gather_to_main(per_image)
    if parts is None:
        return []
    merged = merge_by_image(parts)
    return [r for image_id in sorted(merged) for r in merged[image_id]]
