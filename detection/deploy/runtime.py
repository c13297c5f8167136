"""Running an exported detector: an ONNX file in onnxruntime, a TorchScript file in torch.jit;
and what both the exporter and the runners need (the error type, the optional ONNX packages,
the tracer's warnings silenced)."""

from __future__ import annotations

import contextlib
import os
import warnings

import torch

from .formats import FORMATS

EXPORT_EXTRA = "pip install 'resdet[export]' (or: pip install onnx onnxruntime)"


class ExportError(Exception):
    """An export that cannot start: bad arguments, a missing runtime, an unreadable file."""


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


@contextlib.contextmanager
def quiet_tracer():
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

        with quiet_tracer():
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
