"""Faster R-CNN: anchors, box coding, matching, sampling, RPN, poolers, RoI heads, meta-arch."""

from .build import build_model, load_model
from .fast import inference_options, prepare_for_inference
from .rcnn import FasterRCNN

__all__ = [
    "FasterRCNN",
    "build_model",
    "inference_options",
    "load_model",
    "prepare_for_inference",
]
