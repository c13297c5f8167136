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

import contextlib
import copy
import json
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import to_dict
from ..modeling import load_model
from ..predictor import Predictor, to_tensor
from ..utils.io import atomic_path
from .formats import DEFAULT_OPSET, FORMATS, MAX_OPSET, MIN_OPSET
from .graph import PRECISIONS, DeployableDetector

EXPORT_EXTRA = "pip install 'resdet[export]' (or: pip install onnx onnxruntime)"

# The bounds of the check. fp32: the same arithmetic in another runtime; differences are
# float rounding (measured: boxes within 1e-4 px, scores within 2e-5). fp16: both sides run
# the backbone and heads in fp16, but ONNX Runtime's fp16 kernels round and accumulate
# differently from PyTorch's (10-bit mantissa: a logit of 10 moves by 0.005), so scores are
# held to 1e-2 and boxes to 1 px.
TOLERANCES = {"fp32": (0.5, 1e-3), "fp16": (1.0, 1e-2)}


class ExportError(Exception):
    """An export that cannot start: bad arguments, a missing runtime, an unreadable file."""


def check_opset(opset: int) -> None:
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(
            f"--opset {opset} is not supported: use {MIN_OPSET}..{MAX_OPSET} (nms and roi_align "
            f"need {MIN_OPSET}; torch.onnx's TorchScript exporter writes up to {MAX_OPSET}); "
            f"default {DEFAULT_OPSET}"
        )


def require_onnx():
    """(onnx, onnxruntime), or an ExportError that names the extra to install."""
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise ExportError(
            f"ONNX export needs the onnx and onnxruntime packages ({e.name} is missing): "
            f"{EXPORT_EXTRA}"
        ) from None
    return onnx, onnxruntime


# -- writing ------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_tracer():
    """Silence the tracer's generic warnings: DeployableDetector keeps every size-dependent
    value a tensor (tested on other sizes), and the legacy exporter is chosen on purpose."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", "You are using the legacy TorchScript-based ONNX")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch.onnx")
        # torch.jit is deprecated in favour of torch.export (said in the README's Deploy
        # section); TorchScript is still what C++ / LibTorch deployments load
        warnings.filterwarnings("ignore", "`torch.jit", FutureWarning)
        yield


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
    with torch.no_grad(), _quiet_tracer():
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
    with torch.no_grad(), _quiet_tracer():
        traced = torch.jit.trace(detector, (example,), check_trace=False)
        torch.jit.save(traced, str(path), _extra_files=dict(metadata or {}))


# -- running --------------------------------------------------------------------------------------


class OnnxRunner:
    """An ONNX file in onnxruntime (CPU): image tensor in, {boxes, scores, labels} out."""

    def __init__(
        self, path: str | os.PathLike, threads: int | None = None, spin: bool = True
    ) -> None:
        _, ort = require_onnx()
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        if not spin:  # idle threads sleep instead of spinning on the cores after a run
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # warnings about unused initializers etc. are noise
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        boxes, scores, labels = self.session.run(None, {self.input: image.float().numpy()})
        return {
            "boxes": torch.from_numpy(boxes),
            "scores": torch.from_numpy(scores),
            "labels": torch.from_numpy(labels),
        }


class TorchScriptRunner:
    """A TorchScript file from export_torchscript, loaded with torch.jit.load."""

    def __init__(self, path: str | os.PathLike) -> None:
        import torchvision  # noqa: F401 - registers torchvision::nms / roi_align for the graph

        with _quiet_tracer():
            self.module = torch.jit.load(str(path), map_location="cpu")

    def __call__(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.inference_mode():
            boxes, scores, labels = self.module(image)
        return {"boxes": boxes, "scores": scores, "labels": labels}


def load_exported(path: str | os.PathLike, format: str):
    """A callable running an exported file (see OnnxRunner, TorchScriptRunner)."""
    if format == "onnx":
        return OnnxRunner(path)
    if format == "torchscript":
        return TorchScriptRunner(path)
    raise ExportError(f"unknown format {format!r}: use {' or '.join(FORMATS)}")


# -- comparing --------------------------------------------------------------------------------


@dataclass
class Comparison:
    """Detections of an exported file against PyTorch's on one image."""

    reference: int  # detections of the PyTorch model
    exported: int
    matched: int  # pairs of the same label (greedy by score, nearest box)
    max_box_diff: float  # px, over matched pairs
    max_score_diff: float
    box_atol: float
    score_atol: float

    @property
    def ok(self) -> bool:
        return (
            self.reference == self.exported == self.matched
            and self.max_box_diff <= self.box_atol
            and self.max_score_diff <= self.score_atol
        )

    def __str__(self) -> str:
        verdict = "OK" if self.ok else "FAILED"
        if self.reference == 0 and self.exported == 0:
            return "no detections in either (nothing else to compare)"
        return (
            f"{verdict}: detections {self.exported} exported / {self.reference} PyTorch, "
            f"{self.matched} matched by label; max |box diff| {self.max_box_diff:.2e} px "
            f"(bound {self.box_atol:g}), max |score diff| {self.max_score_diff:.2e} (bound "
            f"{self.score_atol:g})"
        )


def compare_detections(
    reference: dict[str, torch.Tensor],
    exported: dict[str, torch.Tensor],
    box_atol: float = TOLERANCES["fp32"][0],
    score_atol: float = TOLERANCES["fp32"][1],
) -> Comparison:
    """Match each reference detection (best first) to the unmatched exported detection of the
    same label with the nearest box, and measure the largest differences. Matching, rather
    than comparing position by position, lets two detections of almost equal score swap
    places without failing the check."""
    ref_boxes = reference["boxes"].float().cpu()
    out_boxes = exported["boxes"].float().cpu()
    ref_scores, out_scores = reference["scores"].float().cpu(), exported["scores"].float().cpu()
    n, m = len(ref_boxes), len(out_boxes)
    cost = (ref_boxes[:, None, :] - out_boxes[None, :, :]).abs().amax(-1) if n and m else None
    if cost is not None:
        same = reference["labels"].cpu()[:, None] == exported["labels"].cpu()[None, :]
        cost = torch.where(same, cost, torch.full_like(cost, float("inf")))
    box_diff, score_diff, pairs = 0.0, 0.0, 0
    taken = torch.zeros(m, dtype=torch.bool)
    for i in range(n if cost is not None else 0):  # at most detections_per_image
        row = cost[i].masked_fill(taken, float("inf"))
        j = int(row.argmin())
        if not torch.isfinite(row[j]):
            continue
        taken[j] = True
        pairs += 1
        box_diff = max(box_diff, float(row[j]))
        score_diff = max(score_diff, float((ref_scores[i] - out_scores[j]).abs()))
    return Comparison(n, m, pairs, box_diff, score_diff, box_atol, score_atol)


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
    if format not in FORMATS:
        raise ExportError(f"unknown format {format!r}: use {' or '.join(FORMATS)}")
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision!r}: use {' or '.join(PRECISIONS)}")
    if format == "onnx":
        check_opset(opset)
        require_onnx()
    if size is not None and (len(size) != 2 or min(size) < 32):
        raise ExportError(f"--size {size}: give H W, each at least 32")
    example, image_name = check_image(image, size)
    # the reference: the PyTorch model as the Predictor runs it (fast path) in fp32
    model = load_model(checkpoint, [*overrides, "test.precision=fp32", "model.compile=false"])
    pooler = model.roi_heads.pooler
    if format == "onnx" and pooler.pooler_type == "roi_align" and pooler.aligned and opset < 16:
        raise ExportError(
            f"model.roi_heads.pooler_aligned=true needs --opset 16 or newer (ONNX RoiAlign "
            f"has no half-pixel mode before 16); got --opset {opset}"
        )
    reference = Predictor(model)
    folded = copy.deepcopy(reference.model).set_channels_last(False)
    detector = DeployableDetector(folded, precision).eval()
    metadata = {
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
    with torch.inference_mode():
        start = time.perf_counter()
        if precision == "fp32":
            expected = reference.model([example])[0]
        else:  # the same fp16 graph, run by PyTorch
            expected = dict(zip(("boxes", "scores", "labels"), detector(example), strict=True))
        pytorch_s = time.perf_counter() - start
    output = Path(output)
    with atomic_path(output) as tmp:
        start = time.perf_counter()
        if format == "onnx":
            export_onnx(
                detector, example, tmp, dynamic=size is None, opset=opset, metadata=metadata
            )
        else:
            meta = {"resdet.json": metadata["resdet"]}
            export_torchscript(detector, example, tmp, metadata=meta)
        export_s = time.perf_counter() - start
        run = load_exported(tmp, format)
        start = time.perf_counter()
        got = run(example)
        exported_s = time.perf_counter() - start
        comparison = compare_detections(expected, got, *TOLERANCES[precision])
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
    with _quiet_tracer():
        torch.jit.load(str(path), map_location="cpu", _extra_files=files)
    return json.loads(files["resdet.json"] or "{}")
