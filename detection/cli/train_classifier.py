"""Train an image classifier: pretrain a backbone, or the paper's CIFAR-10 nets.

resdet train-classifier --config classification/shapes_resnet20.yaml  # embedded
resdet train-classifier --config classification/imagenet_R50.yaml data.root=DIR
resdet train-classifier --config classification/cifar10_resnet20.yaml data.root=DIR
torchrun --nproc_per_node 8 -m detection.cli train-classifier --config CFG [KEY=VALUE ...]
resdet train-classifier --config CFG --resume          # continue from last_checkpoint
resdet train-classifier --curves RUN_DIR [RUN_DIR ...] --output errors.png

data.root: for imagefolder the folder with train/<class>/*.jpg and val/<class>/*.jpg (ImageNet's
layout), for cifar10 the cifar-10-batches-py folder. A run's model_final.pth plugs into a
detection config as model.backbone.weights. --curves plots the training (thin) and validation
(bold) top-1 error of finished runs and prints their final errors; it trains nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from detection.classification.config import load_classifier_config
from detection.cli._common import add_device_argument, chosen_device, say_device
from detection.config import ConfigError, dump
from detection.config.cli import add_config_arguments, configure_logging, tool_parser
from detection.engine.failures import TrainingError
from detection.utils.distributed import cleanup, device_of, init_distributed


def _parser() -> argparse.ArgumentParser:
    parser = tool_parser(__doc__)
    add_config_arguments(parser, required=False)
    parser.add_argument("--output-dir", help="overrides output_dir of the config")
    parser.add_argument("--resume", action="store_true", help="continue from last_checkpoint")
    add_device_argument(parser)
    parser.add_argument(
        "--curves", nargs="+", metavar="RUN_DIR", help="plot the error curves of these runs"
    )
    parser.add_argument("--output", type=Path, help="the --curves PNG (default: curves.png)")
    return parser


def _curves(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from detection.classification.curves import (
        group_seeds,
        plot_error_curves,
        read_run,
        summary_table,
    )

    try:
        runs = [read_run(d) for d in args.curves]
    except (OSError, ValueError) as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    output = args.output or Path("curves.png")
    plot_error_curves(runs, output, " vs ".join(group_seeds(runs)))
    print(summary_table(runs))
    print(f"wrote {output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Train (or, with --curves, plot); returns the exit status."""
    parser = _parser()
    args = parser.parse_intermixed_args(argv)
    configure_logging(args)
    if args.curves:
        return _curves(parser, args)
    if args.config is None:
        parser.error("the following arguments are required: --config (or --curves)")
    try:
        cfg = load_classifier_config(args.config, args.overrides)
    except ConfigError as e:
        parser.exit(2, f"{parser.prog}: config error: {e}\n")
    if args.output_dir:
        cfg.output_dir = args.output_dir
    args.device = chosen_device(parser, args)
    try:
        info = init_distributed(args.device)
    except RuntimeError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    if info.is_main:
        print("resolved config:\n  " + dump(cfg).rstrip().replace("\n", "\n  "), file=sys.stderr)
        say_device(args)
    # the engine (data pipeline, torchvision) once the config is shown: --help stays quick
    from detection.classification.engine import train_classifier

    try:
        result = train_classifier(
            cfg, resume=args.resume, device=device_of(info, args.device), dist_info=info
        )
    except (ConfigError, ValueError, OSError) as e:
        # a bad config, dataset, image or weights file, or a full disk: the message says what
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    except (FloatingPointError, TrainingError) as e:
        print(f"{parser.prog}: training stopped: {e}", file=sys.stderr)
        return 1
    finally:
        cleanup()
    if info.is_main:
        val = result.get("val", {})
        top5 = f"  top-5 error {val['top5_err']:.2f}%" if "top5_err" in val else ""
        if val:
            print(f"top-1 error {val['top1_err']:.2f}%{top5} ({val['images']} validation images)")
        print(f"weights: {Path(cfg.output_dir) / 'model_final.pth'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
