"""Deployment: the detector exported to ONNX / TorchScript (checked against PyTorch), and
inference on videos.

The public names are imported on first use (PEP 562).
"""

from __future__ import annotations

from ..utils.lazy import lazy_exports

_PUBLIC = {
    "DEFAULT_OPSET": ".formats",
    "FORMATS": ".formats",
    "Comparison": ".check",
    "DeployableDetector": ".graph",
    "ExportError": ".runtime",
    "ExportReport": ".export",
    "ParityError": ".export",
    "compare_detections": ".check",
    "export_checkpoint": ".export",
    "load_exported": ".runtime",
    "read_metadata": ".export",
}

__all__ = sorted(_PUBLIC)

__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
