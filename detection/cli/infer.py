"""Run a detector on images or videos: detections as JSON and the boxes drawn.

    resdet infer --weights fasterrcnn_resnet50_fpn_coco --input photo.jpg   # COCO, 80 classes
    resdet infer --weights CKPT --input IMAGE_VIDEO_OR_DIR [--output DIR] \
        [--score-thresh 0.5] [--every N] [--device auto] [KEY=VALUE ...]

--weights (or --checkpoint) takes a checkpoint file or the name of published weights, which is
downloaded into the torch hub cache on first use (`resdet weights` lists the names).
Images: DIR/<image stem>.json ({"image", "width", "height", "detections": [{"box": [x1, y1,
x2, y2], "score", "label", "class"}]}, boxes in the image's pixels), DIR/<image stem>.jpg with
boxes, class names and scores drawn, and DIR/predictions.json with every image's record.
Videos (.mp4, .avi, .mov, .mkv, .webm, ...): DIR/<stem>.jsonl, one line {"frame", "time_s",
"detections": [...]} per processed frame, and DIR/<stem> + the input's extension, the video
with the boxes drawn, in the input's codec where OpenCV can write it (MPEG-4 .mp4 otherwise);
--every N runs the detector on every N-th frame (the frames between show the latest boxes).
A folder may hold both. The overrides change the checkpoint's embedded config (e.g.
input.min_size_test=600; below model.roi_heads.score_thresh the model itself drops
detections).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from detection.cli._common import add_device_argument, chosen_device, say_device
from detection.config import ConfigError
from detection.config.cli import configure_logging, tool_parser

# the detector, the video and image helpers are imported in the functions that use them, after
# the arguments are parsed: they pull in torchvision's ops and OpenCV (~2.5 s) that --help and
# bad flags never need


def _inputs(path: str) -> tuple[list[Path], list[Path]]:
    """(images, videos) of a file or a folder."""
    from detection.deploy.video import VIDEO_EXTENSIONS, is_video, list_videos, open_video
    from detection.evaluation import list_images
    from detection.evaluation.predict import IMAGE_EXTENSIONS

    p = Path(path)
    if p.is_file() and is_video(p):
        open_video(p).release()  # an undecodable video fails here, before the model loads
        return [], [p]
    if p.is_dir():
        videos = list_videos(p)
        try:
            images = list_images(p)
        except FileNotFoundError:
            if not videos:
                raise FileNotFoundError(
                    f"no images in {p} (looked for {', '.join(IMAGE_EXTENSIONS)} files) and no "
                    f"videos ({', '.join(VIDEO_EXTENSIONS)})"
                ) from None
            images = []
        return images, videos
    return list_images(p), []


def _parser() -> argparse.ArgumentParser:
    parser = tool_parser(__doc__)
    parser.add_argument(
        "--weights",
        "--checkpoint",
        dest="checkpoint",
        required=True,
        metavar="CKPT_OR_NAME",
        help="a checkpoint file, or published weights by name (resdet weights lists them)",
    )
    parser.add_argument(
        "--input", required=True, metavar="PATH", help="an image, a video or a folder"
    )
    parser.add_argument(
        "--output",
        default="output/infer",
        metavar="DIR",
        help="folder for the results (default: output/infer)",
    )
    parser.add_argument("--score-thresh", type=float, default=0.5, help="keep scores >= this")
    parser.add_argument(
        "--every", type=int, default=1, metavar="N", help="videos: detect on every N-th frame"
    )
    add_device_argument(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="overrides of the embedded config"
    )
    return parser


def _predict_videos(parser, predictor, videos: list, args) -> list:
    """Run the predictor on each video and print what it wrote; returns the videos that failed."""
    from detection.deploy.video import VideoReadError, predict_video

    failed = []
    for video in videos:
        try:
            s = predict_video(
                predictor, video, args.output, every=args.every, progress=not args.no_progress
            )
        except VideoReadError as e:
            print(f"{parser.prog}: error: {e}", file=sys.stderr)
            failed.append(video)
            continue
        short = (
            f" (the container announced {s.expected_frames}: the end may be undecodable)"
            if s.expected_frames and s.frames < s.expected_frames
            else ""
        )
        print(
            f"{video}: {s.frames} frames{short}, detector on {s.processed}, {s.detections} "
            f"detections, {s.frames_per_s:.2f} detected frames/s; wrote {s.video} ({s.codec}) "
            f"and {s.jsonl}"
        )
    return failed


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, load the Predictor, write the results; returns the exit code."""
    parser = _parser()
    args = parser.parse_intermixed_args(argv)
    configure_logging(args)
    if args.every < 1:
        parser.exit(2, f"{parser.prog}: error: --every {args.every}: give a positive number\n")
    args.device = chosen_device(parser, args)
    from detection import Predictor
    from detection.deploy.video import VideoReadError
    from detection.evaluation import predict_images

    try:
        images, videos = _inputs(args.input)
        predictor = Predictor.from_checkpoint(
            args.checkpoint, args.overrides, device=args.device, score_thresh=args.score_thresh
        )
    except ConfigError as e:
        parser.exit(2, f"{parser.prog}: config error: {e}\n")
    except (OSError, VideoReadError, ValueError, RuntimeError) as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    say_device(args)
    print(f"inference precision: {predictor.precision}", file=sys.stderr, flush=True)
    if images:
        records = predict_images(
            predictor.model,
            images,
            args.output,
            score_thresh=args.score_thresh,
            device=args.device,
            progress=not args.no_progress,
        )
        for record in records:
            print(f"{record['image']}: {len(record['detections'])} detections")
        print(f"wrote {len(records)} image(s) with JSON to {args.output}")
    failed = _predict_videos(parser, predictor, videos, args)
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
