"""Train a detector (one process, or one per GPU / CPU slot under torchrun).

resdet train --config shapes/demo_R18_C4.yaml
torchrun --nproc_per_node 8 -m detection.cli train --config coco/faster_rcnn_R101_C4_1x.yaml
resdet train --config CFG --resume                 # continue from last_checkpoint
resdet train --eval-only --checkpoint output/x/model_final.pth [KEY=VALUE ...]

--eval-only evaluates --checkpoint with the config embedded in it plus the KEY=VALUE overrides
(as resdet evaluate does without --config); --config is not needed then, and not read.
metrics.json and detections.json go to --output-dir, or else to that config's output_dir.
"""

from __future__ import annotations

import argparse
import sys

from detection.cli._common import add_device_argument, chosen_device, say_device
from detection.config import ConfigError
from detection.config.cli import (
    add_config_arguments,
    config_from_args,
    configure_logging,
    print_config,
    tool_parser,
)
from detection.engine.failures import TrainingError
from detection.utils.distributed import DistInfo, cleanup, device_of, init_distributed


def _parser() -> argparse.ArgumentParser:
    parser = tool_parser(__doc__)
    add_config_arguments(parser, required=False)
    parser.add_argument("--output-dir", help="overrides output_dir of the config")
    parser.add_argument("--resume", action="store_true", help="continue from last_checkpoint")
    parser.add_argument(
        "--eval-only",
        action="store_true",
        help="only evaluate --checkpoint, with its embedded config plus the overrides "
        "(--config is not read)",
    )
    parser.add_argument(
        "--checkpoint", help="checkpoint (or published weights' name) for --eval-only"
    )
    add_device_argument(parser)
    return parser


def _evaluate_only(args: argparse.Namespace, info: DistInfo, device: str) -> dict:
    """Evaluate the checkpoint with its embedded config plus the overrides."""
    from detection.evaluation import evaluate_checkpoint
    from detection.modeling.zoo import resolve_weights

    def show(cfg) -> None:
        print_config(cfg, file=sys.stderr)
        say_device(args)

    return evaluate_checkpoint(
        resolve_weights(args.checkpoint),
        overrides=args.overrides,
        output_dir=args.output_dir or (lambda cfg: cfg.output_dir),
        device=device,
        show_config=show if info.is_main else None,
    )


def _train(args: argparse.Namespace, cfg, info: DistInfo, device: str) -> dict:
    if info.is_main:
        print_config(cfg, file=sys.stderr)
        say_device(args)
    # imported once the config is shown: the trainer and the evaluation pull in torchvision's
    # ops and albumentations (~2 s), which --help and a config error never need
    from detection.engine.trainer import train
    from detection.evaluation import training_evaluator

    return train(
        cfg,
        resume=args.resume,
        device=device,
        dist_info=info,
        evaluate=training_evaluator(cfg, info.rank, info.world_size),
    )


def main(argv: list[str] | None = None) -> int:
    """Train (or, with --eval-only, evaluate); returns the exit status."""
    parser = _parser()
    args = parser.parse_intermixed_args(argv)
    configure_logging(args)
    cfg = None
    if args.eval_only:
        if not args.checkpoint:
            parser.error("--eval-only needs --checkpoint")
        if args.config:
            print(
                f"{parser.prog}: --eval-only does not read --config {args.config}: the "
                "checkpoint's embedded config and the overrides are used",
                file=sys.stderr,
            )
    elif args.config is None:
        parser.error("the following arguments are required: --config")
    else:
        args, cfg = config_from_args(parser, argv)
        if args.output_dir:
            cfg.output_dir = args.output_dir
    args.device = chosen_device(parser, args)
    try:
        info = init_distributed(args.device)
    except RuntimeError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    device = device_of(info, args.device)
    try:
        if args.eval_only:
            metrics = _evaluate_only(args, info, device)
        else:
            metrics = _train(args, cfg, info, device)
    except (ConfigError, ValueError, OSError) as e:
        # a bad config, dataset, image, checkpoint or a full disk: the message says what to fix
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    except (FloatingPointError, TrainingError) as e:
        print(f"{parser.prog}: training stopped: {e}", file=sys.stderr)
        return 1
    finally:
        cleanup()
    if info.is_main and metrics:
        bbox = metrics.get("eval", metrics).get("bbox")
        if bbox:
            print(f"AP {bbox['AP']:.2f}  AP50 {bbox['AP50']:.2f}  AP75 {bbox['AP75']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
