"""Print the resolved config of a YAML file plus overrides (optionally save it).

    resdet print-config --config coco/faster_rcnn_R101_C4_1x.yaml \
        model.backbone.name=resnet152
    resdet print-config --fields      # every key with its description and default
"""

from __future__ import annotations

import argparse
import sys

from detection.config import dump, field_docs, save_config
from detection.config.cli import (
    add_config_arguments,
    add_logging_arguments,
    config_from_args,
    configure_logging,
)


def main(argv: list[str] | None = None) -> int:
    """Print (and save) the resolved config, or the field list; returns 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_arguments(parser, required=False)
    add_logging_arguments(parser)
    parser.add_argument("--output-dir", help="also write <DIR>/config.yaml")
    parser.add_argument("--fields", action="store_true", help="list every key with its doc")
    args, cfg = config_from_args(parser, argv)
    configure_logging(args)
    if args.fields:
        for key, doc, default in field_docs():
            print(f"{key} = {default!r}\n    {doc}")
        return 0
    sys.stdout.write(dump(cfg))
    if args.output_dir:
        path = save_config(cfg, args.output_dir)
        print(f"# written to {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
