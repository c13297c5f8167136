"""The real-photo benchmark's tables: one row per model and budget (means and ranges over the
seeds that finished), sizes and classes, then every run; benchmark.md and benchmark.json."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..utils.io import write_json, write_text
from ..utils.tables import markdown_table
from .real_runs import BUDGETS, METRIC_KEYS, RunResult

BUDGET_LABELS = {"anchor": "its own", "time": "equal time", "iterations": "equal iterations"}


def _known(values: Sequence[float | None]) -> list[float]:
    return [v for v in values if v is not None]


def _mean(values: Sequence[float | None]) -> float | None:
    known = _known(values)
    return statistics.fmean(known) if known else None


def _range(values: Sequence[float | None]) -> tuple[float, float] | None:
    """(min, max) of the seeds' values (None with fewer than two)."""
    known = _known(values)
    return (min(known), max(known)) if len(known) > 1 else None


def summary_rows(results: Sequence[RunResult]) -> list[dict[str, Any]]:
    """One row per (model, budget): the anchor first, then the members at equal time, then at
    equal iterations. Each metric's mean over the seeds that finished and its range; per-class
    AP means; training seconds and time relative to the anchor's; AP and AP50 relative to the
    anchor's means, and the worst seed's AP relative to the anchor's mean AP."""
    order = {b: i for i, b in enumerate(("anchor", *BUDGETS))}
    keys = list(dict.fromkeys((r.name, r.budget) for r in results))
    keys.sort(key=lambda k: order.get(k[1], len(order)))
    rows = []
    for name, budget in keys:
        mine = [r for r in results if (r.name, r.budget) == (name, budget)]
        runs = [r for r in mine if r.status == "ok"]
        row: dict[str, Any] = {
            "name": name,
            "budget": budget,
            "seeds": sorted(r.seed for r in runs),
            "failed_seeds": sorted(r.seed for r in mine if r.status != "ok"),
        }
        for attr, _ in METRIC_KEYS:
            row[attr] = _mean([getattr(r, attr) for r in runs])
            row[f"{attr}_range"] = _range([getattr(r, attr) for r in runs])
        classes = list(dict.fromkeys(c for r in runs for c in r.per_class))
        row["per_class"] = {c: _mean([r.per_class.get(c) for r in runs]) for c in classes}
        row["train_seconds"] = _mean([r.train_seconds for r in runs])
        row["iterations"] = _mean([r.iterations for r in runs])
        row["worst_ap"] = min(_known([r.ap for r in runs]), default=None)
        rows.append(row)
    anchor = next((r for r in rows if r["budget"] == "anchor"), None)
    for row in rows:
        ref = anchor["train_seconds"] if anchor else None
        own = row["train_seconds"]
        row["time_vs_anchor"] = own / ref if ref and own is not None else None
        ap, ap50 = (anchor[k] if anchor else None for k in ("ap", "ap50"))
        row["delta_ap"] = _difference(row["ap"], ap)
        row["delta_ap50"] = _difference(row["ap50"], ap50)
        row["worst_delta_ap"] = _difference(row["worst_ap"], ap)
    return rows


def _difference(value: float | None, base: float | None) -> float | None:
    return value - base if value is not None and base is not None else None


def _fmt(value: float | None, fmt: str = ".1f") -> str:
    return "n/a" if value is None else format(value, fmt)


def _with_range(value: float | None, span: tuple[float, float] | None) -> str:
    if value is None or span is None:
        return _fmt(value)
    return f"{value:.1f} [{span[0]:.1f}, {span[1]:.1f}]"


def _label(name: str, budget: str) -> str:
    return name if budget == "anchor" else f"{name}, {BUDGET_LABELS.get(budget, budget)}"


def format_markdown(
    rows: Sequence[dict[str, Any]], results: Sequence[RunResult], heading: str
) -> str:
    """The summary table, the sizes-and-classes table, then every run."""
    classes = list(dict.fromkeys(c for row in rows for c in row["per_class"]))
    header = ["model", "seeds", "AP", "AP50", "AP75", "Δ AP", "worst seed Δ AP", "iterations"]
    header += ["train s", "time vs torchvision"]
    summary = []
    for row in rows:
        anchor = row["budget"] == "anchor"
        summary.append(
            [
                _label(row["name"], row["budget"]),
                ",".join(map(str, row["seeds"])) or "none",
                *(_with_range(row[a], row[f"{a}_range"]) for a in ("ap", "ap50", "ap75")),
                "anchor" if anchor else _fmt(row["delta_ap"], "+.1f"),
                "" if anchor else _fmt(row["worst_delta_ap"], "+.1f"),
                _fmt(row["iterations"], ".0f"),
                _fmt(row["train_seconds"], ".0f"),
                _fmt(row["time_vs_anchor"], ".2f") + ("" if row["time_vs_anchor"] is None else "x"),
            ]
        )
    sizes = [
        [
            _label(row["name"], row["budget"]),
            *(_fmt(row[a]) for a in ("aps", "apm", "apl")),
            *(_fmt(row["per_class"].get(c)) for c in classes),
        ]
        for row in rows
    ]
    runs = [
        [
            _label(r.name, r.budget),
            r.seed,
            *(_fmt(getattr(r, a)) for a, _ in METRIC_KEYS),
            *(_fmt(r.per_class.get(c)) for c in classes),
            _fmt(r.iterations, ".0f"),
            _fmt(r.train_seconds, ".0f"),
            r.status,
        ]
        for r in results
    ]
    metric_names = [key for _, key in METRIC_KEYS]
    return "\n".join(
        [
            f"**{heading}**",
            "",
            markdown_table(header, summary),
            "",
            "Means over the seeds that finished, [lowest, highest] seed. Δ AP: against the "
            "anchor's mean AP; worst seed Δ AP: the lowest seed's AP against it. train s: the "
            "training loop (model building, image decoding before the anchor's clock, "
            "evaluation excluded).",
            "",
            markdown_table(["model", "APs", "APm", "APl", *(f"AP {c}" for c in classes)], sizes),
            "",
            markdown_table(
                ["model", "seed", *metric_names, *classes, "iterations", "train s", "status"],
                runs,
            ),
        ]
    )


def write_report(
    out_dir: Path, rows: Sequence[dict[str, Any]], results: Sequence[RunResult], heading: str
) -> list[Path]:
    """<out_dir>/benchmark.md and benchmark.json; returns their paths."""
    md = write_text(out_dir / "benchmark.md", format_markdown(rows, results, heading) + "\n")
    record = {"heading": heading, "summary": list(rows), "runs": [asdict(r) for r in results]}
    return [md, write_json(out_dir / "benchmark.json", record)]
