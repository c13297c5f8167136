"""Export a checkpoint's detector to ONNX or TorchScript, then check the file against PyTorch.

    report = export_checkpoint("model_final.pth", "model.onnx", format="onnx")
    print(report)  # the comparison; report.ok is False when the file disagrees with PyTorch

The exported graph is `DeployableDetector`: one float RGB image [3, H, W] in [0, 1] in, boxes
[D, 4] (xyxy, the input image's pixels), scores [D] and labels [D] (int64, 1..K) out; resize,
normalisation and padding are inside. The file is written to a temporary next to the output,
loaded back in its runtime (onnxruntime / torch.jit.load), run on an image and compared with
the PyTorch model, and renamed into place only when the detections agree; otherwise nothing
is left at the output path.

ONNX goes through torch.onnx's TorchScript-based exporter (`dynamo=False`), deliberately: the
detector's output sizes depend on the data (top-k of a dynamic count, NMS, score threshold).
The torch.export-based exporter (the default since torch 2.9) needs onnxscript and
translations of torchvision's nms / roi_align / roi_pool, and has to guard those data-dependent
sizes as unbacked symbols; the tracing exporter records them as ops and uses the ONNX
symbolics torchvision registers (NonMaxSuppression, RoiAlign, MaxRoiPool; opset >= 11).
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import to_dict
from ..modeling import load_model
from ..predictor import Predictor, to_tensor
from ..utils.io import atomic_path
from .check import TOLERANCES, Comparison, Decisions, compare_detections
from .formats import DEFAULT_OPSET, FORMATS, MAX_OPSET, MIN_OPSET
from .graph import PRECISIONS, DeployableDetector
from .runtime import ExportError, load_exported, quiet_tracer, require_onnx


def check_opset(opset: int) -> None:
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(
            f"--opset {opset} is not supported: use {MIN_OPSET}..{MAX_OPSET} (nms and roi_align "
            f"need {MIN_OPSET}; torch.onnx's TorchScript exporter writes up to {MAX_OPSET}); "
            f"default {DEFAULT_OPSET}"
        )


# -- writing ------------------------------------------------------------------------------------


def export_onnx(
    detector: DeployableDetector,
    example: torch.Tensor,
    path: str | os.PathLike,
    *,
    dynamic: bool = True,
    opset: int = DEFAULT_OPSET,
    metadata: dict[str, str] | None = None,
) -> None:
    """Write `detector` as ONNX: input "image" [3, H, W] (H, W dynamic with `dynamic`, else
    the example's), outputs "boxes", "scores", "labels" with a dynamic first axis."""
    check_opset(opset)
    onnx, _ = require_onnx()
    axes = {"boxes": {0: "detections"}, "scores": {0: "detections"}, "labels": {0: "detections"}}
    if dynamic:
        axes["image"] = {1: "height", 2: "width"}
    with torch.no_grad(), quiet_tracer():
        torch.onnx.export(
            detector,
            (example,),
            str(path),
            dynamo=False,  # see the module docstring
            opset_version=opset,
            input_names=["image"],
            output_names=["boxes", "scores", "labels"],
            dynamic_axes=axes,
        )
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))


def export_torchscript(
    detector: DeployableDetector,
    example: torch.Tensor,
    path: str | os.PathLike,
    *,
    metadata: dict[str, str] | None = None,
) -> None:
    """Write `detector` as a traced TorchScript module (any image size; the metadata goes into
    the archive's extra files). Loading it needs `import torchvision` first (nms, roi_align)."""
    with torch.no_grad(), quiet_tracer():
        traced = torch.jit.trace(detector, (example,), check_trace=False)
        torch.jit.save(traced, str(path), _extra_files=dict(metadata or {}))


# -- the whole export -------------------------------------------------------------------------


@dataclass
class ExportReport:
    """What export_checkpoint did."""

    output: Path
    format: str
    precision: str
    dynamic: bool
    image: str  # what the check ran on
    image_size: tuple[int, int]
    comparison: Comparison
    export_s: float
    seconds: dict[str, float] = field(default_factory=dict)  # one run each: pytorch, exported

    @property
    def ok(self) -> bool:
        return self.comparison.ok

    def __str__(self) -> str:
        h, w = self.image_size
        return (
            f"exported {self.format} ({self.precision}, "
            f"{'dynamic size' if self.dynamic else f'fixed size {h}x{w}'}) in "
            f"{self.export_s:.1f} s\n"
            f"check on {self.image}, {h}x{w}: {self.comparison}\n"
            f"one run: PyTorch {self.seconds.get('pytorch', 0):.3f} s, exported "
            f"{self.seconds.get('exported', 0):.3f} s (first run, not a benchmark)"
        )


def check_image(image: str | os.PathLike | None, size: tuple[int, int] | None):
    """The check's image as a float tensor and its description: the file given, or a
    generated shapes scene (detection.data.shapes, seed 0); resized to `size` if given."""
    if image is not None:
        try:
            tensor = to_tensor(Path(image))
        except OSError as e:
            raise ExportError(str(e)) from None
        name = str(image)
    else:
        from ..data.shapes import render_shapes_image

        array, _ = render_shapes_image(0, 0)
        tensor = to_tensor(array)
        name = "a generated shapes scene (--image for another)"
    if size is not None and tuple(tensor.shape[1:]) != tuple(size):
        tensor = torch.nn.functional.interpolate(
            tensor[None], size=tuple(size), mode="bilinear", align_corners=False
        )[0].clamp(0, 1)
        name += ", resized"
    return tensor, name


def _check_request(format: str, precision: str, opset: int, size) -> None:
    """ExportError for arguments export_checkpoint cannot take, before any work."""
    if format not in FORMATS:
        raise ExportError(f"unknown format {format!r}: use {' or '.join(FORMATS)}")
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision!r}: use {' or '.join(PRECISIONS)}")
    if format == "onnx":
        check_opset(opset)
        require_onnx()
    if size is not None and (len(size) != 2 or min(size) < 32):
        raise ExportError(f"--size {size}: give H W, each at least 32")


def _reference_model(checkpoint, overrides, format: str, opset: int):
    """The checkpoint's detector in fp32, as the Predictor runs it (the check's reference)."""
    model = load_model(checkpoint, [*overrides, "test.precision=fp32", "model.compile=false"])
    pooler = model.roi_heads.pooler
    if format == "onnx" and pooler.pooler_type == "roi_align" and pooler.aligned and opset < 16:
        raise ExportError(
            f"model.roi_heads.pooler_aligned=true needs --opset 16 or newer (ONNX RoiAlign "
            f"has no half-pixel mode before 16); got --opset {opset}"
        )
    return Predictor(model).model


def _metadata(model, precision: str, checkpoint) -> dict[str, str]:
    return {
        "resdet": json.dumps(
            {
                "input": "image: float32 [3, H, W], RGB in [0, 1]; resize, normalisation and "
                "padding are inside",
                "outputs": "boxes float32 [D, 4] xyxy in input pixels, scores float32 [D], "
                "labels int64 [D] in 1..K",
                "class_names": list(model.class_names or []),
                "precision": precision,
                "checkpoint": str(checkpoint),
                "config": to_dict(model.cfg),
            }
        )
    }


def _write(detector, example, path, format: str, size, opset: int, metadata) -> None:
    if format == "onnx":
        export_onnx(detector, example, path, dynamic=size is None, opset=opset, metadata=metadata)
    else:
        export_torchscript(detector, example, path, metadata={"resdet.json": metadata["resdet"]})


def check_file(
    path, format: str, expected: dict[str, torch.Tensor], detector, example, precision: str
) -> tuple[Comparison, float]:
    """The exported file's detections on `example` against `expected` (check.py), and the
    seconds of its run. Where they differ, the reference's candidates (`detector` run by
    PyTorch) tell decisions that rounding flipped from a different model."""
    run = load_exported(path, format)
    start = time.perf_counter()
    got = run(example)
    seconds = time.perf_counter() - start
    bounds = TOLERANCES[precision]
    comparison = compare_detections(expected, got, *bounds)
    if comparison.unexplained:
        decisions = Decisions.of(detector, example)
        comparison = compare_detections(expected, got, *bounds, decisions=decisions)
    return comparison, seconds


def export_checkpoint(
    checkpoint: str | os.PathLike,
    output: str | os.PathLike,
    *,
    format: str = "onnx",
    size: tuple[int, int] | None = None,
    precision: str = "fp32",
    opset: int = DEFAULT_OPSET,
    overrides: list[str] | tuple[str, ...] = (),
    image: str | os.PathLike | None = None,
) -> ExportReport:
    """Export the detector of `checkpoint` (its config plus `overrides`) to `output`, check
    it against PyTorch on `image` (see check_image) and return the report. `size` (H, W)
    fixes the ONNX input size (None: any size; TorchScript files take any size either way).
    The file is renamed into place only when report.ok; bad arguments raise ExportError,
    FileNotFoundError or ValueError (ConfigError) before anything is written."""
    _check_request(format, precision, opset, size)
    example, image_name = check_image(image, size)
    # the reference: the PyTorch model as the Predictor runs it (fast path) in fp32; the
    # graph keeps its folded weights and memory format
    reference = _reference_model(checkpoint, overrides, format, opset)
    detector = DeployableDetector(copy.deepcopy(reference), precision).eval()
    with torch.inference_mode():
        start = time.perf_counter()
        if precision == "fp32":
            expected = reference([example])[0]
        else:  # the same fp16 graph, run by PyTorch
            expected = dict(zip(("boxes", "scores", "labels"), detector(example), strict=True))
        pytorch_s = time.perf_counter() - start
    output = Path(output)
    with atomic_path(output) as tmp:
        start = time.perf_counter()
        _write(
            detector, example, tmp, format, size, opset, _metadata(reference, precision, checkpoint)
        )
        export_s = time.perf_counter() - start
        comparison, exported_s = check_file(tmp, format, expected, detector, example, precision)
        report = ExportReport(
            output,
            format,
            precision,
            size is None or format == "torchscript",  # a traced graph takes any size
            image_name,
            (int(example.shape[1]), int(example.shape[2])),
            comparison,
            export_s,
            {"pytorch": pytorch_s, "exported": exported_s},
        )
        if not comparison.ok:
            raise ParityError(report)
    return report


class ParityError(Exception):
    """The exported file's detections differ from PyTorch's beyond the bounds (no file kept)."""

    def __init__(self, report: ExportReport) -> None:
        super().__init__(str(report))
        self.report = report


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The "resdet" metadata export_checkpoint stored in an ONNX or TorchScript file."""
    path = Path(path)
    with open(path, "rb") as f:
        is_zip = f.read(2) == b"PK"  # TorchScript archives are zip files, ONNX is protobuf
    if not is_zip:
        onnx, _ = require_onnx()
        model = onnx.load(str(path), load_external_data=False)
        props = {p.key: p.value for p in model.metadata_props}
        return json.loads(props.get("resdet", "{}"))
    files = {"resdet.json": ""}
    with quiet_tracer():
        torch.jit.load(str(path), map_location="cpu", _extra_files=files)
    return json.loads(files["resdet.json"] or "{}")
