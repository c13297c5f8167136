"""Speed measurements: inference and training throughput, FLOPs, the machine's matmul peak,
and the same runs of torchvision's Faster R-CNN on equal weights, alternated with ours."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..config import Config
from ..modeling import build_model

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _autocast(device: str, precision: str):
    dtype = PRECISIONS[precision]
    if dtype is None:
        return nullcontext()
    return torch.autocast("cuda" if device.startswith("cuda") else "cpu", dtype=dtype)


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
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Median / p90 latency, images/s, FLOPs and the fraction of the matmul peak; with
    `vs_torchvision`, the same for torchvision's twin model, run alternately with ours."""
    say = progress or (lambda msg: None)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, load_backbone_weights=False).to(device)
    train = mode == "train"
    model.train(train)
    images, targets = synthetic_batch(batch, size, device)
    models = {"ours": model}
    if vs_torchvision:
        models["torchvision"] = torchvision_twin(model).to(device).train(train)
    optimizers = {
        name: torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1e-4)
        for name, m in models.items()
    }

    def step(name: str):
        m = models[name]
        if train:
            with _autocast(device, precision):
                losses = m(images, targets)
            optimizers[name].zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            optimizers[name].step()
            return None
        with torch.inference_mode(), _autocast(device, precision):
            return m(images)

    say("counting FLOPs")
    flops = flops_per_image(model, images, targets if train else None)
    say("measuring the matmul peak")
    peak = matmul_peak_gflops(device, precision)
    for i in range(warmup):
        for name in models:
            step(name)
        say(f"warm-up {i + 1}/{warmup}")
    times: dict[str, list[float]] = {name: [] for name in models}
    for i in range(iters):
        order = list(models) if i % 2 == 0 else list(reversed(models))  # alternate the order
        for name in order:
            times[name].append(_time(lambda n=name: step(n), device))
        say(f"iteration {i + 1}/{iters}")
    result: dict[str, Any] = {
        "mode": mode,
        "device": device,
        "precision": precision,
        "size": list(size),
        "batch": batch,
        "iters": iters,
        "flops_per_image": flops,
        "matmul_peak_gflops": peak,
    }
    for name, ts in times.items():
        med = statistics.median(ts)
        p90 = sorted(ts)[min(len(ts) - 1, int(round(0.9 * (len(ts) - 1))))]
        result[name] = {
            "median_s": med,
            "p90_s": p90,
            "images_per_s": batch / med,
            "per_image_median_s": med / batch,
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
    return result


def _same_detections(a: list[dict], b: list[dict]) -> bool:
    for x, y in zip(a, b, strict=True):
        if x["boxes"].shape != y["boxes"].shape or not torch.equal(x["labels"], y["labels"]):
            return False
        if not torch.allclose(x["boxes"].float(), y["boxes"].float(), atol=1e-2, rtol=0):
            return False
    return True
