"""Feature extractors: ResNet-18/34/50/101/152 (shortcut options A/B/C, plain), ResNeXt, Wide
ResNet and VGG-16; the CIFAR-10 ResNet-20/32/44/56/110 and their plain twins as classifiers;
any network a user registers (`register_backbone`). One table, backbones.registry, says what
each one offers.

This package knows nothing about detection.
"""

from .build import (
    PooledClassifier,
    build_backbone,
    build_classifier,
    list_backbones,
    list_classifiers,
    stage_names,
)
from .norm import FrozenBatchNorm2d
from .registry import BackboneSpec, RegisteredNames, get_backbone, register_backbone
from .weights import LoadReport, load_pretrained

__all__ = [
    "BackboneSpec",
    "FrozenBatchNorm2d",
    "LoadReport",
    "PooledClassifier",
    "RegisteredNames",
    "build_backbone",
    "build_classifier",
    "get_backbone",
    "list_backbones",
    "list_classifiers",
    "load_pretrained",
    "register_backbone",
    "stage_names",
]
