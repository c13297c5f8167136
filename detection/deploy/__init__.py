"""Deployment: the detector exported to ONNX / TorchScript (checked against PyTorch), and
inference on videos."""

from .export import (
    DEFAULT_OPSET,
    FORMATS,
    Comparison,
    ExportError,
    ExportReport,
    ParityError,
    compare_detections,
    export_checkpoint,
    load_exported,
    read_metadata,
)
from .graph import DeployableDetector

__all__ = [
    "DEFAULT_OPSET",
    "FORMATS",
    "Comparison",
    "DeployableDetector",
    "ExportError",
    "ExportReport",
    "ParityError",
    "compare_detections",
    "export_checkpoint",
    "load_exported",
    "read_metadata",
]
