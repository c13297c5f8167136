"""Crash safety: SIGKILL at random points of checkpoint writes, a full disk, kill and resume."""

import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import ROOT, read_jsonl, run_tool

from detection.utils.checkpoint import Checkpointer

# A zygote: a fresh interpreter that imports torch once, single-threaded, then forks one writer
# per "go" line. Each writer saves checkpoints back to back, continuing from the last one, until
# the test SIGKILLs it; the zygote reaps it and says so. Forking from here rather than from
# pytest (which has threads: a lock held at fork time can hang the child) starts a writer in
# milliseconds instead of the seconds an interpreter importing torch takes.
ZYGOTE = """
import os, sys, torch
from detection.utils.checkpoint import Checkpointer
out = sys.argv[1]
for _ in sys.stdin:
    pid = os.fork()
    if pid == 0:
        ck = Checkpointer(out, keep=2)
        last = ck.last()
        it = 0 if last is None else torch.load(last, weights_only=True)["iteration"] + 1
        print("ready", os.getpid(), flush=True)
        while True:
            w = torch.full((1_000_000,), float(it))
            ck.save(f"model_{it:07d}.pth", {"iteration": it, "w": w})
            it += 1
    _, status = os.waitpid(pid, 0)
    print("reaped", os.WTERMSIG(status) if os.WIFSIGNALED(status) else -1, flush=True)
"""


def load_checked(path: Path) -> int:
    """Load a checkpoint as training would and check it is whole: returns its iteration."""
    ckpt = torch.load(path, weights_only=True)
    it = ckpt["iteration"]
    assert path.name == f"model_{it:07d}.pth"
    assert torch.equal(ckpt["w"], torch.full((1_000_000,), float(it))), f"{path} is torn"
    return it


@pytest.mark.slow
def test_sigkill_during_checkpoint_writes_never_leaves_a_torn_checkpoint(tmp_path):
    rng = random.Random(0)
    out = tmp_path / "out"
    zygote = subprocess.Popen(
        [sys.executable, "-c", ZYGOTE, str(out)],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    previous, mid_write = -1, 0
    try:
        for _ in range(20):
            previous, mid_write = kill_one_writer(zygote, out, rng, previous, mid_write)
    finally:
        zygote.kill()
        zygote.communicate()
    assert previous > 0
    # the test is only worth something if kills landed inside writes (it does: ~half do)
    assert mid_write >= 3, f"only {mid_write} of 20 kills landed inside a write"
    # a later save clears what killed writers left behind
    Checkpointer(out).save("model_9999999.pth", {"iteration": 9999999, "w": torch.zeros(1)})
    assert not list(out.glob(".*.tmp"))


def kill_one_writer(zygote, out: Path, rng, previous: int, mid_write: int) -> tuple[int, int]:
    """Start a writer, SIGKILL it at a random point, check what it left; returns the updated
    (last complete iteration, kills that landed inside a write)."""
    zygote.stdin.write("go\n")
    zygote.stdin.flush()
    word, pid = zygote.stdout.readline().split()
    assert word == "ready"
    time.sleep(rng.uniform(0.0, 0.25))  # a random point of a save, pointer update or prune
    os.kill(int(pid), signal.SIGKILL)
    assert zygote.stdout.readline().split() == ["reaped", str(int(signal.SIGKILL))]
    mid_write += any(out.glob(".model_*.tmp"))  # killed inside torch.save or fsync
    last = Checkpointer(out).last()
    if last is None:
        assert previous == -1, "the pointer vanished after a checkpoint was complete"
        return previous, mid_write
    it = load_checked(last)
    assert it >= previous, "the pointer went backwards"
    # every checkpoint file in the folder is complete; the pruner keeps 2 (+1 mid-prune)
    periodic = sorted(out.glob("model_*.pth"))
    assert len(periodic) <= 3 and last in periodic
    for path in periodic:
        load_checked(path)
    return it, mid_write


def _limit_file_size(limit: int):
    def apply() -> None:
        # CPython ignores SIGXFSZ, so an oversized write fails with EFBIG like a full quota
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def _train(config, out, *overrides, **kwargs):
    return run_tool(
        [ROOT / "tools/train.py", "--config", config, "--device", "cpu", "--output-dir", out]
        + list(overrides),
        **kwargs,
    )


def _assert_failed_cleanly(r, out: Path, iteration: int, reason: str) -> None:
    assert r.returncode == 2, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    assert f"could not write checkpoint {out}" in r.stderr and reason in r.stderr
    assert "still names the last complete checkpoint" in r.stderr
    last = Checkpointer(out).last()
    assert torch.load(last, weights_only=True)["iteration"] == iteration
    assert not list(out.glob(".*.tmp")), "a failed write left its temporary file"


def test_write_limit_fails_clearly_and_keeps_last_checkpoint(tiny_config):
    path, out = tiny_config
    _train(path, out, "solver.max_iter=2")
    size = (out / "model_final.pth").stat().st_size
    # resume, with files capped below a checkpoint's size (a quota, or a disk filling up)
    r = _train(
        path,
        out,
        "--resume",
        "solver.max_iter=4",
        check=False,
        preexec_fn=_limit_file_size(size // 2),
    )
    _assert_failed_cleanly(r, out, 2, "File too large")


def _mount_tmpfs(where: Path, size_mb: int) -> str | None:
    """Mount a tmpfs of `size_mb` MiB at `where`: None, or why it could not be mounted."""
    where.mkdir()
    try:
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(where)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{type(e).__name__}: {e}"
    if r.returncode == 0:
        return None
    return f"mount exited with {r.returncode}: {(r.stderr or r.stdout).strip()[-300:]}"


def test_full_disk_fails_clearly_and_keeps_last_checkpoint(tiny_config, tmp_path):
    path, _ = tiny_config
    why = _mount_tmpfs(tmp_path / "can-mount", 1)  # before spending a training run on it
    if why is not None:
        pytest.skip(
            f"full disk not simulated: cannot mount a small tmpfs ({why}); it needs root or "
            "CAP_SYS_ADMIN. test_write_limit_fails_clearly_and_keeps_last_checkpoint covers "
            "the same code path with a file-size limit"
        )
    subprocess.run(["umount", str(tmp_path / "can-mount")], check=True)
    probe = tmp_path / "probe"
    _train(path, probe, "solver.max_iter=1")
    size_mb = (probe / "model_final.pth").stat().st_size / 2**20
    disk = tmp_path / "disk"
    why = _mount_tmpfs(disk, int(size_mb * 1.5) + 1)
    assert why is None, f"a 1 MiB tmpfs mounted, a {int(size_mb * 1.5) + 1} MiB one not: {why}"
    try:
        out = disk / "out"
        # room for one checkpoint: the one at iteration 2 fits, the final one does not
        r = _train(path, out, "solver.max_iter=4", "solver.checkpoint_period=2", check=False)
        _assert_failed_cleanly(r, out, 2, "MiB free there")
    finally:
        subprocess.run(["umount", str(disk)], check=True)


@pytest.mark.slow
def test_sigkill_and_resume_gives_identical_weights(tiny_config, tmp_path):
    path, out = tiny_config
    common = [
        ROOT / "tools/train.py",
        "--config",
        path,
        "--device",
        "cpu",
        "solver.max_iter=10",
        "solver.log_period=1",
    ]
    run_tool([*common, "--output-dir", tmp_path / "straight"])
    # the same run, killed after its first checkpoint, then resumed
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, *map(str, common), "--output-dir", str(out)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not (out / "last_checkpoint").exists():
        assert proc.poll() is None, "the run ended before its first checkpoint"
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = (out / "last_checkpoint").read_text().strip()
    assert killed_at != "model_final.pth", "killed too late to test anything"
    r = run_tool([*common, "--output-dir", out, "--resume"])
    assert "resumed from" in r.stderr
    a = torch.load(tmp_path / "straight/model_final.pth", weights_only=True)
    b = torch.load(out / "model_final.pth", weights_only=True)
    assert a["iteration"] == b["iteration"] == 10
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    records = read_jsonl(out / "metrics.jsonl")
    assert [r["iteration"] for r in records] == list(range(1, 11))
