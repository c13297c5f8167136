"""Soak: 600 training iterations of a tiny config on shapes; resident memory (the trainer and
its loader worker) may not grow by more than 10% after warm-up."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ROOT


def tree_rss_kib(pid: int) -> int:
    """Resident memory of a process and its children (the data-loader workers). A process that
    exits while it is read (a zombie has no VmRSS line, a reaped one no /proc entry) counts 0."""
    total = 0
    pids = [pid]
    while pids:
        p = pids.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        rss = [ln.split()[1] for ln in status.splitlines() if ln.startswith("VmRSS:")]
        total += int(rss[0]) if rss else 0
        pids += [int(c) for c in children]
    return total


def iterations_done(metrics: Path) -> int:
    if not metrics.is_file():
        return 0
    lines = metrics.read_text().splitlines()
    return 50 * len(lines)  # one record per log_period=50


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_six_hundred_iterations_without_memory_growth(tiny_config):
    path, out = tiny_config
    proc = subprocess.Popen(
        [
            sys.executable,
            ROOT / "tools/train.py",
            "--config",
            path,
            "--device",
            "cpu",
            "solver.max_iter=600",
            "solver.steps=[480]",
            "solver.log_period=50",
            "solver.checkpoint_period=150",
            "data.num_workers=1",
            # small inputs and a light box head (4x faster than res5 here): the loop, loader,
            # logging and checkpoints are what is soaked
            "input.min_size_train=[64]",
            "input.max_size_train=96",
            "model.roi_heads.box_head=2fc",
            "model.roi_heads.fc_dim=64",
        ],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    samples = []  # (iteration, rss)
    try:
        while proc.poll() is None:
            samples.append((iterations_done(out / "metrics.jsonl"), tree_rss_kib(proc.pid)))
            time.sleep(0.5)
    finally:
        proc.kill()
        stderr = proc.communicate()[1]
    assert proc.returncode == 0, stderr[-3000:]
    warm = [rss for it, rss in samples if 150 <= it < 250 and rss]
    late = [rss for it, rss in samples if it >= 500 and rss]
    assert warm and late, samples
    growth = max(late) / max(warm) - 1
    print(
        f"soak: resident {max(warm) / 1024:.0f} MiB after 150-250 iterations, "
        f"{max(late) / 1024:.0f} MiB after 500-600: {100 * growth:+.1f}%"
    )
    assert growth < 0.10
