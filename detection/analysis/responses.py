"""Layer responses of ResNets (He et al. 2016, section 4.2, Fig. 7).

A "3x3 layer response" is the output of the normalization layer (BN, FrozenBN or GN) that
follows a 3x3 convolution, taken after the norm and before the ReLU and the shortcut addition:
bn1 and bn2 of a BasicBlock (ResNet-18/34), bn2 of a Bottleneck (ResNet-50/101/152). The stem's
7x7 convolution is not a 3x3 layer and is left out, so ResNet-18 has 16 layers, ResNet-34 32,
ResNet-50 16, ResNet-101 33, ResNet-152 50.

The reported value of a layer is the population standard deviation (ddof 0) of all elements of
its response (every channel, spatial position and image) over all the images analysed: the
images are run one at a time (no padding enters the statistics) and the moments are merged
exactly in float64 (Chan et al.'s pairwise update), so the result equals the standard deviation
of the concatenation of every response tensor.

Inputs: images decoded with detection.data.read_image, put in the model's channel order and
normalised (ImageNet mean/std for backbones; a detector's own pixel_mean/pixel_std/input_format
for checkpoints), then resized so the short side is `size` (bilinear, the detector's resize).
Every norm runs in eval mode. Random backbones (no weights) get He-normal convs drawn from a
generator seeded by the seed and the layer's name, so layers that plain and residual nets share
start from the same weights. Detector checkpoints: FPN's bottom-up ResNet, or C4's conv1..res4
followed by the box head's res5 applied to the whole res4 map (in the detector it runs on each
pooled region; on the full map its layers see the same kind of input at a larger extent).
"""

from __future__ import annotations

import csv
import json
import math
import os
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from backbones import build_backbone, get_backbone, list_backbones, load_pretrained
from backbones.resnet import ResNet

from ..utils.figures import save_figure

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# (conv, norm) pairs a ResNet block may hold; the 3x3 ones are found by kernel size
_BLOCK_LAYERS = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))
CSV_FIELDS = ("model", "index", "layer", "stage", "channels", "std", "mean", "rank", "elements")


@dataclass
class ResponseLayer:
    """One 3x3 convolution and the norm whose output is its response."""

    name: str  # e.g. "res3.1.conv2"
    stage: str
    channels: int
    norm: nn.Module


@dataclass
class AnalysisModel:
    """A ResNet as a sequence of stages run one after another, and its input convention."""

    label: str
    stages: list[tuple[str, nn.Module]]
    pixel_mean: tuple[float, ...] = IMAGENET_MEAN
    pixel_std: tuple[float, ...] = IMAGENET_STD
    input_format: str = "RGB"
    note: str = ""
    module: nn.Module | None = None  # the network the stages belong to

    def layers(self) -> list[ResponseLayer]:
        """The 3x3 layers of the stages, in network order."""
        return response_layers(self.stages)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Run a 1x3xHxW input through the stages; returns the last stage's output."""
        x = image
        for _, stage in self.stages:
            x = stage(x)
        return x


class RunningMoments:
    """Count, mean and sum of squared deviations of a stream of tensors, merged in float64."""

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0

    def update(self, x: torch.Tensor) -> None:
        """Merge every element of `x` into the moments."""
        x = x.detach().to(torch.float64)
        n = x.numel()
        if n == 0:
            return
        mean = x.mean().item()
        m2 = (x - mean).square().sum().item()
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.count * n / total
        self.count = total

    @property
    def std(self) -> float:
        """Population standard deviation (ddof 0) of everything seen; NaN before any update."""
        return math.sqrt(self.m2 / self.count) if self.count else float("nan")


@dataclass
class LayerResponse:
    """The response statistics of one layer of one model."""

    model: str
    index: int  # 1-based position in network order
    layer: str
    stage: str
    channels: int
    std: float
    mean: float
    elements: int
    rank: int = 0  # 1 = largest std of the model


@dataclass
class ModelResponses:
    """The responses of every 3x3 layer of one model, and what was measured (`note`)."""

    label: str
    layers: list[LayerResponse] = field(default_factory=list)
    note: str = ""


def response_layers(stages: Sequence[tuple[str, nn.Module]]) -> list[ResponseLayer]:
    """The 3x3 layers of ResNet stages in network order (the stem's 7x7 is not one)."""
    layers = []
    for stage_name, stage in stages:
        if stage_name == "stem":
            continue
        for i, block in enumerate(stage):
            for conv_name, norm_name in _BLOCK_LAYERS:
                conv = getattr(block, conv_name, None)
                if isinstance(conv, nn.Conv2d) and tuple(conv.kernel_size) == (3, 3):
                    norm = getattr(block, norm_name)
                    layers.append(
                        ResponseLayer(
                            f"{stage_name}.{i}.{conv_name}", stage_name, conv.out_channels, norm
                        )
                    )
    return layers


def describe_resnet(name: str, shortcut: str) -> str:
    """The paper's name of a ResNet: resnet34 + "A" -> "ResNet-34 A", shortcut none -> plain-34
    (the registry's label: "ResNeXt-50 32x4d B", "plain ResNeXt-50 32x4d")."""
    label = get_backbone(name).label
    if shortcut != "none":
        return f"{label} {shortcut}"
    return f"plain-{label[7:]}" if label.startswith("ResNet-") else f"plain {label}"


def seeded_init(module: nn.Module, seed: int) -> None:
    """He-normal (fan-out) init of every conv from a generator seeded by `seed` and the conv's
    name, so that networks sharing a layer name (plain-18 and ResNet-18 A/B/C) share its
    initial weights whatever other layers (projections) they have."""
    for name, m in module.named_modules():
        if isinstance(m, nn.Conv2d):
            g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=g)


def backbone_model(
    name: str,
    *,
    shortcut: str = "B",
    norm: str = "BN",
    weights: str | os.PathLike | None = None,
    seed: int = 0,
    label: str | None = None,
) -> AnalysisModel:
    """A ResNet backbone up to res5, random (seeded) or with ImageNet weights, in eval mode."""
    valid = [n for n in list_backbones() if "shortcut" in get_backbone(n).options]  # ResNets
    if name not in valid:
        raise ValueError(
            f"layer responses are defined for ResNets ({', '.join(valid)}), not {name!r}"
        )
    backbone = build_backbone(name, shortcut=shortcut, norm=norm)  # up to its last stage, res5
    seeded_init(backbone, seed)
    note = f"seed {seed}"
    if weights is not None:
        report = load_pretrained(backbone, weights)
        note = f"weights {weights}"
        if report.missing:
            # e.g. option C's extra projections: torchvision's weights are option B
            note += f" ({len(report.missing)} tensors missing, kept at seeded initialisation)"
    backbone.eval()
    return AnalysisModel(
        label or describe_resnet(name, shortcut),
        [(s, getattr(backbone, s)) for s in backbone.stage_names],
        note=note,
        module=backbone,
    )


def checkpoint_model(
    checkpoint: str | os.PathLike, *, label: str | None = None, device: str = "cpu"
) -> AnalysisModel:
    """The ResNet of a detection checkpoint: FPN's bottom-up network, or C4's conv1..res4 plus
    the box head's res5, run here on the whole res4 map (in the detector it runs per region)."""
    from ..modeling import load_model

    model = load_model(checkpoint, device=device)
    b = model.cfg.model.backbone
    backbone = model.backbone
    resnet = getattr(backbone, "bottom_up", backbone)
    if not isinstance(resnet, ResNet):
        raise ValueError(
            f"{checkpoint}: its backbone is {b.name}; layer responses are defined for ResNet "
            "backbones (the 3x3 layers of residual blocks)"
        )
    stages = [(s, getattr(resnet, s)) for s in resnet.stage_names]
    note = "backbone " + ",".join(resnet.stage_names)
    res5 = getattr(model.roi_heads.box_head, "res5", None)
    if res5 is not None and "res5" not in resnet.stage_names:
        stages.append(("res5", res5))
        note += " + box head res5 on the res4 map"
    default = describe_resnet(b.name, b.shortcut) + f" ({Path(checkpoint).parent.name})"
    return AnalysisModel(
        label or default,
        stages,
        pixel_mean=tuple(model.pixel_mean.flatten().tolist()),
        pixel_std=tuple(model.pixel_std.flatten().tolist()),
        input_format=model.input_format,
        note=note,
        module=model,
    )


def image_paths(source: str | os.PathLike, limit: int | None = None) -> list[Path]:
    """Image files to analyse: an image, a folder of images, a registered dataset name (e.g.
    shapes_val, generated on first use) or a config file (its data.test set), in a fixed order
    (sorted by name for folders, the annotation file's order for datasets), at most `limit`."""
    from ..config import load_config
    from ..data.catalog import DATASETS, resolve_dataset
    from ..data.shapes import SHAPES_DATASETS, ensure_shapes
    from ..evaluation.predict import list_images

    path = Path(source)
    if path.is_file() and path.suffix in (".yaml", ".yml"):
        spec = load_config(path).data.test
        if spec.name in SHAPES_DATASETS and spec.annotations is None:
            ann, folder = ensure_shapes(spec.name)
            folder = Path(spec.images) if spec.images is not None else folder
        else:
            ann, folder = resolve_dataset(spec.name, spec.annotations, spec.images)
        files = _dataset_files(ann, folder)
    elif path.exists():
        files = list_images(path)
    elif str(source) in DATASETS:
        name = str(source)
        ann, folder = ensure_shapes(name) if name in SHAPES_DATASETS else resolve_dataset(name)
        files = _dataset_files(ann, folder)
    else:
        raise FileNotFoundError(
            f"--images {source}: not an image, a folder, a config file or a registered dataset "
            f"({', '.join(DATASETS)})"
        )
    return files[:limit] if limit is not None else files


def _dataset_files(annotations: Path, folder: Path) -> list[Path]:
    if not annotations.is_file():
        raise FileNotFoundError(
            f"annotation file not found: {annotations}; check $RESDET_DATASETS or the config"
        )
    images = json.loads(annotations.read_text()).get("images") or []
    if not images:
        raise FileNotFoundError(f"{annotations} lists no images")
    return [Path(folder) / im["file_name"] for im in images]


def prepare_image(
    image: np.ndarray,
    model: AnalysisModel,
    size: int,
    max_size: int | None = None,
) -> torch.Tensor:
    """HxWx3 uint8 RGB -> 1x3xhxw input: the model's channel order and normalisation, then a
    bilinear resize of the short side to `size` (the detector's own resize function)."""
    from ..modeling.preprocess import resize_image

    img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0
    if model.input_format == "BGR":
        img = img.flip(0) * 255.0
    mean = torch.tensor(model.pixel_mean).view(-1, 1, 1)
    std = torch.tensor(model.pixel_std).view(-1, 1, 1)
    img = (img - mean) / std
    h, w = img.shape[-2:]
    cap = max_size if max_size is not None else 10**9
    if min(size / min(h, w), cap / max(h, w)) != 1.0:  # an image already at size stays exact
        img = resize_image(img, size, cap)
    return img[None]


def measure_responses(
    model: AnalysisModel,
    images: Iterable[np.ndarray],
    *,
    size: int = 224,
    max_size: int | None = None,
    device: str = "cpu",
) -> ModelResponses:
    """Run the images through the model and return the std of every 3x3 layer's response."""
    layers = model.layers()
    if not layers:
        raise ValueError(f"{model.label}: no 3x3 layers found (is it a ResNet?)")
    moments = [RunningMoments() for _ in layers]
    handles = []
    for layer, m in zip(layers, moments, strict=True):
        # statistics are taken inside the hook: the ReLU that follows works in place
        handles.append(layer.norm.register_forward_hook(lambda _m, _i, out, m=m: m.update(out)))
    for _, stage in model.stages:
        stage.to(device).eval()
    count = 0
    try:
        with torch.inference_mode():
            for image in images:
                model.forward(prepare_image(image, model, size, max_size).to(device))
                count += 1
    finally:
        for h in handles:
            h.remove()
    if count == 0:
        raise ValueError("no images to analyse")
    result = ModelResponses(model.label, note=f"{model.note}; {count} images")
    for i, (layer, m) in enumerate(zip(layers, moments, strict=True), 1):
        stats = (layer.name, layer.stage, layer.channels, m.std, m.mean, m.count)
        result.layers.append(LayerResponse(model.label, i, *stats))
    for rank, r in enumerate(sorted(result.layers, key=lambda r: -r.std), 1):
        r.rank = rank
    return result


def write_csv(results: Sequence[ModelResponses], path: str | os.PathLike) -> Path:
    """One row per (model, 3x3 layer), in network order; `rank` 1 is the model's largest std."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        for result in results:
            for r in result.layers:
                writer.writerow({k: getattr(r, k) for k in CSV_FIELDS})
    return path


def write_summary(results: Sequence[ModelResponses], path: str | os.PathLike) -> Path:
    """What was measured, per model: layers, note (weights / images), mean and max std."""
    path = Path(path)
    summary = [
        {
            "model": r.label,
            "layers": len(r.layers),
            "note": r.note,
            "mean_std": float(np.mean([x.std for x in r.layers])),
            "max_std": max(x.std for x in r.layers),
        }
        for r in results
    ]
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return path


def plot_responses(results: Sequence[ModelResponses], path: str | os.PathLike) -> Path:
    """Fig. 7 of the paper: std per 3x3 layer in network order (top) and sorted (bottom)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8.0, 6.5))
    for r in results:
        stds = [x.std for x in r.layers]
        xs = range(1, len(stds) + 1)
        (line,) = top.plot(xs, stds, marker=".", linewidth=1, label=r.label)
        bottom.plot(xs, sorted(stds, reverse=True), marker=".", linewidth=1, color=line.get_color())
    top.set_xlabel("layer index (original)")
    bottom.set_xlabel("layer index (sorted by magnitude)")
    for ax in (top, bottom):
        ax.set_ylabel("std")
        ax.grid(alpha=0.3)
    top.legend(fontsize=8)
    top.set_title("Standard deviation of 3x3 layer responses (after BN, before ReLU/addition)")
    return save_figure(fig, path)
