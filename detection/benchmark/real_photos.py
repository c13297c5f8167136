"""The real-photo learning benchmark (README "Real photos").

torchvision's Faster R-CNN, trained by the project's anchor script (../shared/anchors), against
resdet's recipes (an ablation set, configs/real/benchmark.yaml) with the same budget on one small
real dataset, in one sitting on one machine: AP, AP50 and training seconds side by side, per seed
and as means over the seeds.

Training seconds are the training loop's: the anchor times its loop (its images are decoded
before the clock starts); resdet's are the sum of metrics.jsonl's `time_per_iter` over the
iterations (loader waits included). Model building and the final evaluation are outside both.

The anchor fixes its seeds (torch 0, random 0). Seed k > 0 runs it with both shifted by k
(`torch.manual_seed(0 + k)`, `random.seed(0 + k)`), the script itself unchanged.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..analysis.ablation import AblationSet, run_ablation
from ..config import ConfigError
from ..data.split import split_coco, val_indices
from ..utils.io import write_json, write_text
from ..utils.metrics import read_metrics
from ..utils.tables import markdown_table

ANCHOR_NAME = "torchvision"

# seed k > 0: the anchor run with its two fixed seeds shifted by k, the script unchanged
_SEEDED_ANCHOR = (
    "import random, runpy, sys, torch\n"
    "k = int(sys.argv[1]); _t, _r = torch.manual_seed, random.seed\n"
    "torch.manual_seed = lambda s: _t(s + k)\n"
    "random.seed = lambda s=None: _r(None if s is None else s + k)\n"
    "sys.argv = sys.argv[2:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


@dataclass
class Split:
    """The benchmark's data: COCO train / val files and their image folder."""

    train: Path
    val: Path
    images: Path

    def overrides(self) -> list[str]:
        """Config overrides that point a detection config at this split."""
        return [
            f"data.train.annotations={self.train}",
            f"data.train.images={self.images}",
            f"data.test.annotations={self.val}",
            f"data.test.images={self.images}",
        ]


@dataclass
class RunResult:
    """One trained model: who (anchor or set member), its seed, metrics, training seconds."""

    name: str
    seed: int
    ap: float | None = None
    ap50: float | None = None
    train_seconds: float | None = None
    status: str = "ok"
    output: str = ""


def voc_split(voc_root: str | Path, out_dir: str | Path, every: int = 5) -> Split:
    """Convert a Pascal VOC folder (annotations/ + images/, or Annotations/ + JPEGImages/) to
    COCO json and split it by image, every `every`-th to val (the raccoon set's agreed split:
    every=5 over the annotation files sorted by name); the images are not copied."""
    from ..data.voc import convert_voc

    root = Path(voc_root)
    for ann, img in (("annotations", "images"), ("Annotations", "JPEGImages")):
        if (root / ann).is_dir() and (root / img).is_dir():
            break
    else:
        raise FileNotFoundError(
            f"{root}: no VOC layout (annotations/ + images/ or Annotations/ + JPEGImages/); "
            "give COCO files with --train, --val and --images instead"
        )
    data = convert_voc(root, images_subdir=img, annotations_subdir=ann)
    train, val = split_coco(data, val_indices(len(data["images"]), every=every))
    out = Path(out_dir)
    write_json(out / "train.json", train)
    write_json(out / "val.json", val)
    return Split(out / "train.json", out / "val.json", (root / img).resolve())


def budget_overrides(iters: int) -> list[str]:
    """The anchor's schedule for `iters` iterations: x0.1 at 80% (its warmup is fixed at 100)."""
    return [f"solver.max_iter={iters}", f"solver.steps=[{int(0.8 * iters)}]"]


def anchor_command(anchor: Path, split: Split, iters: int, out_json: Path, seed: int) -> list[str]:
    """The anchor's command line (seed 0: the script as it is; k > 0: seeds shifted by k)."""
    args = [str(split.train), str(split.val), str(split.images), str(iters), str(out_json)]
    if seed == 0:
        return [sys.executable, str(anchor), *args]
    return [sys.executable, "-c", _SEEDED_ANCHOR, str(seed), str(anchor), *args]


def run_anchor(
    anchor: Path,
    split: Split,
    iters: int,
    out_dir: Path,
    seed: int,
    *,
    reuse: bool = False,
    log: Callable[[str], None] = print,
) -> RunResult:
    """Train and evaluate torchvision's detector with the anchor script (its output goes to
    <out_dir>/anchor.log); with `reuse`, an earlier result of the same budget is read instead."""
    out_json = out_dir / "result.json"
    if reuse and out_json.is_file():
        done = json.loads(out_json.read_text())
        if done.get("iters") == iters:
            log(f"{ANCHOR_NAME} seed {seed}: reusing {out_json}")
            return _anchor_result(done, seed, out_json)
    out_dir.mkdir(parents=True, exist_ok=True)
    command = anchor_command(anchor, split, iters, out_json, seed)
    log(f"{ANCHOR_NAME} seed {seed}: {' '.join(command[:2])} ... (log: {out_dir / 'anchor.log'})")
    with open(out_dir / "anchor.log", "w") as f:
        code = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT).returncode
    if code != 0 or not out_json.is_file():
        status = f"failed: exit {code}, see {out_dir / 'anchor.log'}"
        return RunResult(ANCHOR_NAME, seed, status=status, output=str(out_dir))
    return _anchor_result(json.loads(out_json.read_text()), seed, out_json)


def _anchor_result(done: dict[str, Any], seed: int, source: Path) -> RunResult:
    return RunResult(
        ANCHOR_NAME, seed, done["AP"], done["AP50"], done["train_seconds"], output=str(source)
    )


def training_seconds(output_dir: str | Path) -> float | None:
    """Seconds of a resdet run's training loop: metrics.jsonl's time_per_iter times the
    iterations each record covers (a resumed run's file is truncated at its checkpoint, so the
    records' iterations increase)."""
    total, previous, seen = 0.0, 0, False
    for record in read_metrics(output_dir, missing_ok=True):
        if "time_per_iter" in record:
            it = int(record["iteration"])
            total += record["time_per_iter"] * (it - previous)
            previous, seen = it, True
    return total if seen else None


def run_recipes(
    ablation: AblationSet,
    split: Split,
    seed: int,
    *,
    overrides: Sequence[str] = (),
    device: str = "cpu",
    reuse: bool = False,
    log: Callable[[str], None] = print,
) -> list[RunResult]:
    """Train and evaluate every member of the set on the split with this seed, each in
    <set output_dir>/seed<k>/<member>."""
    for text in overrides:
        if text.split("=", 1)[0].strip() in ("seed", "output_dir"):
            raise ConfigError(f"override {text!r}: the benchmark sets seed and output_dir itself")
    seeded = AblationSet(
        path=ablation.path,
        name=ablation.name,
        members=ablation.members,
        baseline=ablation.baseline,
        overrides=[*ablation.overrides, *split.overrides(), f"seed={seed}"],
        output_dir=ablation.output_dir / f"seed{seed}",
        description=ablation.description,
    )
    results = run_ablation(seeded, overrides, device=device, reuse=reuse, log=log)
    return [
        RunResult(
            r.member,
            seed,
            r.ap,
            r.ap50,
            training_seconds(r.output_dir),
            r.status,
            str(r.output_dir),
        )
        for r in results
    ]


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.fmean(known) if known else None


def _spread(values: Sequence[float | None]) -> float | None:
    """Half the range of the seeds' values (None with fewer than two)."""
    known = [v for v in values if v is not None]
    return (max(known) - min(known)) / 2 if len(known) > 1 else None


def summary_rows(results: Sequence[RunResult]) -> list[dict[str, Any]]:
    """One row per model (the anchor first, then the members in order): the means over the
    seeds that finished, half the seeds' range, and training time relative to the anchor's."""
    names = list(dict.fromkeys(r.name for r in results))
    names.sort(key=lambda n: n != ANCHOR_NAME)
    rows = []
    for name in names:
        runs = [r for r in results if r.name == name and r.status == "ok"]
        failed = [r for r in results if r.name == name and r.status != "ok"]
        rows.append(
            {
                "name": name,
                "seeds": sorted(r.seed for r in runs),
                "failed_seeds": sorted(r.seed for r in failed),
                "ap": _mean([r.ap for r in runs]),
                "ap50": _mean([r.ap50 for r in runs]),
                "ap_spread": _spread([r.ap for r in runs]),
                "ap50_spread": _spread([r.ap50 for r in runs]),
                "train_seconds": _mean([r.train_seconds for r in runs]),
            }
        )
    anchor = next((r for r in rows if r["name"] == ANCHOR_NAME), None)
    for row in rows:
        ref = anchor["train_seconds"] if anchor else None
        own = row["train_seconds"]
        row["time_vs_anchor"] = own / ref if ref and own is not None else None
        row["delta_ap50"] = None
        if anchor and anchor["ap50"] is not None and row["ap50"] is not None:
            row["delta_ap50"] = row["ap50"] - anchor["ap50"]
    return rows


def _fmt(value: float | None, spread: float | None = None, fmt: str = ".1f") -> str:
    if value is None:
        return "n/a"
    text = format(value, fmt)
    return text if spread is None else f"{text} ± {format(spread, fmt)}"


def format_markdown(
    rows: Sequence[dict[str, Any]], results: Sequence[RunResult], heading: str
) -> str:
    """The summary table, then every run."""
    header = ["model", "seeds", "AP", "AP50", "Δ AP50", "train s", "time vs torchvision"]
    cells = []
    for row in rows:
        delta = row["delta_ap50"]
        cells.append(
            [
                row["name"],
                ",".join(map(str, row["seeds"])) or "none",
                _fmt(row["ap"], row["ap_spread"]),
                _fmt(row["ap50"], row["ap50_spread"]),
                "anchor" if row["name"] == ANCHOR_NAME else _fmt(delta, None, "+.1f"),
                _fmt(row["train_seconds"], None, ".0f"),
                _fmt(row["time_vs_anchor"], None, ".2f") + "x",
            ]
        )
    runs = [
        [r.name, r.seed, _fmt(r.ap), _fmt(r.ap50), _fmt(r.train_seconds, None, ".0f"), r.status]
        for r in results
    ]
    return "\n".join(
        [
            f"**{heading}**",
            "",
            markdown_table(header, cells),
            "",
            "Means over the seeds that finished; ± half their range. train s: the training loop "
            "(model building, image decoding before the anchor's clock, evaluation excluded).",
            "",
            markdown_table(["model", "seed", "AP", "AP50", "train s", "status"], runs),
        ]
    )


def write_report(
    out_dir: Path, rows: Sequence[dict[str, Any]], results: Sequence[RunResult], heading: str
) -> list[Path]:
    """<out_dir>/benchmark.md and benchmark.json; returns their paths."""
    md = write_text(out_dir / "benchmark.md", format_markdown(rows, results, heading) + "\n")
    record = {"heading": heading, "summary": list(rows), "runs": [asdict(r) for r in results]}
    return [md, write_json(out_dir / "benchmark.json", record)]


def run_benchmark(
    ablation: AblationSet,
    split: Split,
    seeds: Sequence[int],
    *,
    anchor: Path | None,
    iters: int,
    overrides: Sequence[str] = (),
    device: str = "cpu",
    reuse: bool = False,
    log: Callable[[str], None] = print,
) -> list[RunResult]:
    """For each seed: the anchor (unless None), then every member of the set; seed by seed,
    so that an interrupted benchmark has whole seeds to show (rerun with `reuse`)."""
    results = []
    for seed in seeds:
        if anchor is not None:
            out = ablation.output_dir / f"seed{seed}" / ANCHOR_NAME
            results.append(run_anchor(anchor, split, iters, out, seed, reuse=reuse, log=log))
        results += run_recipes(
            ablation, split, seed, overrides=overrides, device=device, reuse=reuse, log=log
        )
    return results
