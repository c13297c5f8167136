"""Timing COCO evaluations: seconds per backend (pycocotools, faster-coco-eval) on the test set
or a synthetic ground truth, with the metrics of the backends checked to agree."""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import Config
from ..evaluation.coco import coco_evaluate, load_coco
from ..evaluation.synthetic import synthetic_ground_truth, synthetic_results

SYNTHETIC_SOURCE = "synthetic (ground truth jittered, 2 false positives per image)"
# metrics the two backends must agree on (to 1e-6 percent)
COMPARED_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def benchmark_eval(
    cfg: Config,
    *,
    results: str | os.PathLike | None = None,
    synthetic_images: int = 0,
    iters: int = 3,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Seconds of a COCO evaluation (load the results, evaluate, accumulate, summarize) per
    backend (pycocotools, and faster-coco-eval where installed), with a results file or, without
    one, synthetic_results of the ground truth; the metrics of both backends are checked to be
    equal. The ground truth is the config's test set, or, with `synthetic_images` N, a COCO-like
    one of N images (synthetic_ground_truth).

    Returns:
        {mode, annotations, results, num_images, num_detections, iters, <backend>: {median_s,
        AP}, and with both backends same_metrics and speedup_faster_over_pycocotools}.
    """
    from ..data import dataset_files  # data imports albumentations: lazily

    if not synthetic_images:
        return time_evaluation(dataset_files(cfg, "test")[0], results, cfg.seed, iters, progress)
    if results is not None:
        raise ValueError("give either a results file or synthetic images, not both")
    with tempfile.TemporaryDirectory() as tmp:
        gt = synthetic_ground_truth(Path(tmp) / "gt.json", synthetic_images, cfg.seed)
        out = time_evaluation(gt, None, cfg.seed, iters, progress)
    out["annotations"] = f"synthetic: {synthetic_images} images"
    return out


def available_backends(say: Callable[[str], None]) -> list[str]:
    """pycocotools, and "faster" when faster-coco-eval is installed (`say` tells when not)."""
    try:
        import faster_coco_eval  # noqa: F401
    except ImportError:
        say("faster-coco-eval is not installed: timing pycocotools only")
        return ["pycocotools"]
    return ["pycocotools", "faster"]


def time_evaluation(
    annotations: str | os.PathLike,
    results: str | os.PathLike | None,
    seed: int,
    iters: int,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """benchmark_eval on one ground-truth file; `results` None: synthetic_results of it."""
    say = progress or (lambda msg: None)
    if results is None:
        detections = synthetic_results(annotations, seed=seed)
        source = SYNTHETIC_SOURCE
    else:
        with open(results) as f:
            detections = json.load(f)
        source = str(results)
    gt = load_coco(annotations)
    backends = available_backends(say)
    out: dict[str, Any] = {
        "mode": "eval",
        "annotations": str(annotations),
        "results": source,
        "num_images": len(gt.getImgIds()),
        "num_detections": len(detections),
        "iters": iters,
    }
    metrics = {}
    for backend in backends:
        seconds, metrics[backend] = _time_backend(gt, detections, backend, iters, say)
        out[backend] = {"median_s": seconds, "AP": metrics[backend]["AP"]}
    if "faster" in metrics:
        out["same_metrics"] = same_metrics(metrics["pycocotools"], metrics["faster"])
        out["speedup_faster_over_pycocotools"] = (
            out["pycocotools"]["median_s"] / out["faster"]["median_s"]
        )
    return out


def _time_backend(
    gt, detections: list[dict[str, Any]], backend: str, iters: int, say: Callable[[str], None]
) -> tuple[float, dict[str, Any]]:
    """(median seconds, metrics) of `iters` evaluations with one backend."""
    times = []
    for i in range(iters):
        start = time.perf_counter()
        metrics = coco_evaluate(gt, detections, backend=backend)
        times.append(time.perf_counter() - start)
        say(f"{backend} {i + 1}/{iters}")
    return statistics.median(times), metrics


def same_metrics(a: dict[str, Any], b: dict[str, Any], tolerance: float = 1e-6) -> bool:
    """Whether two metric records agree on COMPARED_METRICS (None only where both are None)."""

    def agree(x: float | None, y: float | None) -> bool:
        if x is None or y is None:
            return x is None and y is None
        return abs(x - y) < tolerance

    return all(agree(a[k], b[k]) for k in COMPARED_METRICS)
