"""Packages whose public names load on first use (PEP 562), so that importing one submodule
does not import every sibling (torchvision's ops import torch._dynamo, ~1.3 s of a tool's start).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, public: dict[str, str]) -> tuple[Callable, Callable]:
    """(__getattr__, __dir__) for `package`, whose names `public` maps to the (relative)
    modules defining them; a name is imported at its first lookup and kept."""
    module = sys.modules[package]

    def __getattr__(name: str) -> Any:
        if name not in public:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(public[name], package), name)
        setattr(module, name, value)  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(module)) | set(public))

    return __getattr__, __dir__
