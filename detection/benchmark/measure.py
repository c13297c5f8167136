"""Measuring primitives of the benchmarks: synchronised wall times, per-module forward times,
FLOPs, the machine's peak (matmuls and convolutions) and torch.profiler's top operators."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..utils.precision import PRECISIONS, native_bf16


def sync(device: str) -> None:
    """Wait for the device's queued work (CUDA); nothing to wait for on the CPU."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _best_seconds(
    fn: Callable[[], Any], device: str, repeats: int, min_seconds: float = 0.0
) -> float:
    """The shortest of at least `repeats` timed calls of `fn` (more, up to 100, until they
    took `min_seconds`), after one untimed: a peak is what the machine can do, and on shared
    cores only the fastest calls show it."""
    fn()
    times: list[float] = []
    while len(times) < repeats or (sum(times) < min_seconds and len(times) < 100):
        times.append(wall_time(fn, device))
    return min(times)


@dataclass(frozen=True)
class ConvShape:
    """A convolution as a workload runs it: input [N, C, H, W], weight [O, C/g, kh, kw]."""

    input: tuple[int, ...]
    weight: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...] | str
    dilation: tuple[int, ...]
    groups: int
    channels_last: bool

    @functools.cached_property
    def flops(self) -> int:
        out = F.conv2d(
            torch.empty(self.input, device="meta"),
            torch.empty(self.weight, device="meta"),
            None,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
        ).shape
        return 2 * out.numel() * math.prod(self.weight[1:])

    def __str__(self) -> str:
        o, c, kh, kw = self.weight
        layout = "channels_last" if self.channels_last else "contiguous"
        size = "x".join(map(str, self.input[2:]))
        return f"conv {kh}x{kw} {c * self.groups}->{o} on {size} ({layout})"


class ConvTimer:
    """The Conv2d layers of `model` while it runs: each call's shape (ConvShape) and seconds,
    timed by forward hooks (synchronised on CUDA, which stalls its queue: time a separate
    pass with it, not the pass whose speed you report)."""

    def __init__(self, model: nn.Module, device: str) -> None:
        self.device = device
        self.calls: dict[ConvShape, list[float]] = {}  # shape -> seconds of each call
        self._start = 0.0
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        self._handles = [m.register_forward_pre_hook(self._pre) for m in convs]
        self._handles += [m.register_forward_hook(self._post) for m in convs]

    def _pre(self, *_) -> None:
        sync(self.device)
        self._start = time.perf_counter()

    def _post(self, conv: nn.Conv2d, inputs, _) -> None:
        sync(self.device)
        seconds = time.perf_counter() - self._start
        x = inputs[0]
        shape = ConvShape(
            tuple(x.shape),
            tuple(conv.weight.shape),
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.groups,
            x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last),
        )
        self.calls.setdefault(shape, []).append(seconds)

    def remove(self) -> None:
        """Stop timing (remove the hooks); what was timed stays."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def gflops_per_s(self) -> float:
        """The convolutions' rate over all the calls timed: their FLOPs over their seconds."""
        flops = sum(shape.flops * len(t) for shape, t in self.calls.items())
        seconds = sum(sum(t) for t in self.calls.values())
        return flops / seconds / 1e9 if seconds else 0.0

    def heaviest(self, count: int = 3) -> list[ConvShape]:
        """The `count` shapes with the most FLOPs over their calls."""
        return sorted(self.calls, key=lambda s: s.flops * len(self.calls[s]), reverse=True)[:count]


# the probe's own kernels: matmuls of three sizes, and ResNet's 3x3 and 1x1 convolutions
# (C_in, C_out, k, H, W) in both memory formats; bf16 emulated on the CPU runs them 4x smaller
# per side (its rate hardly depends on size, and a 2048 matmul takes tens of seconds there)
_MATMULS = (512, 1024, 2048)
_CONVS = ((64, 64, 3, 100, 136), (256, 256, 3, 25, 34), (1024, 256, 1, 25, 34))
# each kernel runs at least this long (short ones more often): enough calls for the fastest
# to find the cores free
_PROBE_SECONDS = 0.25


@dataclass(frozen=True)
class Peak:
    """The machine's practical peak in one precision: the best GFLOP/s that dense kernels of
    the workload's kinds reach (the kernel that did, every kernel's rate, torch's threads)."""

    gflops: float
    kernel: str
    threads: int
    rates: dict[str, float]


def matmul_peak_gflops(
    device: str, precision: str, n: int | None = None, repeats: int = 5, min_seconds: float = 0.0
) -> float:
    """Achieved GFLOP/s of an n x n matmul in `precision` (the best of `repeats` or more
    calls, see _best_seconds). n defaults to 2048, or 512 where the precision is emulated
    (bf16 on a CPU without native bf16 runs a 2048 matmul for tens of seconds, and the rate
    does not depend on n there)."""
    dtype = PRECISIONS[precision] or torch.float32
    if n is None:
        n = 512 if _emulated(device, precision) else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    seconds = _best_seconds(lambda: a @ b, device, repeats, min_seconds)
    return 2 * n**3 / seconds / 1e9


def conv_gflops(
    device: str, precision: str, shape: ConvShape, repeats: int = 5, min_seconds: float = 0.0
) -> float:
    """Achieved GFLOP/s of one convolution in `precision` (the best of `repeats` or more
    calls, see _best_seconds)."""
    dtype = PRECISIONS[precision] or torch.float32
    fmt = torch.channels_last if shape.channels_last else torch.contiguous_format
    x = torch.randn(shape.input, device=device, dtype=dtype).contiguous(memory_format=fmt)
    w = torch.randn(shape.weight, device=device, dtype=dtype).contiguous(memory_format=fmt)
    args = (None, shape.stride, shape.padding, shape.dilation, shape.groups)
    with torch.inference_mode():
        seconds = _best_seconds(lambda: F.conv2d(x, w, *args), device, repeats, min_seconds)
    return shape.flops / seconds / 1e9


def _emulated(device: str, precision: str) -> bool:
    return precision == "bf16" and not native_bf16(device)[0]


def peak_gflops(
    device: str, precision: str, convs: Sequence[ConvShape] = (), repeats: int = 5
) -> Peak:
    """This machine's practical peak in `precision` with torch's present threads (the
    workload's): the best GFLOP/s of matmuls of three sizes, of 3x3 and 1x1 convolutions in
    both memory formats, and of `convs` (the workload's heaviest, ConvTimer), each the
    fastest of at least `repeats` calls. A 2048 matmul alone is not the peak: on the CPU
    torch.mm runs MKL's sgemm and the convolutions oneDNN's kernels, and smaller kernels
    that stay in the caches run faster than large ones (on an AVX-512 EPYC a whole R50-FPN
    averaged 110% of the rate of one 2048 matmul)."""
    shrink = 4 if _emulated(device, precision) else 1
    rates = {}
    for n in _MATMULS:
        n //= shrink
        rates[f"matmul {n}x{n}"] = matmul_peak_gflops(device, precision, n, repeats, _PROBE_SECONDS)
    own = [
        ConvShape(
            (1, c, h // shrink, w // shrink), (o, c, k, k), (1, 1), (k // 2,) * 2, (1, 1), 1, cl
        )
        for c, o, k, h, w in _CONVS
        for cl in (True, False)
    ]
    for shape in [*own, *convs]:
        rates[str(shape)] = conv_gflops(device, precision, shape, repeats, _PROBE_SECONDS)
    kernel = max(rates, key=rates.get)
    return Peak(rates[kernel], kernel, torch.get_num_threads(), rates)


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


def p90(times: list[float]) -> float:
    """The 90th percentile of `times` (nearest rank; the largest of fewer than ten)."""
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]


def wall_time(fn: Callable[[], Any], device: str) -> float:
    """Seconds of one call of `fn`, with the device synchronised before and after."""
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS: Linux >= 4.0's clear_refs."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    """VmHWM of /proc/self/status, else getrusage's ru_maxrss (the process's lifetime peak)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed_with_peak_memory(fn: Callable[[], Any], device: str) -> tuple[float, float]:
    """(seconds, peak memory in MiB) of one call of `fn`: on CUDA the most memory allocated
    during the call; on the CPU the process's peak RSS during it (reset before the call where
    Linux allows it, so the figure is this call's and not an earlier one's; it includes
    everything resident: weights, other models of the process, the interpreter)."""
    if device.startswith("cuda"):
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        seconds = wall_time(fn, device)
        return seconds, torch.cuda.max_memory_allocated(device) / 2**20
    _reset_peak_rss()
    seconds = wall_time(fn, device)
    return seconds, _peak_rss_mb()


class StageTimer:
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
        sync(self.device)
        self._start = time.perf_counter()

    def _post(self, *_):
        sync(self.device)
        self.times.append(time.perf_counter() - self._start)

    def remove(self) -> None:
        """Stop timing (remove the hooks); `times` stays."""
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
