"""Evaluate a checkpoint on a COCO-format test set (pycocotools box AP, percent).

    resdet evaluate --checkpoint output/model_final.pth [--output-dir DIR] [KEY=VALUE ...]
    resdet evaluate --checkpoint CKPT data.test.annotations=ann.json data.test.images=img/
    torchrun --nproc_per_node 2 -m detection.cli evaluate --checkpoint CKPT   # a shard per process
    resdet evaluate --checkpoint CKPT --analyze [--score-thresh 0.5]   # diagnostics
    resdet evaluate --checkpoint CKPT --report                          # one page to look at

The config is the one embedded in the checkpoint plus the overrides; with --config, that file
plus the overrides replace it. Writes DIR/metrics.json ({"bbox": {AP, AP50, AP75, APs, APm, APl,
per_category}, "checkpoint", "config", "dataset", "num_images", "inference"}; null where there
is no ground truth to average over) and DIR/detections.json (COCO results). DIR defaults to
<output_dir>/eval of the resolved config. Under torchrun (WORLD_SIZE > 1) each process infers
its shard (gloo on CPU, NCCL on CUDA) and rank 0 evaluates and writes.

--analyze (or test.analyze=true) also writes DIR/analysis/: per-class precision / recall / TP /
FP / FN of the detections scoring >= --score-thresh (default test.analyze_score_thresh, 0.5),
matched at IoU 0.5; a confusion matrix with background (missed objects, false detections);
PR curves per class (pr_<class>.png); the worst images. analysis.json holds every number,
summary.md (printed) the tables, confusion_matrix.png the matrix.

--report (or test.report=true) does the same and writes DIR/report.html, one self-contained
page: headline and per-class AP, PR curves, the confusion matrix, and the images with the most
errors, ground truth and detections side by side.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from detection.cli._common import add_device_argument, chosen_device, say_device
from detection.config import ConfigError
from detection.config.cli import (
    add_config_arguments,
    configure_logging,
    print_config,
    tool_parser,
)
from detection.utils.distributed import cleanup, device_of, init_distributed
from detection.utils.logging import log_to_file, remove_log_file
from detection.utils.precision import resolve_precision


def _parser() -> argparse.ArgumentParser:
    parser = tool_parser(__doc__)
    parser.add_argument(
        "--checkpoint",
        "--weights",
        dest="checkpoint",
        required=True,
        metavar="CKPT",
        help="checkpoint to test, or published weights by name (resdet weights lists them)",
    )
    add_config_arguments(parser, required=False)
    parser.add_argument(
        "--output-dir", metavar="DIR", help="where to write (default: <output_dir>/eval)"
    )
    add_device_argument(parser)
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward pass")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--analyze",
        action="store_true",
        help="also write diagnostics to DIR/analysis/ and print them: per-class precision and "
        "recall, confusions, PR curves, worst images (also done when test.analyze is true)",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="also write DIR/report.html: metrics, per-class table, PR curves, confusion matrix "
        "and the worst images in one page (implies --analyze; or test.report=true)",
    )
    parser.add_argument(
        "--score-thresh",
        type=float,
        metavar="T",
        help="score threshold in [0, 1] of --analyze (default: test.analyze_score_thresh)",
    )
    return parser


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit 2 on bad flags, before anything is loaded or written."""
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if args.report:  # the report is written with the diagnostics, by the config's switch
        args.analyze = True
        args.overrides.append("test.report=true")
    if args.score_thresh is not None and not args.analyze:
        parser.exit(
            2,
            f"{parser.prog}: error: --score-thresh is the threshold of --analyze: add --analyze\n",
        )
    # (a NaN fails the comparison too)
    if args.score_thresh is not None and not 0.0 <= args.score_thresh <= 1.0:
        parser.exit(
            2, f"{parser.prog}: error: --score-thresh must be in [0, 1], got {args.score_thresh}\n"
        )


def _analyze_threshold(
    parser: argparse.ArgumentParser, args: argparse.Namespace, cfg, output_dir
) -> float | None:
    """The diagnostics' score threshold (None: no diagnostics), or exit 2 if the config's is
    out of range."""
    if not (args.analyze or cfg.test.analyze or cfg.test.report):
        return None
    from detection.evaluation import check_analyze

    thresh = args.score_thresh if args.score_thresh is not None else cfg.test.analyze_score_thresh
    try:
        check_analyze(thresh, output_dir)
    except ValueError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    return thresh


def _load(parser: argparse.ArgumentParser, args: argparse.Namespace, device: str, rank: int):
    """(model, config, test set), or exit 2 saying what is wrong with them; rank 0 prints the
    config."""
    # imported here, after the flags are checked: detection.evaluation and detection.data pull
    # in torchvision's ops and albumentations (~2 s) that --help and bad flags never need
    from detection.data import build_dataset
    from detection.evaluation import check_classes, load_checkpoint_model
    from detection.modeling.zoo import resolve_weights

    try:
        args.checkpoint = str(resolve_weights(args.checkpoint))
        model, cfg = load_checkpoint_model(
            args.checkpoint, args.config, args.overrides, device=device
        )
    except ConfigError as e:
        parser.exit(2, f"{parser.prog}: config error: {e}\n")
    except (OSError, ValueError) as e:  # OSError: no such file, weights not downloadable
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    if rank == 0:
        print_config(cfg)
        print(f"inference precision: {_precision(model, cfg)}", flush=True)
    try:
        dataset = build_dataset(cfg, "test")
        check_classes(model, cfg, dataset)
    except (FileNotFoundError, ValueError) as e:
        parser.exit(2, f"{parser.prog}: error: test set: {e}\n")
    say_device(args)  # the inputs are good (say_device speaks for the first process only)
    return model, cfg, dataset


def _precision(model, cfg) -> str:
    """What test.precision resolved to on the model's device, with the reason."""
    device = next(model.parameters()).device
    return str(resolve_precision(cfg.test.precision, device))


def _report(record: dict, world_size: int, output_dir) -> None:
    from detection.evaluation import format_table

    print()
    print(format_table(record["bbox"]))
    speed = record["inference"]
    print(
        f"\n{record['num_images']} images, {speed['seconds']:.1f} s inference in "
        f"{speed.get('precision', 'fp32')} ({world_size} process(es))"
    )
    print(f"wrote {output_dir}/metrics.json and {output_dir}/detections.json")
    if "analysis" in record:
        folder = Path(record["analysis"]["dir"])
        print()
        print((folder / "summary.md").read_text(), end="")
        print(
            f"\nwrote the diagnostics to {folder}/: analysis.json (every number), summary.md, "
            "confusion_matrix.png, pr_<class>.png"
        )
    if "report" in record:
        print(f"wrote the report {record['report']} (open it in a browser)")


def main(argv: list[str] | None = None) -> int:
    """Evaluate the checkpoint; returns the exit status."""
    parser = _parser()
    args = parser.parse_intermixed_args(argv)
    configure_logging(args)
    _check_args(parser, args)
    args.device = chosen_device(parser, args)
    try:
        info = init_distributed(args.device)
        rank, world_size, device = info.rank, info.world_size, device_of(info, args.device)
    except RuntimeError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    log_file = None
    try:
        model, cfg, dataset = _load(parser, args, device, rank)
        from detection.evaluation import default_output_dir, evaluate_model

        output_dir = args.output_dir or default_output_dir(cfg)
        analyze = _analyze_threshold(parser, args, cfg, output_dir)
        if rank == 0:  # the inputs are checked: from here on, what is logged is kept
            log_file = log_to_file(Path(output_dir) / "log.txt")
        record = evaluate_model(
            model,
            cfg,
            output_dir,
            rank,
            world_size,
            device=device,
            batch_size=args.batch_size,
            dataset=dataset,
            checkpoint=args.checkpoint,
            progress=not args.no_progress,
            summary=sys.stdout if rank == 0 else None,
            analyze=analyze,
        )
        if rank == 0:
            _report(record, world_size, output_dir)
    finally:
        if log_file is not None:
            remove_log_file(log_file)
        cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
