"""Measure inference, training, data-loading or COCO-evaluation speed of a config.

    resdet benchmark --config coco/faster_rcnn_R50_FPN_1x.yaml \\
        --mode inference --size 800 1067 --iters 10 --vs-torchvision
    resdet benchmark --config coco/faster_rcnn_R101_C4_1x.yaml --mode train \\
        --batch 2 --precision bf16 --json r101_train.json
    resdet benchmark --config shapes/demo_R18_C4.yaml --mode data \\
        data.num_workers=2
    resdet benchmark --config shapes/demo_R18_C4.yaml --mode eval \\
        [--results output/.../detections.json | --synthetic-images 5000]
    resdet benchmark --onnx model.onnx --checkpoint CKPT [--size 800 1067] [--iters 10]

inference / train: weights are random (speed does not depend on them); inference runs the fast
path that evaluation uses (test.fast_path=false for the plain one); with --vs-torchvision both
models carry the same weights, run alternately, and the detections are compared (labels, boxes
and scores; "n/a" when neither model detects anything, as random weights may). data: images/s
of the training loader (decode, augment, collate) with data.num_workers. eval: seconds of a COCO
evaluation of the test set with pycocotools and, where installed, faster-coco-eval.
--onnx FILE --checkpoint CKPT (the checkpoint resdet export exported it from): onnxruntime
against our Predictor (fast path, --precision) on the same synthetic image of --size, on the
CPU with the same threads, alternating; prints both medians and whether the detections agree.
"""

from __future__ import annotations

import json
import sys

from detection.cli._common import add_device_argument, chosen_device, say_device
from detection.config.cli import (
    add_config_arguments,
    config_from_args,
    configure_logging,
    tool_parser,
)
from detection.utils.precision import PRECISIONS


def _same_detections(result: dict) -> str:
    if "same_detections" not in result:
        return ""
    if result["same_detections"] is None:
        return "; same detections: n/a (neither model detected anything)"
    return f"; same detections: {result['same_detections']}"


def _memory(args, speed: dict) -> str:
    what = "max allocated" if args.device.startswith("cuda") else "peak RSS of the process"
    return f"{what} {speed['peak_memory_mb']:.0f} MiB"


def _print_speed(args, result) -> None:
    ours = result["ours"]
    print(
        f"{args.mode} {args.precision} {args.size[0]}x{args.size[1]} batch {args.batch} on "
        f"{args.device}: median {ours['median_s'] * 1000:.1f} ms/iter (p90 "
        f"{ours['p90_s'] * 1000:.1f}), {ours['images_per_s']:.2f} images/s, " + _memory(args, ours)
    )
    print(
        f"  {result['flops_per_image'] / 1e9:.1f} GFLOP/image, {ours['gflops_per_s']:.1f} "
        f"GFLOP/s = {100 * ours['fraction_of_peak']:.0f}% of the {result['peak_gflops']:.0f}"
        f" GFLOP/s peak ({result['peak_kernel']}; matmul {result['matmul_peak_gflops']:.0f});"
        f" its convolutions {ours['conv_gflops_per_s']:.1f} GFLOP/s"
    )
    if args.mode == "inference":
        print(
            f"  after the backbone (RPN, pooling, heads, post-processing): "
            f"{100 * ours['after_backbone_fraction']:.0f}% of the time"
            + (" (fast path)" if result["fast_path"] else " (plain path)")
        )
    if args.vs_torchvision:
        tv = result["torchvision"]
        print(
            f"  torchvision ({result['torchvision_precision']}): median "
            f"{tv['median_s'] * 1000:.1f} ms/iter, "
            f"{tv['images_per_s']:.2f} images/s, {_memory(args, tv)}"
            + (
                f", {100 * tv['after_backbone_fraction']:.0f}% after the backbone"
                if args.mode == "inference"
                else ""
            )
            + f"; ours/torchvision speed {result['speed_ratio_ours_over_torchvision']:.2f}x"
            + _same_detections(result)
        )
    for name, table in result.get("profile", {}).items():
        print(f"\ntop operators, {name}:\n{table}")


def _parser():
    parser = tool_parser(__doc__)
    add_config_arguments(parser, required=False)  # required unless --onnx
    parser.add_argument(
        "--mode", choices=["inference", "train", "data", "eval"], default="inference"
    )
    add_device_argument(parser)
    parser.add_argument("--precision", choices=list(PRECISIONS), default="fp32")
    parser.add_argument("--size", type=int, nargs=2, default=[800, 1067], metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--iters", type=int, default=None, help="default: 10 (data: 50, eval: 3)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--vs-torchvision", action="store_true")
    parser.add_argument(
        "--torchvision-precision",
        choices=list(PRECISIONS),
        help="precision of torchvision's run (default: --precision), e.g. fp32 to compare our "
        "bf16 with torchvision's fp32",
    )
    parser.add_argument("--profile", action="store_true", help="print torch.profiler's top ops")
    parser.add_argument("--results", help="eval mode: a COCO results json (default: synthetic)")
    parser.add_argument(
        "--synthetic-images",
        type=int,
        default=0,
        metavar="N",
        help="eval mode: a synthetic COCO-like ground truth of N images instead of the test set",
    )
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--onnx", metavar="FILE", help="time onnxruntime on this exported file")
    parser.add_argument("--checkpoint", metavar="CKPT", help="with --onnx: its checkpoint")
    return parser


def _run_onnx(args, say) -> dict:
    """--onnx: onnxruntime against our fast path; prints and returns the record."""
    from detection.benchmark.onnx import benchmark_onnx
    from detection.deploy.export import ExportError
    from detection.modeling.zoo import resolve_weights

    try:
        result = benchmark_onnx(
            resolve_weights(args.checkpoint),
            args.onnx,
            size=tuple(args.size),
            overrides=args.overrides,
            precision=args.precision,
            iters=args.iters or 10,
            warmup=args.warmup,
            progress=say,
        )
    except ExportError as e:
        raise ValueError(str(e)) from None
    h, w = result["size"]
    ours, ort = result["pytorch"], result["onnxruntime"]
    runs = len(ours["times_s"])
    print(
        f"inference {h}x{w} on the CPU, {result['threads']} threads, median of {runs} "
        "alternating runs:\n"
        f"  PyTorch fast path ({result['pytorch_precision']}): {ours['median_s'] * 1000:.1f} ms "
        f"(p90 {ours['p90_s'] * 1000:.1f})\n"
        f"  onnxruntime ({result['onnx_precision']}): {ort['median_s'] * 1000:.1f} ms (p90 "
        f"{ort['p90_s'] * 1000:.1f}); onnxruntime/PyTorch speed "
        f"{result['speed_ratio_onnxruntime_over_pytorch']:.2f}x\n"
        f"  detections: {result['comparison']}"
    )
    return result


def _print_data(result: dict) -> None:
    print(
        f"data: {result['images_per_s']:.1f} images/s ({result['dataset']}, "
        f"{result['num_workers']} workers, batch {result['batch']}, "
        f"{result['mean_megapixels_per_image']:.2f} MP/image after resizing)"
    )


def _print_eval(result: dict) -> None:
    print(
        f"eval: {result['num_images']} images, {result['num_detections']} detections "
        f"({result['results']})"
    )
    for backend in ("pycocotools", "faster"):
        if backend in result:
            print(f"  {backend}: {result[backend]['median_s']:.2f} s")
    if "same_metrics" in result:
        print(
            f"  faster-coco-eval {result['speedup_faster_over_pycocotools']:.1f}x "
            f"quicker; same metrics: {result['same_metrics']}"
        )


def _run(args, cfg, say) -> dict:
    """Measure what --mode names and print it; returns the result record."""
    # imported after the arguments are parsed: torchvision's ops and albumentations take ~2.5 s
    from detection.benchmark.evaluation import benchmark_eval
    from detection.benchmark.speed import benchmark, benchmark_data

    if args.mode == "data":
        result = benchmark_data(cfg, iters=args.iters or 50, warmup=args.warmup, progress=say)
        _print_data(result)
        return result
    if args.mode == "eval":
        result = benchmark_eval(
            cfg,
            results=args.results,
            synthetic_images=args.synthetic_images,
            iters=args.iters or 3,
            progress=say,
        )
        _print_eval(result)
        return result
    say_device(args)
    result = benchmark(
        cfg,
        mode=args.mode,
        device=args.device,
        precision=args.precision,
        size=tuple(args.size),
        batch=args.batch,
        iters=args.iters or 10,
        warmup=args.warmup,
        vs_torchvision=args.vs_torchvision,
        torchvision_precision=args.torchvision_precision,
        profile=args.profile,
        progress=say,
    )
    _print_speed(args, result)
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark --mode names (or --onnx); returns the exit status."""
    parser = _parser()
    say = lambda msg: print(f"  {msg}", file=sys.stderr, flush=True)  # noqa: E731
    args = parser.parse_intermixed_args(argv)
    configure_logging(args)
    if args.onnx:
        if not args.checkpoint:
            parser.error("--onnx needs --checkpoint (the checkpoint the file was exported from)")
        if args.config:
            parser.error("--onnx takes the model from --checkpoint; drop --config")
        run = lambda: _run_onnx(args, say)  # noqa: E731
    else:
        if not args.config:
            parser.error("the following arguments are required: --config (or --onnx)")
        args, cfg = config_from_args(parser, argv)
        if args.mode in ("inference", "train"):
            args.device = chosen_device(parser, args)
        cfg.model.backbone.weights = None  # speed does not depend on the weights: no download
        run = lambda: _run(args, cfg, say)  # noqa: E731
    try:
        result = run()
    except (ValueError, OSError) as e:  # OSError: a missing file, weights not downloadable
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
