"""Measure inference or training speed of a config, optionally against torchvision.

    python tools/benchmark.py --config configs/coco/faster_rcnn_R50_FPN_1x.yaml \
        --mode inference --size 800 1067 --iters 10 --vs-torchvision
    python tools/benchmark.py --config configs/coco/faster_rcnn_R101_C4_1x.yaml --mode train \
        --batch 2 --precision bf16 --json r101_train.json

Weights are random (speed does not depend on them); with --vs-torchvision both models carry the
same weights, run alternately, and the detections are compared.
"""

from __future__ import annotations

import json
import sys

import torch

from detection.config.cli import add_config_arguments, config_from_args, tool_parser
from detection.engine.benchmark import PRECISIONS, benchmark


def main(argv: list[str] | None = None) -> int:
    parser = tool_parser(__doc__)
    add_config_arguments(parser)
    parser.add_argument("--mode", choices=["inference", "train"], default="inference")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=list(PRECISIONS), default="fp32")
    parser.add_argument("--size", type=int, nargs=2, default=[800, 1067], metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--vs-torchvision", action="store_true")
    parser.add_argument("--json", help="also write the results to this file")
    args, cfg = config_from_args(parser, argv)
    cfg.model.backbone.weights = None  # speed does not depend on the weights: no download
    try:
        result = benchmark(
            cfg,
            mode=args.mode,
            device=args.device,
            precision=args.precision,
            size=tuple(args.size),
            batch=args.batch,
            iters=args.iters,
            warmup=args.warmup,
            vs_torchvision=args.vs_torchvision,
            progress=lambda msg: print(f"  {msg}", file=sys.stderr, flush=True),
        )
    except ValueError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    ours = result["ours"]
    print(
        f"{args.mode} {args.precision} {args.size[0]}x{args.size[1]} batch {args.batch} on "
        f"{args.device}: median {ours['median_s'] * 1000:.1f} ms/iter (p90 "
        f"{ours['p90_s'] * 1000:.1f}), {ours['images_per_s']:.2f} images/s"
    )
    print(
        f"  {result['flops_per_image'] / 1e9:.1f} GFLOP/image, {ours['gflops_per_s']:.1f} "
        f"GFLOP/s = {100 * ours['fraction_of_peak']:.0f}% of the {result['matmul_peak_gflops']:.0f}"
        " GFLOP/s matmul peak"
    )
    if args.vs_torchvision:
        tv = result["torchvision"]
        print(
            f"  torchvision: median {tv['median_s'] * 1000:.1f} ms/iter, "
            f"{tv['images_per_s']:.2f} images/s; ours/torchvision speed "
            f"{result['speed_ratio_ours_over_torchvision']:.2f}x"
            + (
                f"; same detections: {result['same_detections']}"
                if "same_detections" in result
                else ""
            )
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
