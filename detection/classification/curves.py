"""Training and validation error curves of classification runs, the paper's Fig. 4 / Fig. 6:
thin lines the training error, bold the validation error, one colour per experiment.

Runs whose folders are named NAME_s<k> (NAME_s0, NAME_s1, ...) are seeds of one experiment NAME:
each seed's training error is drawn faintly, their mean (at the iterations all of them logged)
over it, and the summary gives the mean and range of their final errors.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean

from ..utils.figures import pyplot, save_figure
from ..utils.metrics import read_metrics


@dataclass
class RunCurves:
    """A run's training records (iteration, epoch, train_err) and validation records
    (iteration, val/top1_err), read from its metrics.jsonl."""

    name: str
    train: list[dict]
    val: list[dict]

    def final_train_error(self) -> float:
        """Mean training top-1 error (%) over the last epoch's records (the last record alone
        covers only solver.log_period iterations)."""
        last_epoch = self.train[-1]["epoch"] - 1.0
        tail = [r for r in self.train if r["epoch"] > last_epoch] or self.train[-1:]
        return sum(r["train_err"] for r in tail) / len(tail)

    def final_val_error(self) -> float | None:
        """The last validation top-1 error (%), None when the run never validated."""
        return self.val[-1]["val/top1_err"] if self.val else None


def read_run(run_dir: str | os.PathLike) -> RunCurves:
    """The curves of a classification run folder (its metrics.jsonl); torn lines are skipped."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no metrics.jsonl in {run_dir}: is it a classification run?")
    records = read_metrics(path)
    train = [r for r in records if "train_err" in r]
    val = [r for r in records if "train_err" not in r and "val/top1_err" in r]
    if not train:
        raise ValueError(f"{path} has no training records (train_err): not a classifier run?")
    return RunCurves(Path(run_dir).name, train, val)


def group_seeds(runs: list[RunCurves]) -> dict[str, list[RunCurves]]:
    """{experiment: its runs}, in first-seen order: NAME_s<k> folders are seeds of NAME, any
    other folder an experiment of its own."""
    groups: dict[str, list[RunCurves]] = {}
    for run in runs:
        match = re.fullmatch(r"(.+)_s\d+", run.name)
        groups.setdefault(match.group(1) if match else run.name, []).append(run)
    return groups


def mean_curve(runs: list[RunCurves], key: str) -> tuple[list[int], list[float]]:
    """(iterations, mean of `key`) over the iterations every run recorded ("train_err" from the
    training records, "val/top1_err" from the validation records)."""
    series = [
        {r["iteration"]: r[key] for r in (run.train if key == "train_err" else run.val)}
        for run in runs
    ]
    common = sorted(set.intersection(*(set(s) for s in series)))
    return common, [fmean(s[i] for s in series) for i in common]


def plot_error_curves(runs: list[RunCurves], output: str | os.PathLike, title: str = "") -> Path:
    """Training (thin) and validation (bold, markers) top-1 error against iterations; seeds of
    one experiment (NAME_s<k>) faint, with their mean drawn over them."""
    plt = pyplot("plotting error curves")
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for i, (name, group) in enumerate(group_seeds(runs).items()):
        color, seeds = f"C{i}", "" if len(group) == 1 else f", mean of {len(group)} seeds"
        if len(group) > 1:
            for run in group:
                ax.plot(
                    [r["iteration"] for r in run.train],
                    [r["train_err"] for r in run.train],
                    color=color,
                    lw=0.6,
                    alpha=0.3,
                )
        final = fmean([r.final_train_error() for r in group])
        ax.plot(
            *mean_curve(group, "train_err"),
            color=color,
            lw=1.2,
            alpha=0.9,
            label=f"{name} train ({final:.1f}%{seeds})",
        )
        if all(run.val for run in group):
            final_val = fmean([r.final_val_error() for r in group])
            ax.plot(
                *mean_curve(group, "val/top1_err"),
                color=color,
                lw=2.5,
                marker="o",
                ms=3,
                label=f"{name} val ({final_val:.1f}%{seeds})",
            )
    ax.set(xlabel="iteration", ylabel="top-1 error (%)", title=title or "training / val error")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, output)


def summary_table(runs: list[RunCurves]) -> str:
    """Final training error (last epoch's mean) and validation error of each run, as text, and
    for seeds of one experiment their mean and range."""
    groups = group_seeds(runs)
    means = {f"{n} (mean of {len(g)})": g for n, g in groups.items() if len(g) > 1}
    width = max(len(name) for name in [*(r.name for r in runs), *means])
    lines = [f"{'run':<{width}}  iterations  train err  val err"]
    for r in runs:
        val = r.final_val_error()
        lines.append(
            f"{r.name:<{width}}  {r.train[-1]['iteration']:>10}  {r.final_train_error():>8.2f}%"
            f"  {'-' if val is None else f'{val:.2f}%':>7}"
        )
    for name, group in means.items():
        train = [r.final_train_error() for r in group]
        vals = [r.final_val_error() for r in group]
        val = "-" if None in vals else f"{fmean(vals):.2f}%"
        lines.append(
            f"{name:<{width}}  {group[0].train[-1]['iteration']:>10}  {fmean(train):>8.2f}%"
            f"  {val:>7}   (train {min(train):.2f}..{max(train):.2f}%)"
        )
    return "\n".join(lines)
