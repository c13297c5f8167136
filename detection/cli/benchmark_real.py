"""Real-photo benchmark: torchvision's Faster R-CNN vs resdet's recipes.

    resdet benchmark-real --data ../shared/datasets/bccd \
        --anchor ../shared/anchors/torchvision_frcnn_baseline.py --seeds 0 1 2
    resdet benchmark-real --data DIR --anchor A --seeds 0 1 --reuse   # add a seed
    resdet benchmark-real --data DIR --splits train val --anchor A     # tune on train / val
    resdet benchmark-real --train T.json --val V.json --images DIR --no-anchor --seconds 600

--data takes a Pascal VOC folder (annotations/ + images/, or Annotations/ + JPEGImages/),
converted to COCO json under OUTPUT_DIR/data (the images are not copied): split by its
ImageSets/Main lists when it has trainval.txt and test.txt (train on trainval, report on test;
--splits names others), else every 5th image to val (the raccoon set's agreed 160 / 40 split).
--train/--val/--images take a COCO split instead. For each seed the anchor script (torchvision's
detector, ResNet-18 FPN from scratch, ITERS x 4 images at 320 / 512) runs first, then every
member of the set (default real/benchmark.yaml) at equal time, the anchor's training seconds
of that seed as its budget (solver.max_seconds: the schedule laid out over the iterations that
fit), and at equal iterations, max_iter = ITERS (--budgets picks). Each run lives in
OUTPUT_DIR/seed<k>/<name> (equal time: seed<k>/time/<name>); the tables (AP, AP50, AP75 with
the seeds' range, APs/m/l, per-class AP, iterations, training seconds, time relative to
torchvision) are printed and written to OUTPUT_DIR/benchmark.md and benchmark.json. The
anchor takes 45-60 minutes per seed on 2 CPU cores: run it alone on the machine; --reuse keeps
finished runs, so an interrupted benchmark continues where it stopped.
"""

from __future__ import annotations

import sys
from pathlib import Path

from detection.cli._common import add_device_argument, chosen_device, say_device
from detection.config.cli import configure_logging, tool_parser


def _parser():
    parser = tool_parser(__doc__)
    parser.add_argument("--data", help="Pascal VOC folder, converted and split (see above)")
    parser.add_argument(
        "--splits",
        nargs=2,
        metavar=("TRAIN", "VAL"),
        help="with --data: the ImageSets/Main lists to train and report on (default: trainval "
        "test where both exist, else every 5th image to val)",
    )
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
    parser.add_argument(
        "--budgets",
        nargs="+",
        choices=("time", "iterations"),
        default=["time", "iterations"],
        help="resdet's runs at the anchor's time, at its iterations, or both (default)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        help="the equal-time budget in seconds (default: the anchor's time of each seed)",
    )
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
    if args.splits and not args.data:
        parser.error("--splits goes with --data")
    if "time" in args.budgets and args.no_anchor and args.seconds is None:
        parser.error("equal time needs the anchor's time: give --seconds, or --budgets iterations")
    args.device = chosen_device(parser, args)
    from detection.analysis.ablation import load_ablation_set
    from detection.benchmark import real_photos as rb
    from detection.benchmark import real_report
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
            split = rb.voc_split(args.data, ablation.output_dir / "data", sets=args.splits)
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
            budgets=args.budgets,
            seconds=args.seconds,
            overrides=args.overrides,
            device=args.device,
            reuse=args.reuse,
            log=lambda msg: print(msg, file=sys.stderr, flush=True),
        )
    except (ConfigError, FileNotFoundError, ValueError, ImageReadError) as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    rows = real_report.summary_rows(results)
    data = split.description or f"{split.train} / {split.val}"
    heading = f"{ablation.description or ablation.name}; {data}; {machine_description(args.device)}"
    print(real_report.format_markdown(rows, results, heading))
    paths = real_report.write_report(ablation.output_dir, rows, results, heading)
    print("wrote " + ", ".join(str(p) for p in paths), file=sys.stderr)
    return 0 if all(r.status == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
