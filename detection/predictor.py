"""Predictor: a trained detector for Python users, on the fast inference path by default.

    from detection import Predictor

    predictor = Predictor.from_pretrained("fasterrcnn_resnet50_fpn_coco")  # COCO, 80 classes
    predictor = Predictor.from_checkpoint("output/shapes/demo_R18_FPN/model_final.pth")
    result = predictor("photo.jpg")  # or a PIL image, an HxWx3 uint8 array, a CHW tensor
    result["boxes"], result["scores"], result["labels"], result["class_names"]
    results = predictor(["a.jpg", "b.jpg"])  # a list in, a list out

Boxes are xyxy in the pixels of the image as given (for files and PIL images: after the EXIF
orientation is applied, as cameras intend). The fast path (FrozenBN folded, channels_last,
test.precision resolved for the hardware) is applied once at load.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from .config import Config
from .modeling import FasterRCNN, inference_options, load_model, prepare_for_inference
from .utils.device import describe_device, resolve_device
from .utils.precision import Precision, resolve_precision

logger = logging.getLogger(__name__)

ACCEPTED = (
    "an image path (str or Path), a PIL image, an HxWx3 uint8 RGB numpy array or a 3xHxW "
    "float RGB tensor in [0, 1] (or a non-empty list of them)"
)


class Predictor:
    """Runs a detector on images of any common kind and returns boxes in their pixels.

    Args:
        model: a FasterRCNN; it is put in eval mode and, with `fast`, on the fast path of
            `cfg` (or model.cfg): test.fast_path, test.precision and model.compile.
        cfg: the config whose test settings apply; default: the model's own.
        fast: apply prepare_for_inference (False: run the model as it is, in eval mode).
        score_thresh: drop detections scoring below it (the model already drops those below
            model.roi_heads.score_thresh).
        batch_size: images per forward pass for list inputs (1 = exactly `model([image])`).

    Attributes: model, cfg, device, class_names, precision (what test.precision resolved
    to, with the reason: str(predictor.precision) reads "bf16 (native on this CPU: AMX)").

    Calling it with one image returns one dict {"boxes": float [N, 4] xyxy, "scores": [N],
    "labels": int64 [N] in 1..K, "class_names": N names}; with a list, a list of such dicts.
    Tensors are on the CPU.
    """

    def __init__(
        self,
        model: FasterRCNN,
        cfg: Config | None = None,
        *,
        fast: bool = True,
        score_thresh: float = 0.0,
        batch_size: int = 1,
    ) -> None:
        if isinstance(model, str | os.PathLike):
            raise TypeError(
                f"Predictor() takes a built model, not {type(model).__name__} {str(model)!r}: "
                f"load a checkpoint file with Predictor.from_checkpoint({str(model)!r}), or "
                "published weights with Predictor.from_pretrained('fasterrcnn_resnet50_fpn_coco')"
            )
        self.cfg = cfg if cfg is not None else getattr(model, "cfg", None)
        param = next(model.parameters(), None)
        self.device = param.device if param is not None else torch.device("cpu")
        self.precision = Precision(getattr(model, "precision", "fp32"), "the model's own")
        if fast:
            if self.cfg is None:
                raise ValueError("fast=True needs a config (pass cfg= or a model from build_model)")
            self.precision = resolve_precision(self.cfg.test.precision, self.device)
            options = {**inference_options(self.cfg), "precision": self.precision.name}
            model = prepare_for_inference(model, **options)
        self.model = model.eval()
        self.score_thresh = score_thresh
        self.batch_size = max(1, int(batch_size))
        self.class_names = list(getattr(model, "class_names", None) or [])

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | os.PathLike,
        overrides: Iterable[str] = (),
        *,
        device: str | torch.device = "auto",
        config: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> Predictor:
        """Load a checkpoint (its embedded config plus `overrides`; or `config` plus
        `overrides` instead) onto `device` (auto: CUDA when available, else the CPU; the
        choice is logged and is predictor.device); keyword arguments go to Predictor(). A
        published name works too (see from_pretrained)."""
        from .modeling.zoo import resolve_weights

        chosen = resolve_device(device)
        # what `auto` chose is news; a device the caller named is not
        level = logging.INFO if str(device) == "auto" else logging.DEBUG
        logger.log(level, "Predictor %s", describe_device(chosen, device))
        model = load_model(resolve_weights(checkpoint), overrides, device=chosen, config=config)
        return cls(model, model.cfg, **kwargs)

    @classmethod
    def from_pretrained(
        cls,
        name: str,
        overrides: Iterable[str] = (),
        *,
        device: str | torch.device = "auto",
        **kwargs: Any,
    ) -> Predictor:
        """Published weights by name (e.g. "fasterrcnn_resnet50_fpn_coco": torchvision's COCO
        Faster R-CNN, COCO class names), downloaded into the torch hub cache on first use and
        converted once; a checkpoint path works too. `resdet weights` lists the names."""
        return cls.from_checkpoint(name, overrides, device=device, **kwargs)

    def __repr__(self) -> str:
        return (
            f"Predictor(device={self.device}, precision={self.precision}, "
            f"{len(self.class_names)} classes)"
        )

    def __call__(self, inputs) -> dict[str, Any] | list[dict[str, Any]]:
        single = not isinstance(inputs, list | tuple)
        items = [inputs] if single else list(inputs)
        if not items:
            raise ValueError(f"got an empty {type(inputs).__name__}; pass {ACCEPTED}")
        images = [to_tensor(item, i) for i, item in enumerate(items)]
        results = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                batch = [img.to(self.device) for img in images[start : start + self.batch_size]]
                results += [self._result(det) for det in self.model(batch)]
        return results[0] if single else results

    def _result(self, det: dict[str, torch.Tensor]) -> dict[str, Any]:
        keep = det["scores"] >= self.score_thresh
        out = {k: det[k][keep].float().cpu() for k in ("boxes", "scores")}
        out["labels"] = det["labels"][keep].cpu()
        names = self.class_names
        out["class_names"] = [
            names[i - 1] if 1 <= i <= len(names) else str(i) for i in out["labels"].tolist()
        ]
        return out


def to_tensor(item, index: int = 0) -> torch.Tensor:
    """One input image as a 3xHxW float RGB tensor in [0, 1] (see ACCEPTED); a clear error
    naming what was passed otherwise. `index` is its place in the caller's list."""
    where = f"input {index}"
    if isinstance(item, str | os.PathLike):
        from .data.images import read_image  # Pillow decoding, EXIF orientation applied

        return _from_array(read_image(Path(item)), where)
    if isinstance(item, Image.Image):
        image = ImageOps.exif_transpose(item).convert("RGB")
        return _from_array(np.asarray(image, dtype=np.uint8), where)
    if isinstance(item, np.ndarray):
        return _from_array(item, where)
    if torch.is_tensor(item):
        if item.dim() != 3 or item.shape[0] != 3 or not item.is_floating_point():
            raise ValueError(
                f"{where}: a tensor must be 3xHxW float RGB in [0, 1]; got "
                f"{tuple(item.shape)} {item.dtype}. Accepted: {ACCEPTED}"
            )
        return item
    raise TypeError(f"{where}: cannot read a {type(item).__name__}; accepted: {ACCEPTED}")


def _from_array(array: np.ndarray, where: str) -> torch.Tensor:
    if array.ndim != 3 or array.shape[2] != 3:
        kind = {2: "grayscale (HxW)"}.get(array.ndim, f"shape {array.shape}")
        if array.ndim == 3 and array.shape[2] in (1, 4):
            kind = {1: "grayscale (HxWx1)", 4: "RGBA (HxWx4)"}[array.shape[2]]
        raise ValueError(
            f"{where}: a numpy array must be HxWx3 RGB; got {kind}. Convert it first, e.g. "
            f"PIL.Image.fromarray(a).convert('RGB'). Accepted: {ACCEPTED}"
        )
    if array.dtype != np.uint8:
        raise ValueError(
            f"{where}: a numpy array must be uint8 (0..255); got {array.dtype}. Accepted: "
            f"{ACCEPTED}"
        )
    # a copy: arrays from PIL are read-only, and the caller keeps theirs
    return torch.tensor(array).permute(2, 0, 1).float().div(255.0)
