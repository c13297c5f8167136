"""The `resdet` command: `resdet COMMAND [options]`, one subcommand per tool.

Only this table is read to list the commands: a command's module (and torch with it) is
imported when that command runs, so `resdet --help` answers at once.
"""

from __future__ import annotations

import difflib
import importlib
import sys
from collections.abc import Sequence
from typing import NamedTuple


class Command(NamedTuple):
    module: str  # detection.cli.<module>, which has main(argv) -> exit status
    summary: str  # the first line of the module's docstring (a test keeps them equal)


GROUPS: dict[str, dict[str, Command]] = {
    "detectors": {
        "train": Command(
            "train", "Train a detector (one process, or one per GPU / CPU slot under torchrun)."
        ),
        "evaluate": Command(
            "evaluate",
            "Evaluate a checkpoint on a COCO-format test set (pycocotools box AP, percent).",
        ),
        "infer": Command(
            "infer", "Run a detector on images or videos: detections as JSON and the boxes drawn."
        ),
        "export": Command(
            "export", "Export a detector to ONNX or TorchScript and check the file against PyTorch."
        ),
        "benchmark": Command(
            "benchmark",
            "Measure inference, training, data-loading or COCO-evaluation speed of a config.",
        ),
        "compare": Command(
            "compare",
            "Compare runs' metrics.json as the paper's table: mAP@.5, mAP@[.5,.95], changes.",
        ),
        "plot": Command(
            "plot", "Plot the loss and AP curves of a training run (its metrics.jsonl) to a PNG."
        ),
    },
    "configs and weights": {
        "configs": Command(
            "configs", "List the configs that ship with resdet (names for --config), or show one."
        ),
        "weights": Command(
            "weights",
            "List the weights resdet takes by name (--weights NAME), or fetch them now.",
        ),
        "print-config": Command(
            "print_config",
            "Print the resolved config of a YAML file plus overrides (optionally save it).",
        ),
        "convert-weights": Command(
            "convert_weights",
            "Convert torchvision's Faster R-CNN weights into a resdet checkpoint.",
        ),
    },
    "data": {
        "convert-voc": Command(
            "convert_voc", "Convert Pascal VOC XML annotations to one COCO-format json."
        ),
        "convert-yolo": Command(
            "convert_yolo",
            "Convert YOLO labels (data.yaml or classes.txt) to COCO json, one per split.",
        ),
        "convert-labelme": Command(
            "convert_labelme",
            "Convert LabelMe JSON files (rectangles, polygons) to one COCO-format json.",
        ),
        "split": Command(
            "split", "Split a COCO json into train / val jsons (images stay put), or keep classes."
        ),
        "check": Command(
            "check",
            "Check a config's datasets before training: annotations, image files, decoding.",
        ),
        "browse": Command(
            "browse", "Write dataset images with their boxes drawn, as the model receives them."
        ),
    },
    "the paper's experiments": {
        "ablation": Command(
            "ablation",
            "Train and evaluate each member of an ablation set; print and write the table.",
        ),
        "train-classifier": Command(
            "train_classifier",
            "Train an image classifier: pretrain a backbone, or the paper's CIFAR-10 nets.",
        ),
        "analyze-responses": Command(
            "analyze_responses",
            "Layer responses (the paper's Fig. 7): the std of each 3x3 layer's output.",
        ),
        "benchmark-real": Command(
            "benchmark_real",
            "Real-photo benchmark: torchvision's Faster R-CNN vs resdet's recipes.",
        ),
    },
}

COMMANDS: dict[str, Command] = {name: c for group in GROUPS.values() for name, c in group.items()}

USAGE = """\
usage: resdet COMMAND [options]      (resdet COMMAND --help: that command's options)

Faster R-CNN with ResNet and VGG-16 backbones: train, evaluate, run and export detectors.
"""

EPILOG = """\
examples:
  resdet infer --weights fasterrcnn_resnet50_fpn_coco --input photo.jpg
  resdet train --config shapes/demo_R18_FPN.yaml
  resdet configs                      # the configs --config takes by name
"""


def help_text() -> str:
    """The command list of `resdet --help`: one line per command, in groups."""
    width = max(map(len, COMMANDS)) + 2
    lines = [USAGE]
    for group, commands in GROUPS.items():
        lines.append(f"{group}:")
        lines += [f"  {name:<{width}}{c.summary}" for name, c in commands.items()]
        lines.append("")
    return "\n".join(lines) + EPILOG


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("resdet")
    except PackageNotFoundError:  # a checkout on sys.path, not installed
        return "unknown (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    """Run `resdet COMMAND ARGS...`; returns the command's exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        sys.stderr.write(help_text())
        return 2
    name, rest = args[0], args[1:]
    if name in ("-h", "--help"):
        sys.stdout.write(help_text())
        return 0
    if name == "help":  # resdet help train == resdet train --help
        if not rest:
            sys.stdout.write(help_text())
            return 0
        name, rest = rest[0], ["--help"]
    if name == "--version":
        print(f"resdet {_version()}")
        return 0
    command = COMMANDS.get(name)
    if command is None:
        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        sys.stderr.write(
            f"resdet: unknown command '{name}'.{hint} The commands: {', '.join(COMMANDS)} "
            "(resdet --help says what each does)\n"
        )
        return 2
    module = importlib.import_module(f"detection.cli.{command.module}")
    # argparse names the program after sys.argv[0]: usage and error lines say `resdet train`
    program, sys.argv[0] = sys.argv[0], f"resdet {name}"
    try:
        return module.main(rest)
    finally:
        sys.argv[0] = program


if __name__ == "__main__":
    sys.exit(main())
