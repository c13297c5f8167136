"""Layer responses (the paper's Fig. 7): the std of each 3x3 layer's output.

resdet analyze-responses --backbone resnet18 --shortcut none \
    --backbone resnet18 --shortcut A --images shapes_val --output output/responses
resdet analyze-responses --images shapes_val --output output/responses_detectors \
    --checkpoint output/shapes/ablations/plain_vs_residual/plain34/model_final.pth \
    --checkpoint output/shapes/ablations/plain_vs_residual/R34_A/model_final.pth

Each --backbone or --checkpoint starts a model; --shortcut, --norm, --weights and --label
after it describe that model (--shortcut/--norm/--weights: --backbone only). A response is the
output of the norm after a 3x3 conv (after BN, before the ReLU and the addition); its value is
the std over every element of every image's response (detection/analysis/responses.py). Random
backbones: each conv is He-initialised from --seed and its name, so same-named layers of plain
and residual nets start equal; BN runs in eval mode (random init: running mean 0, variance 1).
Detector checkpoints: the ResNet of FPN, or C4's conv1..res4 plus the box head's res5 run on
the whole res4 map; their own pixel mean/std and channel order are used.
--images: an image folder, a registered dataset (shapes_val), or a config (its data.test).
Writes OUTPUT/responses.csv (one row per model and 3x3 layer), responses.png and summary.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from backbones.norm import NORMS
from backbones.resnet import SHORTCUTS
from detection.cli._common import add_device_argument, chosen_device, say_device
from detection.config.cli import configure_logging, tool_parser


class _ModelStart(argparse.Action):
    """--backbone / --checkpoint: start a new model spec."""

    def __call__(self, parser, namespace, value, option_string=None):
        kind = "backbone" if option_string == "--backbone" else "checkpoint"
        namespace.models = [*(namespace.models or []), {"kind": kind, kind: value}]


class _ModelOption(argparse.Action):
    """--shortcut / --norm / --weights / --label: set an option of the last model."""

    def __call__(self, parser, namespace, value, option_string=None):
        if not namespace.models:
            parser.error(
                f"{option_string} must follow the --backbone or --checkpoint it applies to"
            )
        spec = namespace.models[-1]
        if self.dest != "label" and spec["kind"] != "backbone":
            parser.error(
                f"{option_string} applies to --backbone only; a checkpoint's config decides it "
                f"({spec['checkpoint']})"
            )
        if self.dest in spec:
            parser.error(f"{option_string} given twice for one model")
        spec[self.dest] = value


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--backbone / --checkpoint, each starting a model, and the options of the last one."""
    parser.set_defaults(models=[])
    parser.add_argument(
        "--backbone",
        action=_ModelStart,
        dest="models",
        metavar="NAME",
        help="a ResNet (resnet18..resnet152), seeded random or --weights",
    )
    parser.add_argument(
        "--checkpoint",
        action=_ModelStart,
        dest="models",
        metavar="CKPT",
        help="a detector checkpoint (C4 or FPN ResNet)",
    )
    parser.add_argument(
        "--shortcut",
        action=_ModelOption,
        dest="shortcut",
        choices=SHORTCUTS,
        help="shortcut option of the preceding --backbone (default B)",
    )
    parser.add_argument(
        "--norm",
        action=_ModelOption,
        dest="norm",
        choices=NORMS,
        help="norm layers of the preceding --backbone (default BN)",
    )
    parser.add_argument(
        "--weights",
        action=_ModelOption,
        dest="weights",
        metavar="PTH",
        help="ImageNet .pth (torchvision layout) for the preceding --backbone",
    )
    parser.add_argument(
        "--label",
        action=_ModelOption,
        dest="label",
        help="name of the preceding model in the plot and CSV",
    )


def _parser() -> argparse.ArgumentParser:
    parser = tool_parser(__doc__)
    _add_model_arguments(parser)
    parser.add_argument(
        "--images",
        required=True,
        metavar="SOURCE",
        help="image folder, registered dataset (shapes_val) or config file",
    )
    parser.add_argument(
        "--num-images",
        type=int,
        default=100,
        metavar="N",
        help="analyse the first N images (default 100)",
    )
    parser.add_argument(
        "--size", type=int, default=224, help="resize the short side to this (default 224)"
    )
    parser.add_argument(
        "--max-size",
        type=int,
        default=None,
        help="cap on the long side after resizing (default: none)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="initialisation seed of random backbones (the same for all)",
    )
    parser.add_argument("--output", required=True, metavar="DIR", help="output folder")
    add_device_argument(parser)
    return parser


def _model(spec: dict, seed: int):
    """The AnalysisModel of one --backbone / --checkpoint spec."""
    from detection.analysis.responses import backbone_model, checkpoint_model

    if spec["kind"] == "backbone":
        return backbone_model(
            spec["backbone"],
            shortcut=spec.get("shortcut", "B"),
            norm=spec.get("norm", "BN"),
            weights=spec.get("weights"),
            seed=seed,
            label=spec.get("label"),
        )
    return checkpoint_model(spec["checkpoint"], label=spec.get("label"))


def _measure_all(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list:
    """The responses of every model on the images; exit 2 on bad input."""
    from detection.analysis.responses import image_paths, measure_responses
    from detection.config import ConfigError
    from detection.data import ImageReadError, read_image

    try:
        paths = image_paths(args.images, args.num_images)
        results = []
        labels: set[str] = set()
        for spec in args.models:
            model = _model(spec, args.seed)
            if model.label in labels:
                parser.error(f"two models are labelled {model.label!r}: give one a --label")
            labels.add(model.label)
            print(f"{model.label}: {model.note}; {len(paths)} images", file=sys.stderr)
            images = (read_image(p) for p in paths)
            results.append(
                measure_responses(
                    model, images, size=args.size, max_size=args.max_size, device=args.device
                )
            )
    except (ValueError, FileNotFoundError, ImageReadError, ConfigError) as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    return results


def main(argv: list[str] | None = None) -> int:
    """Measure, plot and write the layer responses; returns the exit status."""
    from detection.analysis.responses import plot_responses, write_csv, write_summary

    parser = _parser()
    args = parser.parse_args(argv)
    configure_logging(args)
    if not args.models:
        parser.error("give at least one --backbone or --checkpoint")
    if args.num_images < 1 or args.size < 1:
        parser.error("--num-images and --size must be positive")
    args.device = chosen_device(parser, args)
    say_device(args)
    results = _measure_all(parser, args)
    out = Path(args.output)
    written = [
        write_csv(results, out / "responses.csv"),
        plot_responses(results, out / "responses.png"),
        write_summary(results, out / "summary.json"),
    ]
    for r in results:
        stds = [x.std for x in r.layers]
        print(
            f"{r.label}: {len(stds)} 3x3 layers, std mean {sum(stds) / len(stds):.4f} "
            f"min {min(stds):.4f} max {max(stds):.4f}"
        )
    print("wrote " + ", ".join(str(p) for p in written), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
