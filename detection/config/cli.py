"""The config part of every tool's command line: --config FILE and trailing KEY=VALUE overrides."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .loader import ConfigError, dump, load_config
from .schema import Config


def tool_parser(doc: str) -> argparse.ArgumentParser:
    """A tool's parser from its module docstring: the first line describes it, the rest (usage
    examples) is shown after the options by --help."""
    lines = doc.strip("\n").splitlines()
    return argparse.ArgumentParser(
        description=lines[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(lines[1:]),
    )


def add_config_arguments(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """Add --config FILE and the trailing KEY=VALUE overrides to a tool's parser."""
    parser.add_argument("--config", required=required, metavar="FILE", help="YAML config file")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides after the flags, e.g. model.backbone.name=resnet101 "
        "solver.max_iter=100 (values are YAML: numbers, lists, null)",
    )


def config_from_args(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None = None
) -> tuple[argparse.Namespace, Config]:
    """Parse the command line and load the config; a bad config exits with status 2."""
    args = parser.parse_intermixed_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        parser.exit(2, f"{parser.prog}: config error: {e}\n")
    return args, cfg


def print_config(cfg: Config, file=None) -> None:
    """The resolved config, as every tool shows it when it starts."""
    out = file or sys.stdout
    print("resolved config:", file=out)
    for line in dump(cfg).splitlines():
        print("  " + line, file=out)
