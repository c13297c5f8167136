"""Drawing boxes and class names on images, to see what the model sees."""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from detection.config import Config


def _color(label: int) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((label * 0.618034) % 1.0, 0.9, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_boxes(
    image: torch.Tensor | np.ndarray,
    boxes: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    class_names: list[str],
    scores: torch.Tensor | np.ndarray | None = None,
) -> Image.Image:
    """A PIL image of a CHW float [0, 1] tensor (or HWC uint8 array) with its labelled boxes."""
    if isinstance(image, torch.Tensor):
        image = (image.detach().cpu().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    canvas = Image.fromarray(np.ascontiguousarray(image))
    draw = ImageDraw.Draw(canvas)
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    labels = np.asarray(labels).reshape(-1)
    for i, (box, label) in enumerate(zip(boxes.tolist(), labels.tolist(), strict=True)):
        color = _color(int(label))
        name = class_names[label - 1] if 1 <= label <= len(class_names) else f"label {label}"
        if scores is not None:
            name += f" {float(scores[i]):.2f}"
        draw.rectangle(box, outline=color, width=2)
        tx, ty = box[0], max(0.0, box[1] - 11)
        draw.rectangle(draw.textbbox((tx, ty), name), fill=(0, 0, 0))
        draw.text((tx, ty), name, fill=color)
    return canvas


def browse_dataset(cfg: Config, split: str, output: str | Path, num: int) -> list[Path]:
    """Write the first `num` images of a split with their boxes drawn: the training split through
    the training augmentation, the test split resized as the model resizes it at test time."""
    from .build import build_dataset
    from .transforms import resize_test

    dataset = build_dataset(cfg, split)
    if split == "test":
        dataset.transform = resize_test(cfg.input.min_size_test, cfg.input.max_size_test)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    written = []
    for i in range(min(num, len(dataset))):
        image, target = dataset[(i, cfg.seed * 100003 + i)]
        path = output / f"{split}_{target['image_id']}.jpg"
        draw_boxes(image, target["boxes"], target["labels"], dataset.class_names).save(
            path, quality=92
        )
        written.append(path)
    return written
