"""Running commands as a user of the installed package would (tests/cli)."""

from __future__ import annotations

import os
import subprocess

# every schedule and input size cut to seconds: 2 iterations of 2 images at 96-128 px
SMALL = [
    "solver.max_iter=2",
    "solver.steps=[1]",
    "solver.warmup_iters=1",
    "solver.ims_per_batch=2",
    "solver.checkpoint_period=2",
    "input.min_size_train=[96]",
    "input.max_size_train=128",
    "input.min_size_test=96",
    "input.max_size_test=128",
    "data.num_workers=0",
]


def run(args, cwd, env, timeout=900) -> subprocess.CompletedProcess:
    r = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    return r


def check(r: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    assert r.returncode == 0, (
        f"{what} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    )
    return r


def user_env(installed: dict, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RESDET_OVERRIDES")}
    env["PATH"] = f"{installed['bin']}{os.pathsep}{env.get('PATH', '')}"
    env["OMP_NUM_THREADS"] = "1"
    return {**env, **extra}
