"""The ResNet paper's comparison table from metrics.json files: backbone, mAP@.5, mAP@[.5,.95]
and the absolute and relative change against a baseline (the paper's: VGG-16)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backbones import get_backbone

from ..utils.figures import save_figure
from ..utils.tables import csv_table, markdown_table

# He et al. 2016 (Deep Residual Learning for Image Recognition), Table 8: Faster R-CNN on COCO
# val, quoted from the paper (not measured here)
PAPER_SOURCE = "paper (COCO val), literature"
PAPER_ROWS = (("VGG-16", 41.5, 21.2), ("ResNet-101", 48.4, 27.2))


@dataclass
class Entry:
    """One line of the table: a model's COCO numbers and where they come from."""

    model: str
    ap50: float | None
    ap: float | None
    source: str
    dataset: str | None = None
    paper: bool = False


def find_metrics(path: str | os.PathLike) -> Path:
    """The metrics.json of a run: the file itself, DIR/metrics.json or DIR/eval/metrics.json."""
    path = Path(path)
    if path.is_file():
        return path
    candidates = [path / "metrics.json", path / "eval" / "metrics.json"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"no metrics.json for {path} (looked at {path if not path.is_dir() else looked}); "
        "run `resdet evaluate` on the run's checkpoint first"
    )


def display_name(config: dict[str, Any] | None, fallback: str) -> str:
    """The paper's spelling of a config's backbone, from the backbone registry's label:
    resnet101 -> ResNet-101, vgg16 -> VGG-16, resnext50_32x4d -> ResNeXt-50 32x4d; plain nets
    (shortcut none) are plain-N, a normalised VGG-16 names its norm; unregistered names as they
    are."""
    model = (config or {}).get("model") or {}
    backbone = model.get("backbone") or {}
    name = backbone.get("name")
    if not name:
        return fallback
    try:
        pretty = get_backbone(name).label
    except ValueError:
        pretty = name  # a user's backbone whose module this process has not imported
    if name == "vgg16_bn":
        pretty = f"VGG-16-{'GN' if backbone.get('norm') == 'GN' else 'BN'}"
    m = re.fullmatch(r"ResNet-(\d+)", pretty)
    if backbone.get("shortcut") == "none" and m:
        pretty = f"plain-{m.group(1)}"
    if (model.get("neck") or {}).get("name") == "fpn":
        pretty += " FPN"
    return pretty


def load_entry(path: str | os.PathLike) -> Entry:
    """A table line from a run directory or metrics.json file."""
    file = find_metrics(path)
    try:
        record = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{file} is not valid JSON: {e}") from None
    bbox = record.get("bbox") if isinstance(record, dict) else None
    if not isinstance(bbox, dict) or "AP" not in bbox or "AP50" not in bbox:
        raise ValueError(
            f"{file} has no bbox AP / AP50; it is not a metrics.json written by resdet evaluate"
        )
    dataset = record.get("dataset") or {}
    fallback = file.parent.parent.name if file.parent.name == "eval" else file.parent.name
    return Entry(
        model=display_name(record.get("config"), fallback or str(file)),
        ap50=bbox["AP50"],
        ap=bbox["AP"],
        source=str(file),
        dataset=dataset.get("annotations") if isinstance(dataset, dict) else None,
    )


def paper_entries() -> list[Entry]:
    """The paper's own rows (VGG-16 and ResNet-101), marked as literature."""
    return [Entry(name, ap50, ap, PAPER_SOURCE, paper=True) for name, ap50, ap in PAPER_ROWS]


# below this AP (points) a baseline gives no relative change: +13.7 points over a baseline at 0.02
# would print as +70000%, which says nothing about either model
MIN_RELATIVE_BASE = 1.0
SMALL_BASE_NOTE = (
    f"n/a: the baseline is below {MIN_RELATIVE_BASE:g} AP, where a relative change means nothing; "
    "compare the absolute changes."
)


def _delta(value: float | None, base: float | None) -> tuple[float | None, float | None]:
    """(absolute change, relative change in percent) of `value` against `base`; the relative
    change is None where the baseline is below MIN_RELATIVE_BASE."""
    if value is None or base is None:
        return None, None
    relative = (value - base) / base * 100.0 if base >= MIN_RELATIVE_BASE else None
    return value - base, relative


def comparison_rows(baseline: Entry, runs: Sequence[Entry], paper: bool = False) -> list[dict]:
    """Table rows: the baseline, the runs (changes against the baseline) and, with `paper`, the
    paper's rows (changes against the paper's own VGG-16)."""
    groups = [(baseline, [baseline, *runs])]
    if paper:
        entries = paper_entries()
        groups.append((entries[0], entries))
    rows = []
    for base, entries in groups:
        for entry in entries:
            d50, r50 = _delta(entry.ap50, base.ap50)
            d, r = _delta(entry.ap, base.ap)
            rows.append(
                {
                    "model": entry.model,
                    "map50": entry.ap50,
                    "map": entry.ap,
                    "delta_map50": d50,
                    "delta_map": d,
                    "rel_map50_pct": r50,
                    "rel_map_pct": r,
                    "baseline": entry is base,
                    "small_base": any(
                        b is not None and b < MIN_RELATIVE_BASE for b in (base.ap50, base.ap)
                    ),
                    "paper": entry.paper,
                    "source": entry.source,
                }
            )
    return rows


def dataset_mismatch(entries: Sequence[Entry]) -> str | None:
    """A warning when the measured runs were evaluated on different annotation files."""
    datasets = {e.dataset for e in entries if not e.paper and e.dataset}
    if len(datasets) > 1:
        return f"warning: the runs were evaluated on different datasets: {sorted(datasets)}"
    return None


def _num(value: float | None, signed: bool = False, suffix: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value:+.1f}{suffix}" if signed else f"{value:.1f}{suffix}"


def format_markdown(rows: Sequence[dict]) -> str:
    """The table as Markdown; changes of the baseline rows show as 'baseline'."""
    header = [
        "model",
        "mAP@.5",
        "mAP@[.5,.95]",
        "Δ mAP@.5",
        "Δ mAP@[.5,.95]",
        "rel. Δ mAP@.5",
        "rel. Δ mAP@[.5,.95]",
        "source",
    ]
    cells = []
    for row in rows:
        changes = (
            ["baseline"] * 4
            if row["baseline"]
            else [
                _num(row["delta_map50"], True),
                _num(row["delta_map"], True),
                _num(row["rel_map50_pct"], True, "%"),
                _num(row["rel_map_pct"], True, "%"),
            ]
        )
        cells.append([row["model"], _num(row["map50"]), _num(row["map"]), *changes, row["source"]])
    lines = [markdown_table(header, cells)]
    if any(row["small_base"] and not row["baseline"] for row in rows):
        lines += ["", SMALL_BASE_NOTE]
    if any(row["paper"] for row in rows):
        lines.append("")
        lines.append(
            f"Rows marked '{PAPER_SOURCE}' are He et al. 2016's Faster R-CNN numbers on COCO "
            "val, not measured here; their changes are against the paper's VGG-16."
        )
    return "\n".join(lines)


# the columns that a comparison row and an ablation row share, in table order
METRIC_FIELDS = (
    "model",
    "map50",
    "map",
    "delta_map50",
    "delta_map",
    "rel_map50_pct",
    "rel_map_pct",
)
CSV_FIELDS = (*METRIC_FIELDS, "baseline", "paper", "source")


def format_csv(rows: Sequence[dict], fields: Sequence[str] = CSV_FIELDS) -> str:
    """The table as CSV (numbers rounded to 4 decimals, empty where not available)."""
    return csv_table(rows, fields)


def plot_comparison(rows: Sequence[dict], path: str | os.PathLike) -> Path:
    """A grouped bar chart (mAP@.5 and mAP@[.5,.95] per model) written to `path`."""
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("--plot needs matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")  # files only: no display on servers
    import matplotlib.pyplot as plt

    labels = [f"{r['model']}\n(paper)" if r["paper"] else r["model"] for r in rows]
    x = list(range(len(rows)))
    width = 0.38
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(rows) + 2), 4.0))
    for offset, key, name, color in (
        (-width / 2, "map50", "mAP@.5", "#4C72B0"),
        (width / 2, "map", "mAP@[.5,.95]", "#DD8452"),
    ):
        values = [r[key] if r[key] is not None else 0.0 for r in rows]
        bars = ax.bar(
            [i + offset for i in x],
            values,
            width,
            label=name,
            color=color,
            hatch=None,
        )
        for bar, row in zip(bars, rows, strict=True):
            if row["paper"]:
                bar.set_hatch("//")
                bar.set_alpha(0.6)
            text = "n/a" if row[key] is None else f"{row[key]:.1f}"
            ax.annotate(
                text,
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )
    ax.set_xticks(x)
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel("COCO box AP (%)")
    ax.set_title("Faster R-CNN: backbone comparison (hatched: paper, literature)", fontsize=10)
    ax.legend(fontsize=8)
    ax.margins(y=0.15)
    return save_figure(fig, path)
