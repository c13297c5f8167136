"""Published detector weights by name: fetched on first use, converted once, cached.

    resdet infer --weights fasterrcnn_resnet50_fpn_coco --input photo.jpg
    Predictor.from_pretrained("fasterrcnn_resnet50_fpn_coco")
    model.weights: fasterrcnn_resnet50_fpn_coco      # fine-tune from it (a config key)

The published file is downloaded into the torch hub cache (<TORCH_HOME>/hub/checkpoints, the
place torchvision uses), its SHA-256 checked against the hash prefix in its name, then converted
to a resdet checkpoint (weights, config, class names) that is cached beside it under resdet/.
Both files are written whole or not at all. Without a network the error says which URL to
fetch, where to put the file, and that a local checkpoint path works wherever a name does.
(ImageNet backbone weights are named by model.backbone.weights, e.g. IMAGENET1K_V1; backbones
handles them.)
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

# bump when a converter's output changes: cached conversions of an older version are redone
CONVERTED_VERSION = 1


@dataclass(frozen=True)
class PublishedDetector:
    """A detector whose weights are published at `url` (file name: <stem>-<sha256 prefix>.pth).

    convert: the published state dict -> a resdet checkpoint dict (model, config, class_names).
    """

    name: str
    url: str
    description: str
    convert: Callable[[dict[str, torch.Tensor]], dict[str, Any]]
    aliases: tuple[str, ...] = field(default=())

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def hash_prefix(self) -> str:
        m = re.search(r"-([a-f0-9]+)\.", self.filename)
        if not m:
            raise ValueError(f"{self.url}: no hash prefix in the file name")
        return m.group(1)


def torchvision_fpn_checkpoint(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """torchvision's fasterrcnn_resnet50_fpn state dict -> a resdet checkpoint, every tensor
    checked against the model of its config (strict load) before anything is written."""
    from ..config import to_dict
    from .build import build_model
    from .convert import coco_class_names, convert_torchvision_fpn, torchvision_fpn_config

    if not isinstance(state, dict):
        raise ValueError(f"expected a state dict of tensors, got a {type(state).__name__}")
    if isinstance(state.get("model"), dict):  # a training checkpoint wrapping the weights
        state = state["model"]
    converted = convert_torchvision_fpn(state)
    cfg = torchvision_fpn_config()
    names = coco_class_names()
    model = build_model(cfg, load_weights=False, class_names=names)
    model.load_state_dict(converted, strict=True)
    return {"model": model.state_dict(), "config": to_dict(cfg), "class_names": names}


DETECTORS: dict[str, PublishedDetector] = {
    d.name: d
    for d in [
        PublishedDetector(
            name="fasterrcnn_resnet50_fpn_coco",
            url="https://download.pytorch.org/models/fasterrcnn_resnet50_fpn_coco-258fb6c6.pth",
            description="torchvision's Faster R-CNN ResNet-50 FPN, COCO's 80 classes (box AP 37.0 "
            "on val2017)",
            convert=torchvision_fpn_checkpoint,
            aliases=("FasterRCNN_ResNet50_FPN_Weights.COCO_V1", "fasterrcnn_resnet50_fpn"),
        ),
    ]
}


class WeightsDownloadError(OSError):
    """Published weights could not be fetched (offline, unreachable, or a wrong hash); an
    OSError, as the network's own errors are, so that commands report it as one."""


def published(name: str | os.PathLike) -> PublishedDetector | None:
    """The published detector `name` (or one of its aliases) names, or None."""
    text = str(name)
    for detector in DETECTORS.values():
        if text == detector.name or text in detector.aliases:
            return detector
    return None


def hub_checkpoints_dir() -> Path:
    """Where downloaded weights live: torch hub's checkpoints folder (TORCH_HOME moves it)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _offline_help(detector: PublishedDetector, target: Path) -> str:
    return (
        f"Without a network: fetch that URL on a machine that has one and put the file at "
        f"{target} (TORCH_HOME moves that folder), then run again; or convert it yourself "
        f"(resdet convert-weights --input {detector.filename} --output model.pth) and pass the "
        "path instead of the name: --weights model.pth (model.weights=model.pth in a config)."
    )


def fetch_published(detector: PublishedDetector, *, progress: bool = True) -> Path:
    """The published file in the hub cache, downloaded first if missing; its SHA-256 must
    start with the hash prefix of its name (a file put there by hand is checked too)."""
    target = hub_checkpoints_dir() / detector.filename
    if not target.is_file():
        logger.info("downloading %s to %s", detector.url, target)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            # writes <target>.<uuid>.partial and renames it only when complete and the hash is
            # right; the partial file is removed on any failure
            torch.hub.download_url_to_file(
                detector.url, str(target), hash_prefix=detector.hash_prefix, progress=progress
            )
        except Exception as e:  # URLError, HTTPError, a wrong hash, a full disk, ...
            raise WeightsDownloadError(
                f"cannot download the weights {detector.name!r} from {detector.url} "
                f"({type(e).__name__}: {e}). " + _offline_help(detector, target)
            ) from None
        return target
    digest = _sha256(target)
    if not digest.startswith(detector.hash_prefix):
        raise WeightsDownloadError(
            f"{target} is not the published file of {detector.name!r}: its SHA-256 is "
            f"{digest[:16]}..., the name says {detector.hash_prefix}. Delete it and run again: "
            f"it is downloaded from {detector.url}. " + _offline_help(detector, target)
        )
    return target


def converted_path(detector: PublishedDetector) -> Path:
    """Where the resdet checkpoint converted from `detector`'s file is cached."""
    stem = detector.filename.removesuffix(".pth")
    return hub_checkpoints_dir() / "resdet" / f"{stem}.resdet{CONVERTED_VERSION}.pth"


def pretrained_checkpoint(name: str, *, progress: bool = True) -> Path:
    """The resdet checkpoint of the published detector `name`: fetched and converted on first
    use, then read from the cache. Raises WeightsDownloadError (offline, a wrong hash) or
    KeyError (an unknown name; the message lists the known ones)."""
    detector = published(name)
    if detector is None:
        raise KeyError(_unknown(name))
    path = converted_path(detector)
    if path.is_file():
        return path
    source = fetch_published(detector, progress=progress)
    logger.info("converting %s into a resdet checkpoint at %s (once)", source, path)
    try:
        state = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsDownloadError(
            f"{source} cannot be read ({type(e).__name__}: {e}); delete it and run again"
        ) from None
    checkpoint = detector.convert(state)
    from ..utils.io import atomic_write  # a crash leaves no half-written file in the cache

    atomic_write(path, lambda f: torch.save(checkpoint, f), binary=True)
    return path


def _suggestion(name: str | os.PathLike) -> str:
    """' Did you mean X?' (the closest published name) and the list of them."""
    known = list(DETECTORS)
    close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"{hint} Published: {', '.join(known)} (`resdet weights` lists them)."


def _unknown(name: str | os.PathLike) -> str:
    return f"no published weights named {str(name)!r}.{_suggestion(name)}"


def resolve_weights(name_or_path: str | os.PathLike, *, progress: bool = True) -> Path:
    """A detector checkpoint file from a path or a published name (a file of that name wins).

    A string that is neither an existing file nor a published name is a FileNotFoundError
    that says both, with the closest published name when one is close.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    if published(name_or_path) is not None:
        return pretrained_checkpoint(str(name_or_path), progress=progress)
    raise FileNotFoundError(
        f"checkpoint not found: {name_or_path} (neither a file nor the name of published "
        f"weights).{_suggestion(name_or_path)}"
    )
