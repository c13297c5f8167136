"""Measuring primitives of the benchmarks: synchronised wall times, per-module forward times,
FLOPs, the matmul peak and torch.profiler's top operators."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..utils.precision import PRECISIONS, native_bf16


def sync(device: str) -> None:
    """Wait for the device's queued work (CUDA); nothing to wait for on the CPU."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_peak_gflops(
    device: str, precision: str, n: int | None = None, repeats: int = 5
) -> float:
    """Achieved GFLOP/s of an n x n matmul in `precision`: this machine's practical peak.
    n defaults to 2048, or 512 where the precision is emulated (bf16 on a CPU without native
    bf16 runs a 2048 matmul for tens of seconds, and the rate does not depend on n there)."""
    dtype = PRECISIONS[precision] or torch.float32
    if n is None:
        emulated = precision == "bf16" and not native_bf16(device)[0]
        n = 512 if emulated else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


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
