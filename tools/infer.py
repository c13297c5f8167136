"""Run a checkpoint on image files: detections as JSON and images with the boxes drawn.

    python tools/infer.py --checkpoint CKPT --input IMAGE_OR_DIR --output DIR \
        [--score-thresh 0.5] [--device cpu] [KEY=VALUE ...]

Writes DIR/<image stem>.json ({"image", "width", "height", "detections": [{"box": [x1, y1,
x2, y2], "score", "label", "class"}]}, boxes in the image's pixels), DIR/<image stem>.jpg with
boxes, class names and scores drawn, and DIR/predictions.json with every image's record.
The overrides change the checkpoint's embedded config (e.g. input.min_size_test=600; below
model.roi_heads.score_thresh the model itself drops detections).
"""

from __future__ import annotations

import argparse
import sys

from detection import Predictor
from detection.config import ConfigError
from detection.evaluation import list_images, predict_images


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, load the Predictor, write the results; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, metavar="CKPT")
    parser.add_argument("--input", required=True, metavar="PATH", help="an image or a folder")
    parser.add_argument("--output", required=True, metavar="DIR", help="folder for the results")
    parser.add_argument("--score-thresh", type=float, default=0.5, help="keep scores >= this")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="overrides of the embedded config"
    )
    args = parser.parse_intermixed_args(argv)
    try:
        paths = list_images(args.input)
        predictor = Predictor.from_checkpoint(args.checkpoint, args.overrides, device=args.device)
    except ConfigError as e:
        parser.exit(2, f"{parser.prog}: config error: {e}\n")
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    print(f"inference precision: {predictor.precision}", file=sys.stderr, flush=True)
    records = predict_images(
        predictor.model,
        paths,
        args.output,
        score_thresh=args.score_thresh,
        device=args.device,
        progress=not args.no_progress,
    )
    for record in records:
        print(f"{record['image']}: {len(record['detections'])} detections")
    print(f"wrote {len(records)} image(s) with JSON to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
