"""tools/infer.py on videos: the annotated video (every frame) and one JSON line per processed
frame, whose detections equal the Predictor's on that decoded frame."""

import json

import cv2
import numpy as np
import pytest
import torch
from deploy_helpers import scene

from detection import Predictor
from detection.cli.infer import main as infer_main

FRAMES = 20


def write_video(path, frames=FRAMES, fourcc="MJPG", size=(128, 96)):
    """A clip of a shapes scene sliding sideways (MJPG: every OpenCV build writes it)."""
    image = cv2.resize(scene(5), size, interpolation=cv2.INTER_AREA)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10.0, size)
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.ascontiguousarray(np.roll(image, 5 * i, axis=1)[:, :, ::-1]))
    writer.release()
    return path


def decoded_frames(path):
    """The frames as OpenCV decodes them, RGB."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        frames.append(np.ascontiguousarray(bgr[:, :, ::-1]))
    capture.release()
    return frames


def infer(checkpoint, video, out, *extra):
    return infer_main(
        [
            "--checkpoint",
            str(checkpoint),
            "--input",
            str(video),
            "--output",
            str(out),
            "--no-progress",
            "--score-thresh",
            "0.1",
            *extra,
        ]
    )


def test_video_detections_equal_the_predictor_per_frame(checkpoints, tmp_path, capsys):
    video = write_video(tmp_path / "clip.avi")
    out = tmp_path / "out"
    assert infer(checkpoints["C4"], video, out) == 0
    assert "clip.avi: 20 frames, detector on 20" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["clip.avi", "clip.jsonl"]
    records = [json.loads(line) for line in (out / "clip.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(FRAMES))
    assert len(decoded_frames(out / "clip.avi")) == FRAMES  # every frame, annotated
    predictor = Predictor.from_checkpoint(checkpoints["C4"], score_thresh=0.1)
    total = 0
    for frame, record in zip(decoded_frames(video), records, strict=True):
        ref = predictor(frame)
        boxes = torch.tensor([d["box"] for d in record["detections"]]).reshape(-1, 4)
        torch.testing.assert_close(boxes, ref["boxes"], atol=1e-4, rtol=0)
        scores = torch.tensor([d["score"] for d in record["detections"]])
        torch.testing.assert_close(scores, ref["scores"], atol=1e-5, rtol=0)
        assert [d["class"] for d in record["detections"]] == ref["class_names"]
        total += len(ref["boxes"])
    assert total >= FRAMES, "too few detections for the comparison to mean anything"


def test_every_nth_frame_of_a_folder_of_videos(checkpoints, tmp_path, capsys):
    folder = tmp_path / "videos"
    folder.mkdir()
    write_video(folder / "a.avi", frames=7)
    write_video(folder / "b.mp4", frames=5, fourcc="mp4v")
    out = tmp_path / "out"
    assert infer(checkpoints["FPN"], folder, out, "--every", "3") == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.avi", "a.jsonl", "b.jsonl", "b.mp4"]
    for name, frames in (("a", 7), ("b", 5)):
        lines = (out / f"{name}.jsonl").read_text().splitlines()
        assert [json.loads(line)["frame"] for line in lines] == list(range(0, frames, 3))
        written = next(p for p in out.iterdir() if p.stem == name and p.suffix != ".jsonl")
        assert len(decoded_frames(written)) == frames


def test_undecodable_video(checkpoints, tmp_path, capsys):
    """Exit 2 with a clear message and no output file, alone or in a folder (where the other
    videos are still done)."""
    folder = tmp_path / "videos"
    folder.mkdir()
    bad = folder / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        infer(checkpoints["FPN"], bad, out)
    assert e.value.code == 2
    assert "cannot decode video" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())
    write_video(folder / "good.avi", frames=2)
    assert infer(checkpoints["FPN"], folder, out) == 2
    assert f"cannot decode video {bad}" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["good.avi", "good.jsonl"]
