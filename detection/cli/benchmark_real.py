"""Real-photo benchmark: torchvision's Faster R-CNN vs resdet's recipes.

    resdet benchmark-real --data ../shared/datasets/raccoon \
        --anchor ../shared/anchors/torchvision_frcnn_baseline.py
    resdet benchmark-real --data DIR --anchor A --seeds 0 1 --reuse   # add a seed
    resdet benchmark-real --train T.json --val V.json --images DIR --no-anchor

--data takes a Pascal VOC folder (annotations/ + images/, or Annotations/ + JPEGImages/): it is
converted to COCO json and split by image, every 5th to val (the raccoon set's agreed 160 / 40
split), under OUTPUT_DIR/data; the images are not copied. --train/--val/--images take a COCO
split instead. The anchor script (torchvision's detector, ResNet-18 FPN from scratch, ITERS x 4
images at 320 / 512) runs first for each seed, then every member of the set (default
real/benchmark.yaml, shipped: torchvision's recipe in resdet, resdet's from-scratch recipe and
its BatchNorm variant) with max_iter = ITERS. Each run lives in OUTPUT_DIR/seed<k>/<name>; the
table (AP, AP50, training seconds, time relative to torchvision; means over seeds) is printed
and written to OUTPUT_DIR/benchmark.md and benchmark.json. A run takes ~40 minutes on 2 CPU
cores; --reuse keeps finished runs, so an interrupted benchmark continues where it stopped.
"""

from __future__ import annotations

import sys
from pathlib import Path

from detection.cli._common import add_device_argument, chosen_device, say_device
from detection.config.cli import configure_logging, tool_parser


def _parser():
    parser = tool_parser(__doc__)
    parser.add_argument("--data", help="Pascal VOC folder, converted and split every 5th to val")
    parser.add_argument("--train", help="COCO json of the training split (instead of --data)")
    parser.add_argument("--val", help="COCO json of the validation split")
    parser.add_argument("--images", help="image folder of --train and --val")
    anchor = parser.add_mutually_exclusive_group(required=True)
    anchor.add_argument("--anchor", help="torchvision's anchor script")
    anchor.add_argument("--no-anchor", action="store_true", help="run resdet's recipes only")
    parser.add_argument(
        "--set", default="real/benchmark.yaml", help="resdet's recipes (a file or shipped name)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds (default: 0)")
    parser.add_argument("--iters", type=int, default=300, help="iterations of 4 images (300)")
    parser.add_argument("--output-dir", help="default: the set's output_dir")
    parser.add_argument("--reuse", action="store_true", help="keep runs that finished before")
    add_device_argument(parser)
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides for resdet's runs"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns 1 when a run failed, 2 on bad input."""
    parser = _parser()
    args = parser.parse_intermixed_args(argv)
    configure_logging(args)
    files = (args.train, args.val, args.images)
    if bool(args.data) == any(files) or (any(files) and not all(files)):
        parser.error("give --data, or all of --train, --val and --images")
    args.device = chosen_device(parser, args)
    from detection.analysis.ablation import load_ablation_set
    from detection.benchmark import real_photos as rb
    from detection.config import ConfigError
    from detection.config.loader import resolve_config_path
    from detection.data import ImageReadError
    from detection.utils.precision import machine_description

    anchor = None if args.no_anchor else Path(args.anchor)
    try:
        if anchor is not None and not anchor.is_file():
            raise FileNotFoundError(f"anchor script not found: {anchor}")
        ablation = load_ablation_set(resolve_config_path(args.set), args.output_dir)
        if args.data:
            split = rb.voc_split(args.data, ablation.output_dir / "data")
        else:
            split = rb.Split(*(Path(f).resolve() for f in files))
            for path in files:
                if not Path(path).exists():
                    raise FileNotFoundError(f"not found: {path}")
        say_device(args)
        results = rb.run_benchmark(
            ablation,
            split,
            args.seeds,
            anchor=anchor,
            iters=args.iters,
            overrides=[*args.overrides, *rb.budget_overrides(args.iters)],
            device=args.device,
            reuse=args.reuse,
            log=lambda msg: print(msg, file=sys.stderr, flush=True),
        )
    except (ConfigError, FileNotFoundError, ValueError, ImageReadError) as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    rows = rb.summary_rows(results)
    heading = f"{ablation.description or ablation.name}; {machine_description(args.device)}"
    print(rb.format_markdown(rows, results, heading))
    paths = rb.write_report(ablation.output_dir, rows, results, heading)
    print("wrote " + ", ".join(str(p) for p in paths), file=sys.stderr)
    return 0 if all(r.status == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
