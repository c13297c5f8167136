"""List the configs that ship with resdet (names for --config), or show one.

    resdet configs                                   # every shipped config, with its first line
    resdet configs coco/faster_rcnn_R50_FPN_1x.yaml  # the file as it ships
    resdet configs --path shapes/demo_R18_FPN.yaml   # where it is (to copy and edit)

A name works as --config from any directory: `resdet train --config
shapes/demo_R18_FPN.yaml`; `_base_` inside a config resolves among the shipped ones (and a
config of your own may say `_base_: coco/faster_rcnn_R50_FPN_1x.yaml`). Files named Base-* are
bases to inherit from; set files (a `members:` list) are for `resdet ablation`.
"""

from __future__ import annotations

import argparse
import re
import sys

from detection.config.cli import add_logging_arguments, configure_logging


def _description(text: str, width: int) -> str:
    """The first sentence of a config's leading comment, cut to `width` characters."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    # a sentence ends at ". " before a capital (not at "et al. 2016", "Fig. 6")
    sentence = re.split(r"\. (?=[A-Z])", " ".join(lines))[0].rstrip(".")
    return sentence if len(sentence) <= width else sentence[: width - 3].rstrip() + "..."


def main(argv: list[str] | None = None) -> int:
    """List the shipped configs, or print one; returns the exit status."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[1:]),
    )
    parser.add_argument("name", nargs="?", help="a shipped config to print")
    parser.add_argument("--path", action="store_true", help="print the file's path instead")
    add_logging_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging(args)
    from detection.config.loader import shipped_config, shipped_configs, shipped_configs_dir

    root = shipped_configs_dir()
    if args.name is None:
        names = shipped_configs()
        width = max(map(len, names))
        print(f"{len(names)} configs ship with resdet (in {root}); give a name to --config:")
        for name in names:
            text = (root / name).read_text()
            kind = "set: " if "\nmembers:" in f"\n{text}" else ""
            print(f"  {name:<{width}}  {kind}{_description(text, 116 - width - len(kind))}")
        return 0
    path = shipped_config(args.name)
    if path is None:
        parser.exit(
            2,
            f"{parser.prog}: error: no shipped config named {args.name!r}; "
            "`resdet configs` lists them\n",
        )
    if args.path:
        print(path)
    else:
        sys.stdout.write(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
