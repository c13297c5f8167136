"""The fast inference path: FrozenBN folded into the convolutions, channels_last feature maps,
autocast to bf16 / fp16, and optionally a compiled backbone.

Folding and channels_last change only float rounding: detections equal the plain path's within
float tolerance (tested). Lower precision changes the numbers more; its AP on shapes is reported
next to fp32's in the README's Performance section.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from backbones.norm import fold_frozen_batchnorm

from ..utils.precision import PRECISIONS, log_precision, resolve_precision

logger = logging.getLogger(__name__)


def compile_backbone(model: nn.Module) -> bool:
    """torch.compile the backbone in place; on failure keep it eager and say why."""
    try:
        compiled = torch.compile(model.backbone, dynamic=True)
        # compilation is lazy: run it once so that a missing compiler shows up here
        param = next(model.backbone.parameters())
        with torch.inference_mode():
            compiled(torch.zeros(1, 3, 64, 64, device=param.device, dtype=param.dtype))
    except Exception as e:  # noqa: BLE001 - any compiler failure means: run eager
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        logger.warning(
            "model.compile=true: torch.compile failed (%s: %s); running the backbone eagerly",
            type(e).__name__,
            first_line[:300],
        )
        return False
    model.backbone = compiled
    return True


def prepare_for_inference(
    model: nn.Module,
    *,
    fold_bn: bool = True,
    channels_last: bool | None = None,
    precision: str = "fp32",
    compile: bool = False,
) -> nn.Module:
    """Put a FasterRCNN in eval mode on the fast path, in place, and return it.

    fold_bn: every FrozenBatchNorm2d that follows a conv is folded into it (the weights change:
    do not train the model afterwards). channels_last: images and weights in NHWC, which
    oneDNN (CPU) and cuDNN run faster; None (auto) = on, except for models with GroupNorm on
    CPU, whose NHWC kernel is slower there.
    precision: autocast dtype of the forward ("auto", "fp32", "bf16", "fp16"; auto = bf16
    where the model's device runs it natively, see detection.utils.precision); boxes and scores are
    decoded in fp32 either way. In bf16 / fp16 the weights of every conv and linear layer are
    cast once here, as autocast would cast them on every forward (the same numbers; VGG-16 has
    134M parameters to cast). compile: torch.compile the backbone, falling back to eager with a
    warning where it cannot compile.
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    resolved = resolve_precision(precision, device)
    log_precision("inference", resolved)
    precision = resolved.name
    model.eval()
    if fold_bn:
        folded = fold_frozen_batchnorm(model)
        logger.debug("folded %d FrozenBatchNorm2d layers into their convolutions", folded)
    if channels_last is None:
        on_cpu = device.type == "cpu"
        has_gn = any(isinstance(m, nn.GroupNorm) for m in model.modules())
        channels_last = not (on_cpu and has_gn)
    model.set_channels_last(channels_last)
    model.set_inference_precision(precision)
    if PRECISIONS[precision] is not None:
        cast = cast_matmul_weights(model, PRECISIONS[precision])
        logger.debug("cast %d conv / linear layers to %s", cast, precision)
    if compile:
        compile_backbone(model)
    return model


def cast_matmul_weights(model: nn.Module, dtype: torch.dtype) -> int:
    """Cast the weights and biases of every Conv2d and Linear to `dtype` in place; returns how
    many layers. Only for a model that then runs under autocast to `dtype`, which casts exactly
    these tensors to `dtype` anyway; the rest (norms, RoI pooling, box decoding) stays fp32."""
    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    for m in layers:
        for p in m.parameters(recurse=False):
            p.data = p.data.to(dtype)
    return len(layers)


def inference_options(cfg) -> dict:
    """prepare_for_inference's keyword arguments from a config (test.* and model.compile)."""
    fast = cfg.test.fast_path
    return {
        "fold_bn": fast,
        "channels_last": None if fast else False,
        "precision": cfg.test.precision,
        "compile": cfg.model.compile,
    }
