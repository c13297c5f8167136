"""Convert torchvision's Faster R-CNN weights into a resdet checkpoint.

    resdet convert-weights --source torchvision \
        --input fasterrcnn_resnet50_fpn_coco-258fb6c6.pth --output R50_FPN_torchvision.pth
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from detection.config.cli import add_logging_arguments, configure_logging


def main(argv: list[str] | None = None) -> int:
    """Convert and write the checkpoint; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=["torchvision"], default="torchvision")
    parser.add_argument("--input", required=True, help="state dict of fasterrcnn_resnet50_fpn")
    parser.add_argument("--output", required=True, help="checkpoint to write")
    add_logging_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging(args)
    # the detector's modules (torchvision's ops, ~1.5 s) are imported once the arguments are good
    from detection.modeling import build_model
    from detection.modeling.convert import (
        coco_class_names,
        convert_torchvision_fpn,
        torchvision_fpn_config,
    )
    from detection.utils.checkpoint import model_checkpoint, save_atomic

    try:
        state = torch.load(args.input, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        parser.exit(2, f"error: input not found: {args.input}\n")
    except Exception as e:
        parser.exit(2, f"error: cannot read {args.input} with weights_only=True: {e}\n")
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    try:
        converted = convert_torchvision_fpn(state)
    except ValueError as e:
        parser.exit(2, f"error: {args.input}: {e}\n")
    cfg = torchvision_fpn_config()
    names = coco_class_names()
    model = build_model(cfg, load_weights=False, class_names=names)
    # check before writing: every tensor must have its place and shape
    model.load_state_dict(converted, strict=True)
    save_atomic(model_checkpoint(model.state_dict(), cfg, names), Path(args.output))
    print(f"wrote {args.output}: {len(converted)} tensors, config of fasterrcnn_resnet50_fpn")
    return 0


if __name__ == "__main__":
    sys.exit(main())
