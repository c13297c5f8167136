"""`auto` precision: bf16 only where native, following oneDNN's ISA cap; explicit choices kept."""

import json
import os
import re
import subprocess
import sys
import warnings

import pytest
import torch
from helpers import ROOT

from detection.config import ConfigError, load_config
from detection.engine.trainer import Trainer, use_channels_last
from detection.utils import precision as P

CAP = "AVX512_CORE_VNNI"  # the newest ISA without native bf16


def simulate_cpu(monkeypatch, amx, avx512_bf16, onednn=None):
    """Pretend the CPU reports these flags and oneDNN this ISA line (None: oneDNN unreadable,
    so the flags and the ONEDNN_MAX_CPU_ISA rule decide)."""
    features = P.CpuFeatures(amx, avx512_bf16, "simulated")
    monkeypatch.setattr(P, "_cpu_features", lambda: features)
    monkeypatch.setattr(P, "onednn_isa", lambda: onednn)


@pytest.fixture
def amx_cpu(monkeypatch):
    """Pretend the CPU has AMX and AVX512_BF16 (as the README's AMX machine does)."""
    simulate_cpu(monkeypatch, True, True)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)


def test_auto_flips_under_the_onednn_cap(amx_cpu, monkeypatch):
    assert P.resolve_precision("auto") == P.Precision("bf16", "native on this CPU: AMX")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", CAP)
    auto = P.resolve_precision("auto")
    assert auto.name == "fp32" and CAP in auto.reason
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx512_core_bf16")  # oneDNN ignores case
    assert P.resolve_precision("auto") == P.Precision("bf16", "native on this CPU: AVX512_BF16")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "AVX2")  # the older variable name
    assert P.resolve_precision("auto").name == "fp32"


def test_auto_is_fp32_without_native_bf16(monkeypatch):
    simulate_cpu(monkeypatch, False, False)
    auto = P.resolve_precision("auto")
    assert auto.name == "fp32" and "neither AMX nor AVX512_BF16" in auto.reason
    assert P.resolve_precision("off").name == "fp32"
    assert P.resolve_precision("fp32").name == "fp32"


def test_explicit_bf16_is_kept_and_warns_once_where_emulated(monkeypatch):
    simulate_cpu(monkeypatch, False, False)
    P._warn_emulated.cache_clear()
    with pytest.warns(UserWarning, match="emulated and slower than fp32"):
        assert P.resolve_precision("bf16").name == "bf16"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert P.resolve_precision("bf16").name == "bf16"  # no second warning


AVX2 = "Intel AVX2"
AVX512_BF16 = "Intel AVX-512 with Intel DL Boost and bfloat16 support"
AMX = (
    "Intel AVX-512 with float16, Intel DL Boost and bfloat16 support and Intel AMX with "
    "bfloat16 and 8-bit integer support"
)


@pytest.mark.parametrize(
    "flags, isa, native",
    [
        ((False, False), AVX2, False),
        ((False, True), AVX512_BF16, True),
        ((True, True), AMX, True),
        ((True, True), "Intel AVX-512 with Intel DL Boost", False),  # oneDNN capped
        ((False, False), AVX512_BF16, True),  # the flags' probe is wrong: oneDNN decides
        ((True, True), AVX2, False),
    ],
)
def test_onednn_is_the_authority_over_the_flags(monkeypatch, flags, isa, native):
    simulate_cpu(monkeypatch, *flags, onednn=isa)
    assert P.native_bf16("cpu")[0] is native
    assert P.resolve_precision("auto").name == ("bf16" if native else "fp32")
    assert isa in P.resolve_precision("auto").reason


def _drop_probes(monkeypatch):
    monkeypatch.delattr(torch.cpu, "get_capabilities", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    monkeypatch.delattr(torch._C, "_cpu", raising=False)


def test_a_missing_probe_is_unknown_never_false(monkeypatch):
    _drop_probes(monkeypatch)
    features = P.probe_cpu_features()
    assert features.amx is None and features.avx512_bf16 is None
    assert "none of the known CPU feature probes" in features.source
    monkeypatch.setattr(P, "_cpu_features", P.probe_cpu_features)
    monkeypatch.setattr(P, "onednn_isa", lambda: None)
    native, why = P.native_bf16("cpu")
    assert not native and "unknown" in why and "neither" not in why
    assert "unknown" in P.resolve_precision("auto").reason


def test_a_failing_probe_is_unknown_and_says_why(monkeypatch):
    _drop_probes(monkeypatch)

    def broken():
        raise RuntimeError("cpuinfo failed to initialize")

    monkeypatch.setattr(torch.cpu, "get_capabilities", broken, raising=False)
    features = P.probe_cpu_features()
    assert features.amx is None and "cpuinfo failed to initialize" in features.source


def test_the_installed_torch_has_a_cpu_feature_probe():
    """Fails when torch renames its probes again (the flags would otherwise be unknown)."""
    features = P.probe_cpu_features()
    assert features.amx is not None and features.avx512_bf16 is not None, features.source


def test_the_probe_agrees_with_the_kernels_cpu_flags():
    """/proc/cpuinfo (the kernel's view of CPUID) names the same features as torch's probe."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(line for line in f if line.startswith("flags")).split()
    except (OSError, StopIteration):
        pytest.skip("no /proc/cpuinfo flags on this system")
    features = P.probe_cpu_features()
    assert features.amx == ("amx_bf16" in flags or "amx_tile" in flags)
    assert features.avx512_bf16 == ("avx512_bf16" in flags)


def test_fp16_and_unknown_names_are_refused_on_cpu():
    with pytest.raises(ValueError, match="CUDA"):
        P.resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="choose from"):
        P.resolve_precision("half")


def test_memory_format_auto_follows_the_resolved_precision():
    assert use_channels_last("auto", "bf16") and use_channels_last("auto", "fp16")
    assert not use_channels_last("auto", "fp32")
    assert use_channels_last("channels_last", "fp32")
    assert not use_channels_last("contiguous", "bf16")


def uncapped_environ() -> dict[str, str]:
    """os.environ without the oneDNN ISA cap (tests/conftest.py sets one for the suite)."""
    return {
        k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
    }


def _onednn_isa(env: dict) -> tuple[str, bool]:
    """(oneDNN's own ISA line, our native_bf16) in a fresh process with `env`; onednn_isa()
    there reads the same line oneDNN prints."""
    script = (
        "import torch\n"
        "from detection.utils.precision import native_bf16, onednn_isa\n"
        "print('IN-PROCESS', onednn_isa(), flush=True)\n"
        "x = torch.randn(2, 32, 32, 32).to(memory_format=torch.channels_last)\n"
        "conv = torch.nn.Conv2d(32, 32, 3).to(memory_format=torch.channels_last)\n"
        "conv(x)\n"
        "print('OURS', native_bf16('cpu')[0], flush=True)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**uncapped_environ(), **env, "ONEDNN_VERBOSE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    isa = re.search(r"onednn_verbose.*,isa:(.*)", proc.stdout)
    if isa is None:
        pytest.skip("this torch's oneDNN printed no ISA line with ONEDNN_VERBOSE=1")
    ours = re.search(r"OURS (True|False)", proc.stdout).group(1) == "True"
    in_process = re.search(r"IN-PROCESS (.*)", proc.stdout).group(1)
    assert in_process == isa.group(1).strip(), "onednn_isa() reads another ISA than oneDNN prints"
    return isa.group(1), ours


@pytest.mark.parametrize("cap", [None, CAP])
def test_native_bf16_agrees_with_the_isa_onednn_uses(cap):
    """What oneDNN itself reports (ONEDNN_VERBOSE): bf16 native iff its ISA has bfloat16 or
    AMX; under the cap it never has, on any machine."""
    env = {"ONEDNN_MAX_CPU_ISA": cap} if cap else {}
    isa, ours = _onednn_isa(env)
    onednn_native = "bfloat16" in isa or "AMX" in isa
    assert ours == onednn_native, (isa, ours)
    if cap:
        assert not ours


def test_training_under_the_cap_runs_fp32_and_says_so(tiny_config, monkeypatch):
    """No `auto` may be slower than fp32: under the ISA cap a few iterations of a small model
    run in fp32 (contiguous), and metrics.jsonl records it."""
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", CAP)
    path, out = tiny_config
    cfg = load_config(path, ["solver.max_iter=2", "solver.amp=auto"])
    lines = []
    trainer = Trainer(cfg, log=lines.append)
    assert trainer.precision.name == "fp32" and not trainer.model.channels_last
    assert any(line.startswith("training precision: fp32 (auto;") for line in lines), lines
    trainer.train()
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if "total_loss" in r]
    assert train_records and all(r["precision"] == "fp32" for r in train_records)


def test_training_auto_takes_bf16_where_native(tiny_config, amx_cpu):
    path, _ = tiny_config
    trainer = Trainer(load_config(path, ["solver.amp=auto"]), log=lambda m: None)
    assert trainer.precision.name == "bf16" and trainer.model.channels_last
    convs = [m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)


def test_fp16_training_on_cpu_is_a_config_error(tiny_config):
    path, _ = tiny_config
    with pytest.raises(ConfigError, match="solver.amp=fp16"):
        Trainer(load_config(path, ["solver.amp=fp16"]), log=lambda m: None)


def test_the_onednn_probe_leaves_the_random_generator_alone():
    """A seeded run must not depend on when the precision was first resolved."""
    P.onednn_isa.cache_clear()
    torch.manual_seed(0)
    state = torch.get_rng_state()
    P.onednn_isa()
    assert torch.equal(torch.get_rng_state(), state)
