"""Importing torchvision (and our own) checkpoints into backbones and classifiers.

A source is a path to a state dict, or the name of one of the network's ImageNet weights in the
registry (torchvision's URLs: downloaded once into torch hub's cache, the hash in the file name
checked; a file already in the cache is used as it is).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .registry import get_backbone
from .vgg import VGGHead

_TV_VGG_CLASSIFIER = {"0": "head.fc6", "3": "head.fc7", "6": "fc8"}


@dataclass
class LoadReport:
    """What `load_pretrained` did with each tensor of the checkpoint."""

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the module, absent from the checkpoint
    unexpected: list[str] = field(default_factory=list)  # in the checkpoint, no place in the module
    ignored: list[str] = field(default_factory=list)  # parts this module does not have (e.g. fc)

    def __str__(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors from {self.source}"]
        for title, keys in (
            ("missing (kept at initialisation)", self.missing),
            ("unexpected (not loaded)", self.unexpected),
            ("ignored (parts this module does not have)", self.ignored),
        ):
            if keys:
                more = f", ... ({len(keys)} in all)" if len(keys) > 8 else ""
                shown = ", ".join(keys[:8]) + more
                lines.append(f"  {title}: {shown}")
        return "\n".join(lines)


def _from_torchvision_resnet(key: str) -> str:
    if key.startswith(("conv1.", "bn1.")):
        return "backbone.stem." + key
    m = re.match(r"layer(\d)\.(.*)", key)
    if m:
        return f"backbone.res{int(m.group(1)) + 1}.{m.group(2)}"
    return key  # fc.*


def _from_torchvision_vgg(key: str) -> str:
    if key.startswith("features."):
        return "backbone." + key
    m = re.match(r"classifier\.(\d+)\.(.*)", key)
    if m and m.group(1) in _TV_VGG_CLASSIFIER:
        return f"{_TV_VGG_CLASSIFIER[m.group(1)]}.{m.group(2)}"
    return key


def to_classifier_layout(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a torchvision ResNet/VGG state dict (or one of ours) to our classifier's keys."""
    state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    keys = list(state_dict)
    ours = ("backbone.", "fc.", "fc8.", "head.")
    if all(k.startswith(ours) for k in keys):
        return dict(state_dict)
    if any(k.startswith(("layer1.", "conv1.")) for k in keys):
        return {_from_torchvision_resnet(k): v for k, v in state_dict.items()}
    if any(k.startswith("classifier.") for k in keys):
        return {_from_torchvision_vgg(k): v for k, v in state_dict.items()}
    # A bare backbone state dict (ours: stem./res2./features.).
    return {"backbone." + k: v for k, v in state_dict.items()}


def _module_prefix(module: nn.Module) -> str:
    """Where `module` sits in the classifier layout."""
    if isinstance(module, VGGHead):
        return "head."
    arch = getattr(module, "arch_name", None)
    if arch is not None and isinstance(getattr(module, "backbone", None), nn.Module):
        return ""  # a classifier: backbone.*, its head and fc
    if arch is not None and get_backbone(arch, classifier=True).build is not None:
        return "backbone."
    raise TypeError(
        f"load_pretrained expects a module from build_backbone/build_classifier or a VGGHead, "
        f"got {type(module).__name__}"
    )


def _read_source(module: nn.Module, source: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(source)
    if path.exists():
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # pickle errors name opaque globals; say what to do instead
            raise ValueError(
                f"{path}: not a loadable weights file ({type(e).__name__}: {e}). Only tensors "
                "are accepted (torch.load with weights_only=True); save a state_dict."
            ) from e
        for wrapper in ("model", "state_dict"):
            if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise ValueError(f"{path}: expected a state dict of tensors, got {type(obj).__name__}")
        return obj
    if os.sep in str(source) or str(source).endswith((".pth", ".pt", ".pkl")):
        raise FileNotFoundError(f"weights file not found: {source}")
    return _torchvision_weights(module, str(source))


def _torchvision_weights(module: nn.Module, name: str) -> dict[str, torch.Tensor]:
    """The registered ImageNet weights `name` of this module's network: from torch hub's cache,
    downloaded there first if need be."""
    arch = getattr(module, "arch_name", None)
    if arch is None:
        raise ValueError(f"cannot tell which network's weights {name!r} means for this module")
    weights = get_backbone(arch, classifier=True).weights
    choice = name.split(".")[-1]  # ResNet50_Weights.IMAGENET1K_V2 as torchvision spells it
    if choice not in weights:
        raise ValueError(
            f"{arch} has no weights {name!r}; available: {', '.join(weights) or 'none'} (or give "
            "a path to a .pth file)"
        )
    url = weights[choice]
    try:
        return torch.hub.load_state_dict_from_url(
            url, map_location="cpu", progress=True, check_hash=True, weights_only=True
        )
    except Exception as e:
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        raise RuntimeError(
            f"could not download the {arch} weights {choice} ({type(e).__name__}: {e}). Without "
            f"network, download {url} elsewhere and pass the local path, or put the file in "
            f"{cache}."
        ) from e


def load_pretrained(module: nn.Module, source: str | os.PathLike) -> LoadReport:
    """Load a torchvision state dict (path) or torchvision weights name into `module`.

    Works for backbones (classifier head keys are ignored and reported), classifiers and the VGG
    fc6/fc7 head. A tensor whose shape differs from the module's is an error.
    """
    prefix = _module_prefix(module)
    state = to_classifier_layout(_read_source(module, source))
    own = module.state_dict()
    report = LoadReport(str(source))
    to_load = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            report.ignored.append(key)
            continue
        local = key[len(prefix) :]
        if local not in own:
            if local.endswith("num_batches_tracked"):
                continue  # BN counter, meaningless for FrozenBN/GN
            top = local.split(".")[0]
            (report.unexpected if hasattr(module, top) else report.ignored).append(key)
            continue
        if own[local].shape != value.shape:
            raise ValueError(
                f"{source}: tensor {key!r} has shape {tuple(value.shape)} in the checkpoint but "
                f"{tuple(own[local].shape)} in the model ({getattr(module, 'arch_name', '?')}); "
                "is the checkpoint for another architecture or number of classes?"
            )
        to_load[local] = value
    module.load_state_dict(to_load, strict=False)
    report.loaded = sorted(to_load)
    report.missing = sorted(
        k for k in own if k not in to_load and not k.endswith("num_batches_tracked")
    )
    return report
