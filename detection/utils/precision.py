"""Numerical precision: which dtype training and inference run in, chosen for the hardware.

`auto` (the default of `solver.amp` and `test.precision`) means bf16 where the hardware runs it
natively and fp32 everywhere else:
- CUDA: bf16 when the GPU supports it without emulation (Ampere and newer), else fp32;
- CPU: bf16 when the CPU has AMX or AVX512_BF16 *and* oneDNN is allowed to use them. oneDNN
  can be capped with `ONEDNN_MAX_CPU_ISA` (or the older `DNNL_MAX_CPU_ISA`), e.g.
  `ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI` makes an AMX machine behave like one without native
  bf16; the rule follows the cap. Without native support oneDNN emulates bf16, several times
  slower than fp32.

An explicit `bf16` is honoured everywhere, with one warning where it is emulated. `fp16` is a
CUDA precision (autocast on CPU has no fast fp16 kernels).
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import re
import sys
import warnings
from contextlib import nullcontext
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)

# autocast dtype of each precision name; fp32 runs without autocast
PRECISIONS: dict[str, torch.dtype | None] = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}

# oneDNN's ISA names in increasing order (dnnl_cpu_isa_t); bf16 dot products are native from
# AVX512_CORE_BF16 up. Aliases map the names oneDNN accepts for the same level.
_ONEDNN_ISA_ORDER = [
    "SSE41",
    "AVX",
    "AVX2",
    "AVX2_VNNI",
    "AVX2_VNNI_2",
    "AVX512_CORE",
    "AVX512_CORE_VNNI",
    "AVX512_CORE_BF16",
    "AVX10_1_512",
    "AVX10_1_512_AMX",
    "AVX10_1_512_AMX_FP16",
    "AVX10_2_512",
    "AVX10_2_512_AMX_2",
    "ALL",
    "DEFAULT",
]
_ONEDNN_ISA_ALIASES = {
    "AVX512_CORE_FP16": "AVX10_1_512",
    "AVX512_CORE_AMX": "AVX10_1_512_AMX",
    "AVX512_CORE_AMX_FP16": "AVX10_1_512_AMX_FP16",
}
_FIRST_NATIVE_BF16_ISA = "AVX512_CORE_BF16"
_FIRST_AMX_ISA = "AVX10_1_512_AMX"


@dataclass(frozen=True)
class Precision:
    """A resolved precision: `name` is "fp32", "bf16" or "fp16"; `reason` says why."""

    name: str
    reason: str

    def __str__(self) -> str:
        return f"{self.name} ({self.reason})"


def check_precision(precision: str) -> None:
    """Raise a ValueError naming the choices unless `precision` is a resolved precision."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {tuple(PRECISIONS)}")


def autocast(device: str | torch.device, precision: str):
    """torch.autocast to `precision` on `device`; "fp32" adds no context (an enclosing autocast,
    such as the trainer's solver.amp, stays in force)."""
    check_precision(precision)
    dtype = PRECISIONS[precision]
    if dtype is None:
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def onednn_isa_cap() -> str | None:
    """The ISA cap set for oneDNN in the environment (upper case), or None when uncapped."""
    for var in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        value = os.environ.get(var, "").strip().upper()
        if value:
            return _ONEDNN_ISA_ALIASES.get(value, value)
    return None


def _cap_allows(cap: str | None, isa: str) -> bool:
    if cap is None or cap in ("ALL", "DEFAULT"):
        return True
    if cap not in _ONEDNN_ISA_ORDER:
        return True  # oneDNN ignores a name it does not know
    return _ONEDNN_ISA_ORDER.index(cap) >= _ONEDNN_ISA_ORDER.index(isa)


@dataclass(frozen=True)
class CpuFeatures:
    """What the CPU reports: True / False, or None where no probe could tell ("unknown")."""

    amx: bool | None
    avx512_bf16: bool | None
    source: str  # the probe that answered, or why none could


# The CPU feature probes torch has had, newest first: torch.cpu.get_capabilities() (cpuinfo's
# flags by name), torch.cpu._is_*_supported(), and the torch._C._cpu functions of older releases.
_CAPABILITY_KEYS = {"amx": ("amx_bf16", "amx_tile"), "avx512_bf16": ("avx512_bf16",)}
_PROBE_FUNCTIONS = {"amx": "_is_amx_tile_supported", "avx512_bf16": "_is_avx512_bf16_supported"}


def _from_capabilities() -> CpuFeatures | None:
    get = getattr(getattr(torch, "cpu", None), "get_capabilities", None)
    if get is None:
        return None
    caps = get()
    found = {}
    for feature, keys in _CAPABILITY_KEYS.items():
        values = [caps[k] for k in keys if isinstance(caps.get(k), bool)]
        found[feature] = any(values) if values else None
    if None in found.values():
        return None
    return CpuFeatures(found["amx"], found["avx512_bf16"], "torch.cpu.get_capabilities()")


def _from_functions(module, where: str) -> CpuFeatures | None:
    fns = {f: getattr(module, name, None) for f, name in _PROBE_FUNCTIONS.items()}
    if module is None or None in fns.values():
        return None
    found = {f: bool(fn()) for f, fn in fns.items()}
    return CpuFeatures(found["amx"], found["avx512_bf16"], where)


def probe_cpu_features() -> CpuFeatures:
    """Ask the installed torch for the CPU's AMX / AVX512_BF16 flags through the first probe it
    has; a probe that is missing or fails gives "unknown" (None), never False."""
    probes = (
        _from_capabilities,
        lambda: _from_functions(getattr(torch, "cpu", None), "torch.cpu._is_*_supported()"),
        lambda: _from_functions(getattr(torch._C, "_cpu", None), "torch._C._cpu._is_*_supported()"),
    )
    errors = []
    for probe in probes:
        try:
            features = probe()
        except Exception as e:  # noqa: BLE001 -- any failure of a private probe means unknown
            errors.append(f"{type(e).__name__}: {e}")
            continue
        if features is not None:
            return features
    why = "; ".join(errors) if errors else "this torch has none of the known CPU feature probes"
    return CpuFeatures(None, None, why)


@functools.cache
def _cpu_features() -> CpuFeatures:
    features = probe_cpu_features()
    if features.amx is None:
        logger.warning("CPU bf16 support unknown: %s", features.source)
    return features


def _onednn_verbose_header() -> str:
    """oneDNN's verbose header, printed on stdout by the C library, captured at the fd level."""
    import ctypes
    import tempfile

    libc = ctypes.CDLL(None)
    # no random numbers: the probe must not move the global generator (a seeded run would
    # then differ from one in which the probe ran at another time)
    x = torch.ones(2, 32, 32, 32).to(memory_format=torch.channels_last)
    weight = torch.ones(32, 32, 3, 3).to(memory_format=torch.channels_last)
    # a user's ONEDNN_VERBOSE stays on (the context manager would switch it off on exit) and
    # gets back what was captured
    users_verbose = any(os.environ.get(v) for v in ("ONEDNN_VERBOSE", "DNNL_VERBOSE"))
    verbose = nullcontext() if users_verbose else torch.backends.mkldnn.verbose(1)
    with tempfile.TemporaryFile() as tmp:
        sys.stdout.flush()
        libc.fflush(None)
        saved = os.dup(1)
        try:
            os.dup2(tmp.fileno(), 1)
            with torch.no_grad(), verbose:
                torch.nn.functional.conv2d(x, weight)
            libc.fflush(None)
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode(errors="replace")
    if users_verbose:
        os.write(1, text.encode())
    return text


@functools.cache
def onednn_isa() -> str | None:
    """The ISA oneDNN itself says it uses in this process (e.g. "Intel AVX2", "Intel AVX-512 with
    Intel DL Boost and bfloat16 support"), after any ONEDNN_MAX_CPU_ISA cap; None where oneDNN
    is absent or its header cannot be read (it prints it once per process)."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        header = _onednn_verbose_header()
    except Exception as e:  # noqa: BLE001 -- no libc, no fd 1: oneDNN's verdict is unknown
        logger.info("oneDNN's ISA unknown: %s: %s", type(e).__name__, e)
        return None
    found = re.search(r"onednn_verbose,.*?info,cpu,isa:(.*)", header)
    return found.group(1).strip() if found else None


def onednn_has_native_bf16(isa: str) -> bool:
    """Whether oneDNN's ISA line names native bf16 dot products (AVX512_BF16 or AMX)."""
    return "bfloat16" in isa or "AMX" in isa


def _cpu_native_bf16() -> tuple[bool, str]:
    features = _cpu_features()
    cpu_says = None if features.amx is None else bool(features.amx or features.avx512_bf16)
    isa = onednn_isa()
    if isa is not None:
        # oneDNN runs the convolutions: its verdict (which follows ONEDNN_MAX_CPU_ISA as read
        # when it started) is the authority
        native = onednn_has_native_bf16(isa)
        if cpu_says is not None and cpu_says != native:
            _log_disagreement(features.source, cpu_says, isa)
        where = "AMX" if "AMX" in isa else ("AVX512_BF16" if native else None)
        if native:
            return True, f"native on this CPU: {where} (oneDNN: {isa})"
        if cpu_says:
            return False, f"oneDNN uses {isa} (capped below bf16; ONEDNN_MAX_CPU_ISA)"
        return False, f"oneDNN uses {isa}, without bf16 instructions"
    if cpu_says is None:
        return False, f"bf16 support unknown ({features.source}); fp32 is the safe choice"
    cap = onednn_isa_cap()
    if features.amx and _cap_allows(cap, _FIRST_AMX_ISA):
        return True, "native on this CPU: AMX"
    if cpu_says and _cap_allows(cap, _FIRST_NATIVE_BF16_ISA):
        return True, "native on this CPU: AVX512_BF16"
    if cpu_says:
        return False, f"oneDNN capped below bf16 by ONEDNN_MAX_CPU_ISA={cap}"
    return False, "this CPU has neither AMX nor AVX512_BF16"


@functools.cache
def _log_disagreement(source: str, cpu_says: bool, isa: str) -> None:
    logger.warning(
        "%s says bf16 is %snative but oneDNN uses %s; following oneDNN",
        source,
        "" if cpu_says else "not ",
        isa,
    )


def native_bf16(device: str | torch.device = "cpu") -> tuple[bool, str]:
    """(whether `device` runs bf16 natively, the reason in words)."""
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False, "CUDA is not available"
        name = torch.cuda.get_device_name(device)
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return True, f"native on this GPU: {name}"
        return False, f"not native on this GPU: {name}"
    if device.type != "cpu":
        return False, f"no bf16 rule for {device.type}"
    return _cpu_native_bf16()


def resolve_precision(requested: str, device: str | torch.device = "cpu") -> Precision:
    """The precision to run for a config value: "auto", "fp32" / "off", "bf16" or "fp16".

    "auto" is bf16 where native (see native_bf16) and fp32 elsewhere. An explicit bf16 where
    it is emulated is kept, with a warning (once per process) that fp32 is faster there.
    """
    device = torch.device(device)
    if requested in ("off", "fp32"):
        return Precision("fp32", "asked for")
    if requested == "fp16":
        if device.type != "cuda":
            raise ValueError("fp16 needs a CUDA device; on CPU use bf16 or auto")
        return Precision("fp16", "asked for")
    native, why = native_bf16(device)
    if requested == "auto":
        return (
            Precision("bf16", why)
            if native
            else Precision("fp32", f"auto; bf16 is not native: {why}")
        )
    if requested == "bf16":
        if not native:
            _warn_emulated(device.type, why)
        return Precision("bf16", "asked for" + ("" if native else f"; emulated: {why}"))
    raise ValueError(
        f"unknown precision {requested!r}; choose from auto, fp32 (or off), bf16, fp16"
    )


@functools.cache
def _warn_emulated(device_type: str, why: str) -> None:
    warnings.warn(
        f"bf16 asked for on {device_type} but it is not native here ({why}): it is emulated and "
        "slower than fp32. Use precision auto (the default) or fp32.",
        stacklevel=3,
    )


@functools.cache
def log_precision(what: str, precision: Precision) -> None:
    """Say once per process and setting what a precision resolved to."""
    logger.info("%s precision: %s", what, precision)


def machine_description(device: str | torch.device = "cpu") -> str:
    """The machine a figure was measured on, in words: the GPU's name, or the CPU's model, its
    cores and whether bf16 is native (what every published speed figure must say)."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return f"GPU: {torch.cuda.get_device_name(device)}"
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        model = names[0] if names else model
    except OSError:
        pass
    flags = "AVX-512" if torch.backends.cpu.get_cpu_capability().startswith("AVX512") else "AVX2"
    if torch.backends.cpu.get_cpu_capability() == "DEFAULT":
        flags = "no AVX2"
    native, why = native_bf16("cpu")
    bf16 = "native bf16" if native else "no native bf16"
    return f"CPU: {model}, {os.cpu_count()} cores, {flags}, {bf16} ({why})"
