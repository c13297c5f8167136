"""The device a command runs on: `auto` is CUDA when a CUDA device is available, else the CPU.

Every command that runs a model (train, evaluate, infer, benchmark, export, ...) and the
Predictor take `auto` by default, decide here, once, and say what they decided.
"""

from __future__ import annotations

import torch

AUTO = "auto"
DEVICE_HELP = "auto (default: cuda when a CUDA device is available, else cpu), cpu, cuda or cuda:N"


def resolve_device(requested: str | torch.device | None = AUTO) -> str:
    """'auto' (or None) -> 'cuda' when available, else 'cpu'; any other device as given.

    An explicit CUDA device without CUDA is a ValueError that says so (not a torch traceback).
    """
    if requested is None or str(requested) == AUTO:
        return "cuda" if torch.cuda.is_available() else "cpu"
    name = str(requested)
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}: use {DEVICE_HELP}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {name!r} was asked for but CUDA is not available here; use --device cpu "
            "(or leave --device out: auto)"
        )
    return name


def describe_device(device: str | torch.device, requested: str | torch.device | None) -> str:
    """One line for the log: which device runs, its name, and whether `auto` chose it."""
    dev = torch.device(device)
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        what = f"{device} ({torch.cuda.get_device_name(index)})"
    else:
        what = f"{device} ({torch.get_num_threads()} threads)"
    if requested is None or str(requested) == AUTO:
        why = "found a CUDA device" if dev.type == "cuda" else "no CUDA device"
        return f"device: {what}; auto: {why} (--device overrides)"
    return f"device: {what}, as asked"
