"""RoIAlign and RoI pooling for training on CPU, forward and backward spread over threads.

torchvision's CPU kernels run on one thread, backward included. Here the forward splits the
RoIs over Python threads (each RoI pooled by the same kernel: the output is bit-identical), and
the backward splits the channels: each thread runs torchvision's own backward kernel on a slice
of channels, which writes a disjoint slice of the input gradient and adds the RoIs'
contributions to each element in the same order as the one-thread kernel, so the gradient is
bit-identical too. The kernels release the GIL, so the threads use the cores.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch

_pools: dict[tuple[int, int], ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def thread_pool(workers: int) -> ThreadPoolExecutor:
    """A process-wide pool of `workers` threads (one per process: a forked child has the
    parent's executor object but not its threads)."""
    key = (os.getpid(), workers)
    with _pools_lock:
        if key not in _pools:
            _pools[key] = ThreadPoolExecutor(workers, thread_name_prefix="roi-pool")
        return _pools[key]


def _spans(total: int, parts: int) -> list[tuple[int, int]]:
    """`parts` contiguous (start, end) ranges covering 0..total, sizes differing by at most 1."""
    parts = max(1, min(parts, total))
    edges = [total * i // parts for i in range(parts + 1)]
    return [(a, b) for a, b in zip(edges, edges[1:], strict=False) if b > a]


def _map(threads: int, fn: Callable, items: Sequence) -> list:
    if len(items) == 1:
        return [fn(items[0])]
    return list(thread_pool(threads).map(fn, items))


def _forward_by_rois(threads: int, op: Callable, rois: torch.Tensor) -> list:
    """op(rois chunk) for contiguous chunks of the RoIs, in order."""
    return _map(threads, lambda span: op(rois[span[0] : span[1]]), _spans(rois.shape[0], threads))


def _backward_by_channels(threads: int, channels: int, op: Callable) -> torch.Tensor:
    """The input gradient, op(c0, c1) giving channels c0..c1 of it, concatenated."""
    parts = _map(threads, lambda span: op(*span), _spans(channels, threads))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


class _RoIAlign(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, rois, scale, size, sampling_ratio, aligned, threads):
        x = x.contiguous()  # once: the kernel would copy a channels_last map per call
        ctx.save_for_backward(rois)
        ctx.args = (x.shape, scale, size, sampling_ratio, aligned, threads)
        h, w = size

        def op(r):
            return torch.ops.torchvision.roi_align(x, r, scale, h, w, sampling_ratio, aligned)

        return torch.cat(_forward_by_rois(threads, op, rois))

    @staticmethod
    def backward(ctx, grad):
        (rois,) = ctx.saved_tensors
        (n, c, height, width), scale, (h, w), sampling_ratio, aligned, threads = ctx.args

        def op(c0: int, c1: int) -> torch.Tensor:
            g = grad[:, c0:c1].contiguous()
            return torch.ops.torchvision._roi_align_backward(
                g, rois, scale, h, w, n, c1 - c0, height, width, sampling_ratio, aligned
            )

        return _backward_by_channels(threads, c, op), None, None, None, None, None, None


class _RoIPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, rois, scale, size, threads):
        x = x.contiguous()
        h, w = size
        parts = _forward_by_rois(
            threads, lambda r: torch.ops.torchvision.roi_pool(x, r, scale, h, w), rois
        )
        out = torch.cat([p[0] for p in parts])
        argmax = torch.cat([p[1] for p in parts])
        ctx.save_for_backward(rois, argmax)
        ctx.args = (x.shape, scale, size, threads)
        return out

    @staticmethod
    def backward(ctx, grad):
        rois, argmax = ctx.saved_tensors
        (n, c, height, width), scale, (h, w), threads = ctx.args

        def op(c0: int, c1: int) -> torch.Tensor:
            g, a = grad[:, c0:c1].contiguous(), argmax[:, c0:c1].contiguous()
            return torch.ops.torchvision._roi_pool_backward(
                g, rois, a, scale, h, w, n, c1 - c0, height, width
            )

        return _backward_by_channels(threads, c, op), None, None, None, None


def roi_align_threads(
    x: torch.Tensor,
    rois: torch.Tensor,
    size: tuple[int, int],
    scale: float,
    sampling_ratio: int,
    aligned: bool,
    threads: int,
) -> torch.Tensor:
    """torchvision.ops.roi_align(x, rois, size, scale, sampling_ratio, aligned) on `threads`
    threads, forward and backward (x: [N, C, H, W] fp32 on CPU; rois: [R, 5])."""
    return _RoIAlign.apply(x, rois, scale, tuple(size), sampling_ratio, aligned, threads)


def roi_pool_threads(
    x: torch.Tensor, rois: torch.Tensor, size: tuple[int, int], scale: float, threads: int
) -> torch.Tensor:
    """torchvision.ops.roi_pool(x, rois, size, scale) on `threads` threads, forward and
    backward."""
    return _RoIPool.apply(x, rois, scale, tuple(size), threads)
