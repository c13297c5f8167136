"""Helpers shared by test folders (importable: tests/ is on pytest's pythonpath)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_tool(args, *, env_extra=None, check=True, **kwargs):
    """Run `python ARGS...` in the repository root with one thread; fail loudly on error."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    r = subprocess.run(
        [sys.executable, *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        **kwargs,
    )
    if check and r.returncode != 0:
        raise AssertionError(f"{args} failed ({r.returncode}):\n{r.stdout}\n{r.stderr[-4000:]}")
    return r


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a torchrun or mp.spawn rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args) -> list:
    """`python -m torch.distributed.run` with 2 processes on a free local port, then `args`
    (run_tool's arguments)."""
    return ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
            "127.0.0.1", "--master_port", free_port(), *args]  # fmt: skip


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]
