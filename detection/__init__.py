"""Faster R-CNN on top of the `backbones` package: config, modeling, data, engine, evaluation.

The public names are imported on first use (PEP 562), so `import detection.config` (every tool's
start) does not pay for torchvision's ops, which import torch._dynamo (~1.3 s).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'detection' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name], __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
