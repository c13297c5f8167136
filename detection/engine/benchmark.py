"""Speed measurements: inference and training throughput, FLOPs, the machine's matmul peak,
and the same runs of torchvision's Faster R-CNN on equal weights, alternated with ours; the
training input pipeline's images/s; the seconds of a COCO evaluation per backend."""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..config import Config
from ..modeling import build_model, inference_options, prepare_for_inference
from ..modeling.fast import PRECISIONS, autocast
from .trainer import use_channels_last


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_peak_gflops(device: str, precision: str, n: int = 2048, repeats: int = 5) -> float:
    """Achieved GFLOP/s of an n x n matmul in `precision`: this machine's practical peak."""
    dtype = PRECISIONS[precision] or torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    _sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


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


def flops_per_image(model: nn.Module, images: list[torch.Tensor], targets=None) -> float:
    """FLOPs of one forward (plus backward in training mode) per image, by FlopCounterMode."""
    counter = FlopCounterMode(display=False)
    with counter:
        out = model(images, targets) if model.training else model(images)
        if model.training:
            sum(out.values()).backward()
    if model.training:
        model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / len(images)


def _time(fn: Callable[[], Any], device: str) -> float:
    _sync(device)
    t = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t


def torchvision_twin(model: nn.Module) -> nn.Module:
    """torchvision's fasterrcnn_resnet50_fpn carrying `model`'s weights and test settings."""
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    from ..modeling.convert import convert_torchvision_fpn, freeze_torchvision_bn

    cfg = model.cfg
    tv = fasterrcnn_resnet50_fpn(
        weights=None,
        weights_backbone=None,
        num_classes=cfg.model.roi_heads.num_classes + 1,
        min_size=cfg.input.min_size_test,
        max_size=cfg.input.max_size_test,
        box_score_thresh=cfg.model.roi_heads.score_thresh,
        box_detections_per_img=cfg.test.detections_per_image,
        rpn_pre_nms_top_n_test=cfg.model.rpn.pre_nms_topk_test,
        rpn_post_nms_top_n_test=cfg.model.rpn.post_nms_topk_test,
    )
    freeze_torchvision_bn(tv)
    # the converter renames keys only: fed key names, it gives {our key: torchvision key}
    ours_to_tv = convert_torchvision_fpn({k: k for k in tv.state_dict()})
    ours = model.state_dict()
    missing = [k for k in ours_to_tv if k not in ours]
    if missing:
        raise ValueError(
            f"--vs-torchvision needs torchvision's R50-FPN layout (e.g. "
            f"configs/coco/faster_rcnn_R50_FPN_1x.yaml); this model lacks {missing[:3]}"
        )
    tv.load_state_dict({t: ours[o] for o, t in ours_to_tv.items()}, strict=False)
    # train the same parameters: freeze what our model freezes (e.g. freeze_at=2: stem, res2)
    trainable = {o for o, p in model.named_parameters() if p.requires_grad}
    tv_params = dict(tv.named_parameters())
    for o, t in ours_to_tv.items():
        if t in tv_params:
            tv_params[t].requires_grad_(o in trainable)
    return tv


class _StageTimer:
    """Wall time of each call of a module (forward hooks, synchronised on CUDA)."""

    def __init__(self, module: nn.Module, device: str) -> None:
        self.device = device
        self.times: list[float] = []
        self._start = 0.0
        self._handles = [
            module.register_forward_pre_hook(self._pre),
            module.register_forward_hook(self._post),
        ]

    def _pre(self, *_):
        _sync(self.device)
        self._start = time.perf_counter()

    def _post(self, *_):
        _sync(self.device)
        self.times.append(time.perf_counter() - self._start)

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def profile_top_ops(fn: Callable[[], Any], rows: int = 15) -> str:
    """torch.profiler's table of the operators that took the most time in one call of fn."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        fn()
    sort = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=sort, row_limit=rows)


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
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Median / p90 latency, images/s, FLOPs, the fraction of the matmul peak and the share of
    the backbone (with FPN) in the time; with `vs_torchvision`, the same for torchvision's twin
    model, run alternately with ours (in `torchvision_precision`, default `precision`).
    Inference runs our fast path as evaluation does (test.fast_path, model.compile) in
    `precision`; `profile` adds torch.profiler's top ops."""
    if mode not in ("inference", "train"):
        raise ValueError(f"benchmark mode {mode!r}: use inference or train here")
    say = progress or (lambda msg: None)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, load_backbone_weights=False).to(device)
    train = mode == "train"
    model.train(train)
    images, targets = synthetic_batch(batch, size, device)
    models = {"ours": model}
    if vs_torchvision:
        models["torchvision"] = torchvision_twin(model).to(device).train(train)
    say("counting FLOPs")
    flops = flops_per_image(model, images, targets if train else None)
    if not train:
        prepare_for_inference(model, **{**inference_options(cfg), "precision": precision})
    elif use_channels_last(cfg.solver.memory_format, "off" if precision == "fp32" else precision):
        model.to(memory_format=torch.channels_last)  # as the trainer does
        model.channels_last = True
    optimizers = {
        name: torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1e-4)
        for name, m in models.items()
    }

    def step(name: str):
        m = models[name]
        # ours sets its own inference precision (model.precision); autocast for the rest
        if name == "torchvision":
            context = autocast(device, torchvision_precision or precision)
        else:
            context = autocast(device, "fp32" if not train else precision)
        if train:
            with context:
                losses = m(images, targets)
            optimizers[name].zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            optimizers[name].step()
            return None
        with torch.inference_mode(), context:
            return m(images)

    say("measuring the matmul peak")
    peak = matmul_peak_gflops(device, precision)
    for i in range(warmup):
        for name in models:
            step(name)
        say(f"warm-up {i + 1}/{warmup}")
    timers = {name: _StageTimer(m.backbone, device) for name, m in models.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    for i in range(iters):
        order = list(models) if i % 2 == 0 else list(reversed(models))  # alternate the order
        for name in order:
            times[name].append(_time(lambda n=name: step(n), device))
        say(f"iteration {i + 1}/{iters}")
    for timer in timers.values():
        timer.remove()
    result: dict[str, Any] = {
        "mode": mode,
        "device": device,
        "precision": precision,
        "torchvision_precision": (torchvision_precision or precision) if vs_torchvision else None,
        "size": list(size),
        "batch": batch,
        "iters": iters,
        "fast_path": bool(cfg.test.fast_path) and not train,
        "channels_last": bool(model.channels_last),
        "flops_per_image": flops,
        "matmul_peak_gflops": peak,
    }
    for name, ts in times.items():
        med = statistics.median(ts)
        p90 = sorted(ts)[min(len(ts) - 1, int(round(0.9 * (len(ts) - 1))))]
        # in training the hooks time the backbone's forward only
        backbone = statistics.median(timers[name].times[: len(ts)])
        result[name] = {
            "median_s": med,
            "p90_s": p90,
            "images_per_s": batch / med,
            "per_image_median_s": med / batch,
            "backbone_median_s": backbone,
            "after_backbone_fraction": max(0.0, 1 - backbone / med),
        }
    ours = result["ours"]
    ours["gflops_per_s"] = flops * ours["images_per_s"] / 1e9
    ours["fraction_of_peak"] = ours["gflops_per_s"] / peak
    if vs_torchvision:
        result["speed_ratio_ours_over_torchvision"] = (
            result["ours"]["images_per_s"] / result["torchvision"]["images_per_s"]
        )
        if not train:
            result["same_detections"] = _same_detections(step("ours"), step("torchvision"))
    if profile:
        say("profiling one iteration")
        result["profile"] = {name: profile_top_ops(lambda n=name: step(n)) for name in models}
    return result


def benchmark_data(
    cfg: Config,
    *,
    iters: int = 50,
    warmup: int = 5,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Images/s of the training input pipeline (read, decode, augment, collate) with the
    config's data.num_workers, batches of solver.ims_per_batch, after `warmup` batches."""
    from ..data import build_train_loader

    say = progress or (lambda msg: None)
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
        "dataset": cfg.data.train.name,
        "num_workers": cfg.data.num_workers,
        "batch": batch,
        "iters": iters,
        "seconds": sum(times),
        "images_per_s": batch * iters / sum(times),
        "median_batch_s": statistics.median(times),
        "mean_megapixels_per_image": pixels / (batch * iters) / 1e6,
    }


def synthetic_results(annotations: str | os.PathLike, seed: int = 0) -> list[dict[str, Any]]:
    """Plausible detections for a COCO json: each ground-truth box jittered (a random score),
    and two random boxes per image; a workload like a real detector's for timing COCOeval."""
    import numpy as np

    with open(annotations) as f:
        gt = json.load(f)
    rng = np.random.default_rng(seed)
    cats = [c["id"] for c in gt["categories"]]
    results = []
    for a in gt.get("annotations", []):
        x, y, w, h = a["bbox"]
        jitter = rng.normal(0, 0.1, 4) * [w, h, w, h]
        box = [x + jitter[0], y + jitter[1], max(1.0, w + jitter[2]), max(1.0, h + jitter[3])]
        results.append(
            {
                "image_id": a["image_id"],
                "category_id": a["category_id"],
                "bbox": [float(v) for v in box],
                "score": float(rng.uniform(0.3, 1.0)),
            }
        )
    for img in gt["images"]:
        for _ in range(2):
            w, h = rng.uniform(8, 0.5 * img["width"]), rng.uniform(8, 0.5 * img["height"])
            x, y = rng.uniform(0, img["width"] - w), rng.uniform(0, img["height"] - h)
            results.append(
                {
                    "image_id": img["id"],
                    "category_id": int(rng.choice(cats)),
                    "bbox": [float(x), float(y), float(w), float(h)],
                    "score": float(rng.uniform(0.05, 0.6)),
                }
            )
    return results


def synthetic_ground_truth(
    path: str | os.PathLike, num_images: int, seed: int = 0, boxes_per_image: float = 7.3
) -> Path:
    """A COCO-like ground-truth json (80 categories, about 7.3 boxes per image of all sizes and
    1% crowd, as COCO val2017) of `num_images` 640x480 images, for timing evaluations."""
    import numpy as np

    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        images.append(
            {"id": image_id, "file_name": f"{image_id:012d}.jpg", "width": 640, "height": 480}
        )
        for _ in range(rng.poisson(boxes_per_image)):
            w, h = np.exp(rng.uniform(np.log(6), np.log(400), 2))
            w, h = min(w, 639.0), min(h, 479.0)
            x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(rng.integers(1, 81)),
                    "bbox": [float(x), float(y), float(w), float(h)],
                    "area": float(w * h),
                    "iscrowd": int(rng.random() < 0.01),
                }
            )
    categories = [{"id": i, "name": f"class{i}"} for i in range(1, 81)]
    path = Path(path)
    path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return path


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
    one of N images (synthetic_ground_truth)."""
    import tempfile

    from ..data import dataset_files

    if not synthetic_images:
        return _time_evaluation(dataset_files(cfg, "test")[0], results, cfg.seed, iters, progress)
    if results is not None:
        raise ValueError("give either a results file or synthetic images, not both")
    with tempfile.TemporaryDirectory() as tmp:
        gt = synthetic_ground_truth(Path(tmp) / "gt.json", synthetic_images, cfg.seed)
        out = _time_evaluation(gt, None, cfg.seed, iters, progress)
    out["annotations"] = f"synthetic: {synthetic_images} images"
    return out


def _time_evaluation(
    annotations: Path,
    results: str | os.PathLike | None,
    seed: int,
    iters: int,
    progress: Callable[[str], None] | None,
) -> dict[str, Any]:
    from ..evaluation import coco_evaluate, load_coco

    say = progress or (lambda msg: None)
    if results is None:
        detections = synthetic_results(annotations, seed=seed)
        source = "synthetic (ground truth jittered, 2 false positives per image)"
    else:
        with open(results) as f:
            detections = json.load(f)
        source = str(results)
    gt = load_coco(annotations)
    backends = ["pycocotools"]
    try:
        import faster_coco_eval  # noqa: F401

        backends.append("faster")
    except ImportError:
        say("faster-coco-eval is not installed: timing pycocotools only")
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
        times = []
        for i in range(iters):
            start = time.perf_counter()
            metrics[backend] = coco_evaluate(gt, detections, backend=backend)
            times.append(time.perf_counter() - start)
            say(f"{backend} {i + 1}/{iters}")
        out[backend] = {"median_s": statistics.median(times), "AP": metrics[backend]["AP"]}
    if "faster" in metrics:
        a, b = metrics["pycocotools"], metrics["faster"]
        out["same_metrics"] = all(
            (a[k] is None and b[k] is None) or abs(a[k] - b[k]) < 1e-6
            for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")
        )
        out["speedup_faster_over_pycocotools"] = (
            out["pycocotools"]["median_s"] / out["faster"]["median_s"]
        )
    return out


def _same_detections(a: list[dict], b: list[dict]) -> bool:
    for x, y in zip(a, b, strict=True):
        if x["boxes"].shape != y["boxes"].shape or not torch.equal(x["labels"], y["labels"]):
            return False
        if not torch.allclose(x["boxes"].float(), y["boxes"].float(), atol=1e-2, rtol=0):
            return False
    return True
