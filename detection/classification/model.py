"""The classifier a config describes, and its start from pretrained weights."""

from __future__ import annotations

import logging

import torch
from torch import nn

from backbones import build_classifier, load_pretrained

from ..config.loader import ConfigError
from .config import ClassifierConfig

logger = logging.getLogger(__name__)


def build_model(cfg: ClassifierConfig, num_classes: int) -> nn.Module:
    """The classifier of cfg.model with `num_classes` outputs, initialised from model.weights
    (every layer but the last fc) when it names weights. model.head=pool_fc puts global average
    pooling and one fc on the backbone (VGG-16's light head; what the ResNets have anyway)."""
    m = cfg.model
    try:
        model = build_classifier(
            m.name,
            num_classes,
            shortcut=m.shortcut,
            norm=m.norm,
            zero_init_residual=m.zero_init_residual,
            pooled=m.head == "pool_fc",
        )
    except ValueError as e:
        raise ConfigError(f"model ({m.name}): {e}") from None
    if m.weights:
        _load_start(model, m.weights)
    return model


def _load_start(model: nn.Module, weights: str) -> None:
    """Pretrained backbone (and VGG's fc6/fc7); the last fc keeps its initialisation, since the
    classes of the new task are others."""
    if not hasattr(model, "backbone"):  # validated before; a guard for direct callers
        raise ConfigError(f"{model.arch_name} cannot load model.weights")
    reports = [load_pretrained(model.backbone, weights)]
    head = getattr(model, "head", None)
    if head is not None:
        reports.append(load_pretrained(head, weights))
    for report in reports:
        if not report.loaded:
            raise ConfigError(
                f"model.weights={weights}: no tensor fits {model.arch_name} ({report}); is it "
                "the checkpoint of another architecture?"
            )
        logger.info("model.weights: %s", report)


def classifier_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict in the classifier layout (backbone.*, head.*, fc.*), unwrapped from DDP
    and torch.compile, and on the CPU."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}
