"""Detections on image files: one JSON per image and the image with its boxes drawn."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..data.images import IMAGE_EXTENSIONS
from ..utils.io import write_json
from .inference import eval_mode, model_device, unwrap


def list_images(path: str | os.PathLike) -> list[Path]:
    """An image file, or the image files of a folder (not recursive, sorted by name)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"input not found: {path}; give an image file or a folder")
    files = sorted(
        p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not files:
        raise FileNotFoundError(
            f"no images in {path} (looked for {', '.join(IMAGE_EXTENSIONS)} files)"
        )
    return files


def _output_stems(paths: Sequence[Path]) -> list[str]:
    # a.jpg and a.png in one folder would write the same a.json: keep their extensions then
    counts = Counter(p.stem for p in paths)
    return [p.stem if counts[p.stem] == 1 else p.name.replace(".", "_") for p in paths]


def _image_record(
    path: Path, array: np.ndarray, det: dict[str, torch.Tensor], names: Sequence[str]
) -> dict[str, Any]:
    """The JSON record of one image's detections (tensors already filtered, on the CPU)."""
    detections = [
        {
            "box": box,
            "score": score,
            "label": label,
            "class": names[label - 1] if 1 <= label <= len(names) else None,
        }
        for box, score, label in zip(
            det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist(), strict=True
        )
    ]
    return {
        "image": str(path),
        "width": int(array.shape[1]),
        "height": int(array.shape[0]),
        "detections": detections,
    }


def predict_images(
    model: nn.Module,
    paths: Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    *,
    score_thresh: float = 0.5,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run the model on each image file and write DIR/<stem>.json ({"image", "width", "height",
    "detections": [{"box" xyxy, "score", "label", "class"}]}), DIR/<stem>.jpg (boxes drawn)
    and DIR/predictions.json (all records); returns the records. Detections scoring below
    `score_thresh` are left out (the model already drops those below
    model.roi_heads.score_thresh)."""
    from ..data import draw_boxes, read_image  # data imports albumentations: lazily

    module = unwrap(model)
    device = model_device(module, device)
    names = list(getattr(module, "class_names", None) or [])
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [Path(p) for p in paths]
    records = []
    with eval_mode(module):
        for path, stem in tqdm(
            list(zip(paths, _output_stems(paths), strict=True)),
            desc="inference",
            unit="img",
            disable=not progress,
        ):
            array = read_image(path)
            image = torch.from_numpy(array).permute(2, 0, 1).float().div(255.0)
            (det,) = module([image.to(device)])
            keep = det["scores"] >= score_thresh
            det = {k: det[k][keep].cpu() for k in ("boxes", "scores", "labels")}
            record = _image_record(path, array, det, names)
            write_json(out / f"{stem}.json", record)
            drawn = draw_boxes(
                np.ascontiguousarray(array), det["boxes"], det["labels"], names, det["scores"]
            )
            drawn.save(out / f"{stem}.jpg", quality=92)
            records.append(record)
    write_json(out / "predictions.json", records)
    return records
