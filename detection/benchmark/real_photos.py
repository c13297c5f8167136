"""The real-photo learning benchmark (docs/real-photos.md).

torchvision's Faster R-CNN, trained by the project's anchor script (../shared/anchors; see
anchor.py), against resdet's recipes (an ablation set, configs/real/benchmark.yaml) on one
real dataset, in one sitting on one machine, seed by seed: AP, AP50, AP75, APs/m/l, per-class
AP and training seconds, per seed and as means and ranges over the seeds (real_report.py).

Each recipe runs with the anchor's budget two ways: equal iterations (ITERS x 4 images, the
anchor's schedule) and equal time (the anchor's measured training seconds of the same seed as
`solver.max_seconds`: resdet's schedule laid out over the iterations that fit, see
engine/budget.py). Training seconds are the training loop's: the anchor times its loop (its
images are decoded before the clock starts); resdet's are the sum of metrics.jsonl's
`time_per_iter` over the iterations (loading included). Model building and the final
evaluation are outside both.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from ..analysis.ablation import AblationSet, run_ablation
from ..config import ConfigError
from ..data.split import split_coco, val_indices
from ..utils.io import write_json
from ..utils.metrics import read_metrics
from .anchor import ANCHOR_NAME, run_anchor
from .real_runs import BUDGETS, RunResult, Split


def voc_split(
    voc_root: str | Path,
    out_dir: str | Path,
    every: int = 5,
    sets: Sequence[str] | None = None,
) -> Split:
    """Convert a Pascal VOC folder (annotations/ + images/, or Annotations/ + JPEGImages/) to
    COCO train / val json under out_dir (the images are not copied). `sets` = (train, val)
    names the ImageSets/Main lists to use; by default a folder with ImageSets/Main/trainval.txt
    and test.txt is split by them (train on trainval, report on test: BCCD's agreed split),
    any other every `every`-th image to val over the annotation files sorted by name (the
    raccoon set's agreed split: every=5)."""
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
    lists = root / "ImageSets" / "Main"
    if sets is None and all((lists / f"{n}.txt").is_file() for n in ("trainval", "test")):
        sets = ("trainval", "test")
    if sets is not None:
        files = [lists / f"{name}.txt" for name in sets]
        for file in files:
            if not file.is_file():
                raise FileNotFoundError(f"{root}: no image set {file}")
        train = convert_voc(root, images_subdir=img, annotations_subdir=ann, image_set=files[0])
        names = [c["name"] for c in sorted(train["categories"], key=lambda c: c["id"])]
        val = convert_voc(
            root, images_subdir=img, annotations_subdir=ann, image_set=files[1], categories=names
        )
        how = f"ImageSets/Main {sets[0]} / {sets[1]}"
    else:
        data = convert_voc(root, images_subdir=img, annotations_subdir=ann)
        train, val = split_coco(data, val_indices(len(data["images"]), every=every))
        how = f"every {every}th image to val"
    out = Path(out_dir)
    write_json(out / "train.json", train)
    write_json(out / "val.json", val)
    counts = [f"{len(d['images'])} images, {len(d['annotations'])} boxes" for d in (train, val)]
    description = f"{root.name}: {how} (train {counts[0]}; val {counts[1]})"
    return Split(out / "train.json", out / "val.json", (root / img).resolve(), description)


def budget_overrides(iters: int) -> list[str]:
    """The anchor's schedule for `iters` iterations: x0.1 at 80% (its warmup is fixed at 100)."""
    return [f"solver.max_iter={iters}", f"solver.steps=[{int(0.8 * iters)}]"]


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


def _iterations(output_dir: str | Path) -> int | None:
    """The last training record's iteration."""
    done = [r["iteration"] for r in read_metrics(output_dir, missing_ok=True) if "lr" in r]
    return int(done[-1]) if done else None


def run_recipes(
    ablation: AblationSet,
    split: Split,
    seed: int,
    *,
    budget: str = "iterations",
    overrides: Sequence[str] = (),
    device: str = "cpu",
    reuse: bool = False,
    log: Callable[[str], None] = print,
) -> list[RunResult]:
    """Train and evaluate every member of the set on the split with this seed, each in
    <set output_dir>/seed<k>/<member> (equal iterations) or seed<k>/time/<member> (equal
    time: `overrides` hold its solver.max_seconds)."""
    for text in overrides:
        if text.split("=", 1)[0].strip() in ("seed", "output_dir"):
            raise ConfigError(f"override {text!r}: the benchmark sets seed and output_dir itself")
    out = ablation.output_dir / f"seed{seed}"
    seeded = AblationSet(
        path=ablation.path,
        name=ablation.name,
        members=ablation.members,
        baseline=ablation.baseline,
        overrides=[*ablation.overrides, *split.overrides(), f"seed={seed}"],
        output_dir=out / "time" if budget == "time" else out,
        description=ablation.description,
    )
    results = []
    for r in run_ablation(seeded, overrides, device=device, reuse=reuse, log=log):
        result = RunResult(r.member, seed, budget, status=r.status, output=str(r.output_dir))
        if r.metrics_file is not None:
            result.set_metrics(json.loads(Path(r.metrics_file).read_text())["bbox"])
        result.train_seconds = training_seconds(r.output_dir)
        result.iterations = _iterations(r.output_dir)
        results.append(result)
    return results


def run_benchmark(
    ablation: AblationSet,
    split: Split,
    seeds: Sequence[int],
    *,
    anchor: Path | None,
    iters: int,
    budgets: Sequence[str] = BUDGETS,
    seconds: float | None = None,
    overrides: Sequence[str] = (),
    device: str = "cpu",
    reuse: bool = False,
    log: Callable[[str], None] = print,
) -> list[RunResult]:
    """For each seed: the anchor (unless None), then every member of the set at equal time
    (the anchor's training seconds of that seed, or `seconds` when given) and at equal
    iterations (`iters`), as `budgets` asks; seed by seed, so that an interrupted benchmark has
    whole seeds to show (rerun with `reuse`)."""
    unknown = set(budgets) - set(BUDGETS)
    if unknown or not budgets:
        raise ValueError(f"budgets must be among {BUDGETS}, got {list(budgets)}")
    if "time" in budgets and anchor is None and seconds is None:
        raise ValueError("equal time needs the anchor's time: run the anchor or give seconds")
    schedule = [*overrides, *budget_overrides(iters)]
    results: list[RunResult] = []
    for seed in seeds:
        budget_s = seconds
        if anchor is not None:
            out = ablation.output_dir / f"seed{seed}" / ANCHOR_NAME
            ran = run_anchor(anchor, split, iters, out, seed, reuse=reuse, log=log)
            results.append(ran)
            budget_s = budget_s if budget_s is not None else ran.train_seconds
        for budget in (b for b in BUDGETS if b in budgets):
            if budget == "time" and budget_s is None:
                log(f"seed {seed}: the anchor failed, so there is no time to match")
                results += [
                    RunResult(m.name, seed, "time", status="skipped: no anchor time")
                    for m in ablation.members
                ]
                continue
            extra = [f"solver.max_seconds={budget_s:.1f}"] if budget == "time" else []
            results += run_recipes(
                ablation,
                split,
                seed,
                budget=budget,
                overrides=[*schedule, *extra],
                device=device,
                reuse=reuse,
                log=log,
            )
    return results
