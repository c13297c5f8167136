"""Faster R-CNN: anchors, box coding, matching, sampling, RPN, poolers, RoI heads, meta-arch."""

from .build import build_model, load_model, read_checkpoint
from .rcnn import FasterRCNN

__all__ = ["FasterRCNN", "build_model", "load_model", "read_checkpoint"]
