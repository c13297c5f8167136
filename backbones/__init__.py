"""Feature extractors: ResNet-18/34/50/101/152 (shortcut options A/B/C, plain) and VGG-16;
the CIFAR-10 ResNet-20/32/44/56/110 and their plain twins as classifiers.

This package knows nothing about detection.
"""

from .build import (
    build_backbone,
    build_classifier,
    list_backbones,
    list_classifiers,
    stage_names,
)
from .norm import FrozenBatchNorm2d
from .weights import LoadReport, load_pretrained

__all__ = [
    "FrozenBatchNorm2d",
    "LoadReport",
    "build_backbone",
    "build_classifier",
    "list_backbones",
    "list_classifiers",
    "load_pretrained",
    "stage_names",
]
