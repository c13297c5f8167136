"""Train a detector (one process, or one per GPU / CPU slot under torchrun).

python tools/train.py --config configs/shapes/demo_R18_C4.yaml
torchrun --nproc_per_node 8 tools/train.py --config configs/coco/faster_rcnn_R101_C4_1x.yaml
python tools/train.py --config CFG --resume                 # continue from last_checkpoint
python tools/train.py --config CFG --eval-only --checkpoint output/x/model_final.pth
"""

from __future__ import annotations

import sys

import torch

from detection.config import ConfigError
from detection.config.cli import add_config_arguments, config_from_args, print_config, tool_parser
from detection.engine.distributed import cleanup, device_of, init_distributed
from detection.engine.trainer import TrainingError, train
from detection.evaluation import evaluate_model, training_evaluator
from detection.modeling import inference_options, load_model, prepare_for_inference


def main(argv: list[str] | None = None) -> int:
    parser = tool_parser(__doc__)
    add_config_arguments(parser)
    parser.add_argument("--output-dir", help="overrides output_dir of the config")
    parser.add_argument("--resume", action="store_true", help="continue from last_checkpoint")
    parser.add_argument("--eval-only", action="store_true", help="only evaluate --checkpoint")
    parser.add_argument("--checkpoint", help="checkpoint for --eval-only")
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda"
    )
    args, cfg = config_from_args(parser, argv)
    if args.output_dir:
        cfg.output_dir = args.output_dir
    if args.eval_only and not args.checkpoint:
        parser.error("--eval-only needs --checkpoint")
    try:
        info = init_distributed(args.device)
    except RuntimeError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    device = device_of(info, args.device)
    if info.is_main:
        print_config(cfg, file=sys.stderr)
    try:
        if args.eval_only:
            model = load_model(args.checkpoint, device=device)
            model = prepare_for_inference(model, **inference_options(cfg))
            metrics = evaluate_model(
                model,
                cfg,
                output_dir=cfg.output_dir,
                rank=info.rank,
                world_size=info.world_size,
                checkpoint=args.checkpoint,
            )
        else:
            metrics = train(
                cfg,
                resume=args.resume,
                device=device,
                dist_info=info,
                evaluate=training_evaluator(cfg, info.rank, info.world_size),
            )
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
