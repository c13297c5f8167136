"""What every tool's command line shares: --config FILE and trailing KEY=VALUE overrides, and
-q/--quiet and -v/--verbose for the library's log lines on stderr."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from detection.utils.logging import setup_logging

from .loader import ConfigError, dump, load_config
from .schema import Config


def tool_parser(doc: str) -> argparse.ArgumentParser:
    """A tool's parser from its module docstring: the first line describes it, the rest (usage
    examples) is shown after the options by --help. It has -q/--quiet and -v/--verbose (see
    add_logging_arguments); the tool calls configure_logging(args) once it has parsed."""
    lines = doc.strip("\n").splitlines()
    parser = argparse.ArgumentParser(
        description=lines[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(lines[1:]),
    )
    add_logging_arguments(parser)
    return parser


def add_logging_arguments(parser: argparse.ArgumentParser) -> None:
    """Add -q/--quiet and -v/--verbose (repeatable) to a tool's parser."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "-q", "--quiet", action="store_true", help="log only warnings and errors on stderr"
    )
    group.add_argument(
        "-v", "--verbose", action="count", default=0, help="also log debug messages on stderr"
    )


def configure_logging(args: argparse.Namespace) -> int:
    """Show the library's log lines on stderr at the level -q / -v ask for (INFO by default);
    returns the verbosity (-1 quiet, 0, 1+ verbose). Every tool calls it once after parsing."""
    verbosity = -1 if getattr(args, "quiet", False) else getattr(args, "verbose", 0) or 0
    setup_logging(verbosity)
    return verbosity


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
