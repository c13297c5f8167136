"""Speed measurements: inference and training throughput, FLOPs, the machine's matmul peak,
and the same runs of torchvision's Faster R-CNN on equal weights, alternated with ours; the
training input pipeline's images/s.

The measuring primitives are in .measure, the torchvision twin in detection.modeling.twin; the
seconds of a COCO evaluation are measured by detection.benchmark.evaluation.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from ..config import Config
from ..config.datasets import dataset_label
from ..engine.failures import use_channels_last
from ..modeling import build_model, inference_options, prepare_for_inference
from ..modeling.twin import torchvision_twin
from ..predictor import Predictor
from ..utils.precision import PRECISIONS, autocast
from .measure import (
    ConvTimer,
    StageTimer,
    flops_per_image,
    p90,
    peak_gflops,
    profile_top_ops,
    timed_with_peak_memory,
)

Progress = Callable[[str], None]


def _quiet(msg: str) -> None:
    """The progress callback when none is given."""


def synthetic_batch(
    batch: int, size: tuple[int, int], device: str, seed: int = 0
) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Blocky random images (so detections vary) and two boxes per image."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    images, targets = [], []
    for _ in range(batch):
        coarse = torch.rand(3, h // 16 + 1, w // 16 + 1, generator=g)
        img = nn.functional.interpolate(coarse[None], scale_factor=16, mode="nearest")[0]
        images.append(img[:, :h, :w].contiguous().to(device))
        boxes = torch.tensor(
            [[0.1 * w, 0.1 * h, 0.5 * w, 0.6 * h], [0.4 * w, 0.3 * h, 0.9 * w, 0.9 * h]]
        )
        targets.append({"boxes": boxes.to(device), "labels": torch.tensor([1, 2], device=device)})
    return images, targets


@dataclass
class _Bench:
    """The models of one benchmark ("ours", optionally "torchvision") on one synthetic batch,
    and one iteration of each: a forward in inference, a forward + backward + SGD step in
    training."""

    models: dict[str, nn.Module]
    images: list[torch.Tensor]
    targets: list[dict[str, torch.Tensor]]
    device: str
    train: bool
    precision: str
    torchvision_precision: str
    optimizers: dict[str, torch.optim.Optimizer] = field(init=False)
    scalers: dict[str, torch.amp.GradScaler] = field(init=False)
    peak_mb: dict[str, float] = field(default_factory=dict)  # per model, over its timed steps

    def __post_init__(self) -> None:
        precisions = {"ours": self.precision, "torchvision": self.torchvision_precision}
        self.scalers = {
            name: torch.amp.GradScaler(self.device)
            for name in self.models
            if self.train and precisions[name] == "fp16"
        }
        self.optimizers = (
            {
                name: torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1e-4)
                for name, m in self.models.items()
            }
            if self.train
            else {}
        )

    def step(self, name: str) -> list[dict[str, torch.Tensor]] | None:
        """One iteration of model `name`; in inference, its detections."""
        m = self.models[name]
        # ours sets its own inference precision (model.precision); autocast for the rest
        if name == "torchvision":
            context = autocast(self.device, self.torchvision_precision)
        else:
            context = autocast(self.device, "fp32" if not self.train else self.precision)
        if self.train:
            with context:
                losses = m(self.images, self.targets)
            optimizer = self.optimizers[name]
            optimizer.zero_grad(set_to_none=True)
            scaler = self.scalers.get(name)
            if scaler is None:
                sum(losses.values()).backward()
                optimizer.step()
            else:  # fp16 trains through a GradScaler, as the trainer does
                scaler.scale(sum(losses.values())).backward()
                scaler.step(optimizer)
                scaler.update()
            return None
        with torch.inference_mode(), context:
            if name == "ours":  # what a Python user runs: the Predictor on the fast path
                return self.predictor(self.images)
            return m(self.images)

    @functools.cached_property
    def predictor(self) -> Predictor:
        """Our model, already on the fast path, behind the Predictor (images as given)."""
        return Predictor(self.models["ours"], fast=False)


def _build(
    cfg: Config,
    *,
    train: bool,
    device: str,
    precision: str,
    size: tuple[int, int],
    batch: int,
    vs_torchvision: bool,
    torchvision_precision: str | None,
    say: Progress,
) -> tuple[_Bench, float]:
    """The models on their run path (our fast inference path, or training's memory format),
    and our FLOPs per image, counted before the fast path changes the model."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, load_weights=False).to(device)
    model.train(train)
    images, targets = synthetic_batch(batch, size, device)
    models = {"ours": model}
    if vs_torchvision:  # from the weights as built: before the fast path folds them
        twin = torchvision_twin(model, purpose="--vs-torchvision")
        models["torchvision"] = twin.to(device).train(train)
    say("counting FLOPs")
    flops = flops_per_image(model, images, targets if train else None)
    if not train:  # the Predictor's fast path, in `precision`
        prepare_for_inference(model, **{**inference_options(cfg), "precision": precision})
    elif use_channels_last(cfg.solver.memory_format, precision):
        model.set_channels_last(True)  # as the trainer does
    bench = _Bench(
        models, images, targets, device, train, precision, torchvision_precision or precision
    )
    return bench, flops


def _measure(
    bench: _Bench, *, warmup: int, iters: int, say: Progress
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """({model: seconds per iteration}, {model: seconds of its backbone's forward}), the
    models run alternately (their order flips every iteration) after `warmup` iterations."""
    for i in range(warmup):
        for name in bench.models:
            bench.step(name)
        say(f"warm-up {i + 1}/{warmup}")
    timers = {name: StageTimer(m.backbone, bench.device) for name, m in bench.models.items()}
    times: dict[str, list[float]] = {name: [] for name in bench.models}
    for i in range(iters):
        order = list(bench.models) if i % 2 == 0 else list(reversed(bench.models))
        for name in order:
            seconds, peak = timed_with_peak_memory(lambda n=name: bench.step(n), bench.device)
            times[name].append(seconds)
            bench.peak_mb[name] = max(bench.peak_mb.get(name, 0.0), peak)
        say(f"iteration {i + 1}/{iters}")
    for timer in timers.values():
        timer.remove()
    return times, {name: timer.times for name, timer in timers.items()}


def _speed(times: list[float], backbone_times: list[float], batch: int) -> dict[str, float]:
    """Median / p90 seconds per iteration, images/s and the backbone's share of one model."""
    med = statistics.median(times)
    # in training the hooks time the backbone's forward only
    backbone = statistics.median(backbone_times[: len(times)])
    return {
        "median_s": med,
        "p90_s": p90(times),
        "images_per_s": batch / med,
        "per_image_median_s": med / batch,
        "backbone_median_s": backbone,
        "after_backbone_fraction": max(0.0, 1 - backbone / med),
    }


def _speeds(
    times: dict[str, list[float]],
    backbone_times: dict[str, list[float]],
    *,
    batch: int,
    flops: float,
    peak: tuple[dict[str, Any], float],
) -> dict[str, dict[str, float]]:
    """{model: _speed}; ours also with its GFLOP/s, their fraction of the peak and the rate of
    its convolutions (`peak`: _peak's result)."""
    speeds = {name: _speed(ts, backbone_times[name], batch) for name, ts in times.items()}
    ours = speeds["ours"]
    ours["gflops_per_s"] = flops * ours["images_per_s"] / 1e9
    ours["fraction_of_peak"] = ours["gflops_per_s"] / peak[0]["peak_gflops"]
    ours["conv_gflops_per_s"] = peak[1]
    return speeds


def detection_tolerances(precision: str) -> tuple[float, float, float]:
    """(score atol, box atol in pixels, box rtol) within which two runs of the same weights in
    `precision` count as giving the same detections: float rounding, scaled to the precision's
    machine epsilon (fp32 allows 1e-4 on scores and 0.01 pixels on boxes)."""
    eps = torch.finfo(PRECISIONS[precision] or torch.float32).eps
    return max(1e-4, 4 * eps), 1e-2, 4 * eps


def same_detections(a: list[dict], b: list[dict], precision: str = "fp32") -> bool | None:
    """Whether two models' detections of the same images agree: per image the same labels in
    the same order, and boxes and scores within detection_tolerances(precision). None when
    neither model detected anything in any image (nothing was compared)."""
    if not any(len(x["scores"]) for x in a) and not any(len(y["scores"]) for y in b):
        return None
    score_atol, box_atol, box_rtol = detection_tolerances(precision)
    for x, y in zip(a, b, strict=True):
        if x["boxes"].shape != y["boxes"].shape or not torch.equal(x["labels"], y["labels"]):
            return False
        if not torch.allclose(x["scores"].float(), y["scores"].float(), atol=score_atol, rtol=0):
            return False
        if not torch.allclose(x["boxes"].float(), y["boxes"].float(), atol=box_atol, rtol=box_rtol):
            return False
    return True


def _vs_torchvision(bench: _Bench, result: dict[str, Any]) -> dict[str, Any]:
    """The speed ratio and, in inference, how the two models' detections compare."""
    out: dict[str, Any] = {
        "speed_ratio_ours_over_torchvision": (
            result["ours"]["images_per_s"] / result["torchvision"]["images_per_s"]
        )
    }
    if not bench.train:
        ours, theirs = bench.step("ours"), bench.step("torchvision")
        # the less precise of the two runs sets the tolerance
        coarsest = max(
            (bench.precision, bench.torchvision_precision),
            key=lambda p: torch.finfo(PRECISIONS[p] or torch.float32).eps,
        )
        out["same_detections"] = same_detections(ours, theirs, coarsest)
        out["detections_compared"] = sum(len(d["scores"]) for d in ours)
    return out


def _peak(bench: _Bench, say: Progress) -> tuple[dict[str, Any], float]:
    """The machine's peak in our precision (peak_gflops, with our heaviest convolutions) as
    result entries, and the rate of our convolutions, each call timed in one more iteration
    (not among the timed ones: the hooks synchronise every call)."""
    say("timing our convolutions, then the peak (matmuls and convolutions)")
    convs = ConvTimer(bench.models["ours"], bench.device)
    bench.step("ours")
    convs.remove()
    peak = peak_gflops(bench.device, bench.precision, convs.heaviest())
    matmuls = [rate for kernel, rate in peak.rates.items() if kernel.startswith("matmul")]
    entries = {
        "peak_gflops": peak.gflops,
        "peak_kernel": peak.kernel,
        "peak_threads": peak.threads,
        "peak_rates_gflops": peak.rates,
        "matmul_peak_gflops": max(matmuls),
    }
    return entries, convs.gflops_per_s()


def _check_request(mode: str, device: str, precisions: set[str]) -> None:
    """ValueError, before any work, for a mode or a precision this device cannot run."""
    if mode not in ("inference", "train"):
        raise ValueError(f"benchmark mode {mode!r}: use inference or train here")
    if "fp16" in precisions and not str(device).startswith("cuda"):
        raise ValueError(f"fp16 needs a CUDA device; on {device} use fp32 or bf16")


def benchmark(
    cfg: Config,
    *,
    mode: str = "inference",
    device: str = "cpu",
    precision: str = "fp32",
    size: tuple[int, int] = (800, 1067),
    batch: int = 1,
    iters: int = 10,
    warmup: int = 2,
    vs_torchvision: bool = False,
    torchvision_precision: str | None = None,
    profile: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Median / p90 latency, images/s, FLOPs, the fraction of the machine's peak and the rate
    of our convolutions (see _peak), the share of the backbone (with FPN) in the time; with
    `vs_torchvision`, the same for torchvision's twin model, run alternately with ours (in
    `torchvision_precision`, default `precision`), and in inference whether both detect the
    same (same_detections: null when neither detected anything). Inference runs our fast
    path as evaluation does (test.fast_path, model.compile) in `precision`; `profile` adds
    torch.profiler's top ops."""
    _check_request(mode, device, {precision, torchvision_precision or precision})
    say = progress or _quiet
    train = mode == "train"
    bench, flops = _build(
        cfg,
        train=train,
        device=device,
        precision=precision,
        size=size,
        batch=batch,
        vs_torchvision=vs_torchvision,
        torchvision_precision=torchvision_precision,
        say=say,
    )
    times, backbone_times = _measure(bench, warmup=warmup, iters=iters, say=say)
    peak = _peak(bench, say)
    result: dict[str, Any] = {
        "mode": mode,
        "device": device,
        "precision": precision,
        "torchvision_precision": bench.torchvision_precision if vs_torchvision else None,
        "size": list(size),
        "batch": batch,
        "iters": iters,
        "fast_path": bool(cfg.test.fast_path) and not train,
        "channels_last": bool(bench.models["ours"].channels_last),
        "flops_per_image": flops,
        **peak[0],
    }
    result.update(_speeds(times, backbone_times, batch=batch, flops=flops, peak=peak))
    for name, mb in bench.peak_mb.items():  # the memory figure beside each speed
        result[name]["peak_memory_mb"] = mb
    if vs_torchvision:
        result.update(_vs_torchvision(bench, result))
    if profile:
        say("profiling one iteration")
        result["profile"] = {name: profile_top_ops(lambda n=name: bench.step(n)) for name in times}
    return result


def benchmark_data(
    cfg: Config,
    *,
    iters: int = 50,
    warmup: int = 5,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Images/s of the training input pipeline (read, decode, augment, collate) with the
    config's data.num_workers, batches of solver.ims_per_batch, after `warmup` batches."""
    from ..data import build_train_loader

    say = progress or _quiet
    # whole batches of solver.ims_per_batch, whatever solver.accumulate splits them into
    cfg = replace(cfg, solver=replace(cfg.solver, accumulate=1))
    loader = build_train_loader(cfg)
    batches = iter(loader)
    for i in range(warmup):  # includes starting the workers
        next(batches)
        say(f"warm-up {i + 1}/{warmup}")
    times, pixels = [], 0
    for i in range(iters):
        start = time.perf_counter()
        images, _ = next(batches)
        times.append(time.perf_counter() - start)
        pixels += sum(img.shape[-2] * img.shape[-1] for img in images)
        if (i + 1) % 10 == 0:
            say(f"batch {i + 1}/{iters}")
    batch = cfg.solver.ims_per_batch
    return {
        "mode": "data",
        "dataset": dataset_label(cfg.data.train),
        "num_workers": cfg.data.num_workers,
        "batch": batch,
        "iters": iters,
        "seconds": sum(times),
        "images_per_s": batch * iters / sum(times),
        "median_batch_s": statistics.median(times),
        "mean_megapixels_per_image": pixels / (batch * iters) / 1e6,
    }
