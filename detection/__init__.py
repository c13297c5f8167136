"""Faster R-CNN on top of the `backbones` package: config, modeling, data, engine, evaluation.

The public names are imported on first use (PEP 562), so `import detection.config` (every tool's
start) does not pay for torchvision's ops, which import torch._dynamo (~1.3 s).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .utils.lazy import lazy_exports

if TYPE_CHECKING:
    from .config import load_config
    from .modeling import build_model, load_model
    from .predictor import Predictor

_PUBLIC = {
    "Predictor": ".predictor",
    "build_model": ".modeling",
    "load_config": ".config",
    "load_model": ".modeling",
}

__all__ = ["Predictor", "build_model", "load_config", "load_model"]

__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
