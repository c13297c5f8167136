"""onnxruntime against our PyTorch fast path: the same checkpoint, the same image, on CPU.

The two run alternately (the order flips every iteration) after a warm-up, each with the
same number of threads, and their detections are compared (detection.deploy's bounds), so a
user can choose a runtime on speed knowing that both give the same boxes.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..deploy.check import TOLERANCES, compare_detections
from ..deploy.export import read_metadata
from ..deploy.runtime import OnnxRunner
from ..predictor import Predictor
from .measure import p90
from .speed import synthetic_batch


def _stats(times: list[float]) -> dict[str, float]:
    return {
        "median_s": statistics.median(times),
        "p90_s": p90(times),
        "min_s": min(times),
        "times_s": times,
    }


def benchmark_onnx(
    checkpoint: str | os.PathLike,
    onnx_file: str | os.PathLike,
    *,
    size: tuple[int, int] = (800, 1067),
    overrides: Sequence[str] = (),
    precision: str = "fp32",
    iters: int = 10,
    warmup: int = 2,
    threads: int | None = None,
    progress: Callable[[str], None] = lambda msg: None,
) -> dict[str, Any]:
    """Median / p90 seconds per image of the ONNX file in onnxruntime and of the checkpoint
    in our Predictor (fast path, `precision`), alternating, on one blocky synthetic image of
    `size`; `threads` for both (default: torch's). Returns the record, with "comparison"."""
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    meta = read_metadata(onnx_file)
    predictor = Predictor.from_checkpoint(
        checkpoint, [*overrides, f"test.precision={precision}", "model.compile=false"]
    )
    # onnxruntime's threads spin for a while after each run (its default); alternating, that
    # would take the cores from the PyTorch run that follows
    runner = OnnxRunner(onnx_file, threads=threads, spin=False)
    (image,), _ = synthetic_batch(1, tuple(size), "cpu")
    runs = {"pytorch": lambda: predictor(image), "onnxruntime": lambda: runner(image)}
    for i in range(warmup):
        for run in runs.values():
            run()
        progress(f"warm-up {i + 1}/{warmup}")
    times: dict[str, list[float]] = {name: [] for name in runs}
    outputs: dict[str, Any] = {}
    for i in range(iters):
        order = list(runs) if i % 2 == 0 else list(reversed(runs))
        for name in order:
            start = time.perf_counter()
            outputs[name] = runs[name]()
            times[name].append(time.perf_counter() - start)
        progress(f"iteration {i + 1}/{iters}")
    onnx_precision = meta.get("precision", "fp32")
    bounds = TOLERANCES.get(onnx_precision, TOLERANCES["fp16"])
    comparison = compare_detections(outputs["pytorch"], outputs["onnxruntime"], *bounds)
    pytorch, ort = _stats(times["pytorch"]), _stats(times["onnxruntime"])
    return {
        "size": list(size),
        "threads": threads,
        "pytorch_precision": str(predictor.precision),
        "onnx_precision": onnx_precision,
        "pytorch": pytorch,
        "onnxruntime": ort,
        "speed_ratio_onnxruntime_over_pytorch": pytorch["median_s"] / ort["median_s"],
        "comparison": str(comparison),
        "same_detections": comparison.ok if precision == onnx_precision == "fp32" else None,
    }
