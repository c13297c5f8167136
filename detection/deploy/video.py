"""Detections on video files: the annotated video and one JSON line of detections per frame.

    summary = predict_video(predictor, "clip.mp4", "out/", every=1)
    # out/clip.mp4 (boxes drawn on every frame) and out/clip.jsonl

Frames are decoded with OpenCV and go through the same `Predictor` as images (HxWx3 uint8
RGB), so a frame's detections equal `predictor(frame)`. The annotated video keeps the input's
frame rate and size, and its codec where OpenCV can write it (its FourCC, in the input's
container); otherwise it is MPEG-4 in .mp4. Both files are written to temporaries and renamed
at the end: an interrupted or failed run leaves no partial file.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..utils.io import atomic_path

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
FALLBACK = ("mp4v", ".mp4")  # MPEG-4 part 2: every OpenCV build with FFmpeg writes it
# FourCCs that decoders report for MPEG-4 part 2 streams; FFmpeg writes them as mp4v in .mp4
MPEG4_ALIASES = {"FMP4", "DIVX", "XVID", "DX50", "MP4V"}


class VideoReadError(OSError):
    """A video file that cannot be opened or decoded."""


def is_video(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def list_videos(path: str | os.PathLike) -> list[Path]:
    """The video files of a folder (by extension, not recursive, sorted by name)."""
    return sorted(p for p in Path(path).iterdir() if p.is_file() and is_video(p))


def _cv2():
    import cv2  # opencv comes with albumentations, a dependency

    return cv2


def _fourcc_name(code: int) -> str:
    name = "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4))
    return name if name.isprintable() and name.strip() else ""


@dataclass
class VideoSummary:
    """What predict_video wrote."""

    video: Path  # the annotated video
    jsonl: Path  # one line per processed frame
    frames: int  # frames read (and written)
    processed: int  # frames the detector ran on (every N-th)
    detections: int  # over the processed frames
    codec: str  # FourCC of the annotated video
    seconds: float
    expected_frames: int | None = None  # the container's frame count, where it has one

    @property
    def frames_per_s(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0


def open_video(path: str | os.PathLike):
    """An opened cv2.VideoCapture whose first frame decodes, or a VideoReadError."""
    cv2 = _cv2()
    path = Path(path)
    if not path.is_file():
        raise VideoReadError(f"video not found: {path}")
    capture = cv2.VideoCapture(str(path))
    ok = capture.isOpened()
    if ok:
        ok, _ = capture.read()
        capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
    if not ok:
        capture.release()
        raise VideoReadError(
            f"cannot decode video {path}: OpenCV (FFmpeg) reads no frame from it; the file is "
            "corrupt, empty or in a codec this OpenCV build lacks (convert it, e.g. ffmpeg -i "
            f"{path.name} -c:v libx264 out.mp4)"
        )
    return capture


def _writer(path: Path, fourcc: str, fps: float, size: tuple[int, int]):
    """An opened cv2.VideoWriter, or None where this OpenCV build cannot write `fourcc`."""
    cv2 = _cv2()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    if writer.isOpened():
        return writer
    writer.release()
    return None


def output_codec(
    fourcc: str, suffix: str, fps: float, size: tuple[int, int], folder: Path
) -> tuple[str, str]:
    """(FourCC, file suffix) of the annotated video: the input's where OpenCV writes it (tried
    on a throwaway file), else MPEG-4 in .mp4."""
    if fourcc.upper() in MPEG4_ALIASES and suffix in (".mp4", ".m4v", ".mov"):
        fourcc = "mp4v"
    if fourcc and suffix in VIDEO_EXTENSIONS:
        fd, probe = tempfile.mkstemp(prefix=".codec-probe.", suffix=suffix, dir=folder)
        os.close(fd)
        try:
            writer = _writer(Path(probe), fourcc, fps, size)
            if writer is not None:
                writer.release()
                return fourcc, suffix
        finally:
            Path(probe).unlink(missing_ok=True)
    return FALLBACK


def _frame_record(index: int, fps: float, det: dict[str, Any]) -> dict[str, Any]:
    return {
        "frame": index,
        "time_s": round(index / fps, 6) if fps > 0 else None,
        "detections": [
            {"box": box, "score": score, "label": label, "class": name}
            for box, score, label, name in zip(
                det["boxes"].tolist(),
                det["scores"].tolist(),
                det["labels"].tolist(),
                det["class_names"],
                strict=True,
            )
        ],
    }


def _outputs(capture, path: Path, output_dir: str | os.PathLike):
    """(fps, size, fourcc, the annotated video's path, the jsonl's path) of a video: the
    input's codec where it can be written, never the input itself."""
    cv2 = _cv2()
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    fourcc = _fourcc_name(int(capture.get(cv2.CAP_PROP_FOURCC)))
    fourcc, suffix = output_codec(fourcc, path.suffix.lower(), fps, size, out)
    target, jsonl = out / f"{path.stem}{suffix}", out / f"{path.stem}.jsonl"
    if target.resolve() == path.resolve():  # never replace the input
        target = out / f"{path.stem}.detections{suffix}"
    return fps, size, fourcc, target, jsonl


def _run_frames(capture, predictor, every: int, fps: float, writer, lines, bar) -> tuple:
    """Detect on every `every`-th frame, draw the latest detections on each frame; returns
    (frames, processed frames, detections)."""
    from ..data import draw_boxes  # data imports albumentations: lazily

    names = list(predictor.class_names)
    frames = processed = detections = 0
    last = None
    start = time.perf_counter()
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        if frames % every == 0:  # frame 0 always: `last` is set here
            last = predictor(rgb)
            processed += 1
            detections += len(last["scores"])
            lines.write(json.dumps(_frame_record(frames, fps, last), allow_nan=False) + "\n")
        drawn = draw_boxes(rgb, last["boxes"], last["labels"], names, last["scores"])
        writer.write(np.ascontiguousarray(np.asarray(drawn)[:, :, ::-1]))
        frames += 1
        bar.update()
        bar.set_postfix_str(f"{processed / (time.perf_counter() - start):.2f} detected frames/s")
    return frames, processed, detections


def predict_video(
    predictor,
    path: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    every: int = 1,
    progress: bool = True,
) -> VideoSummary:
    """Run `predictor` (a detection.Predictor) on every `every`-th frame of a video and
    write DIR/<stem><ext> (every frame, with the boxes of the latest processed frame drawn;
    DIR/<stem>.detections<ext> where that would be the input itself)
    and DIR/<stem>.jsonl ({"frame", "time_s", "detections": [{"box" xyxy, "score", "label",
    "class"}]} per processed frame). A video that cannot be decoded raises VideoReadError
    before anything is written."""
    if every < 1:
        raise ValueError(f"--every {every}: give a positive number of frames")
    cv2 = _cv2()
    path = Path(path)
    capture = open_video(path)
    try:
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
        fps, size, fourcc, target, jsonl = _outputs(capture, path, output_dir)
        start = time.perf_counter()
        with atomic_path(target) as video_tmp, atomic_path(jsonl) as jsonl_tmp:
            writer = _writer(video_tmp, fourcc, fps, size)
            if writer is None:
                raise VideoReadError(f"OpenCV cannot write {target} ({fourcc})")
            bar = tqdm(total=total, desc=path.name, unit="frame", disable=not progress)
            try:
                with open(jsonl_tmp, "w") as lines:
                    frames, processed, detections = _run_frames(
                        capture, predictor, every, fps, writer, lines, bar
                    )
            finally:
                bar.close()
                writer.release()
            if frames == 0:
                raise VideoReadError(f"cannot decode video {path}: no frame could be read")
    finally:
        capture.release()
    seconds = time.perf_counter() - start
    return VideoSummary(target, jsonl, frames, processed, detections, fourcc, seconds, total)
