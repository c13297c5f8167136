"""The diagnostics of detection.evaluation.diagnostics as files: analysis.json (every number),
summary.md (per-class table, confusions, worst images), confusion_matrix.png, pr_<class>.png."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..utils.figures import pyplot, safe_file_name, save_figure
from ..utils.io import write_json, write_text
from ..utils.tables import markdown_table
from .diagnostics import BACKGROUND

# beyond this many classes the summary lists the largest confusions instead of the matrix,
# and the matrix figure drops the numbers in its cells (they would not be readable)
MATRIX_IN_TEXT_MAX = 20
MATRIX_NUMBERS_MAX = 30


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100.0 * value:.1f}"


def _ap(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def format_analysis(analysis: Mapping[str, Any]) -> str:
    """The diagnostics as Markdown: per-class table, confusions, worst images."""
    lines = [
        "# Detection diagnostics",
        "",
        f"{analysis['num_images']} images; detections scoring >= {analysis['score_thresh']:g}, "
        f"matched at IoU >= {analysis['iou_thresh']:g} (precision and recall in percent; "
        "AP50 over all detections).",
        "",
        "## Per class",
        "",
    ]
    header = ["class", "gt", "detections", "TP", "FP", "FN", "precision", "recall", "AP50"]
    rows = [
        [name, c["gt"], c["detections"], c["TP"], c["FP"], c["FN"], _pct(c["precision"]),
         _pct(c["recall"]), _ap(c["AP50"])]
        for name, c in analysis["per_class"].items()
    ]  # fmt: skip
    t = analysis["total"]
    rows.append(["**all**", t["gt"], t["detections"], t["TP"], t["FP"], t["FN"],
                 _pct(t["precision"]), _pct(t["recall"]), ""])  # fmt: skip
    lines += [markdown_table(header, rows), ""]
    if analysis["ignored_detections"]:
        lines += [f"{analysis['ignored_detections']} detection(s) on crowd regions ignored.", ""]
    lines += _confusion_text(analysis) + [""] + _worst_text(analysis["worst_images"])
    return "\n".join(lines) + "\n"


def _confusion_text(analysis: Mapping[str, Any]) -> list[str]:
    confusion = analysis["confusion"]
    lines = [
        "## Confusions",
        "",
        "Rows: ground truth; columns: detections. The background column counts missed "
        "objects, the background row false detections.",
        "",
    ]
    if len(confusion["rows"]) - 1 <= MATRIX_IN_TEXT_MAX:
        header = ["gt \\ detected", *confusion["columns"]]
        rows = [
            [name, *row] for name, row in zip(confusion["rows"], confusion["matrix"], strict=True)
        ]
        lines += [markdown_table(header, rows), ""]
    top = analysis["top_confusions"]
    if top:
        lines += ["Most frequent errors:", ""]
        lines += [f"- {_error_text(c['gt'], c['detected'])}: {c['count']}" for c in top[:10]]
    else:
        lines.append("No errors at this threshold.")
    return lines


def _error_text(gt: str, detected: str) -> str:
    if detected == BACKGROUND:
        return f"{gt} missed"
    if gt == BACKGROUND:
        return f"false {detected} detections"
    return f"{gt} detected as {detected}"


def _worst_text(worst: Sequence[Mapping[str, Any]]) -> list[str]:
    if not worst:
        return ["## Worst images", "", "None: no image has an error at this threshold."]
    header = ["image id", "file", "errors", "missed", "false", "confused", "gt", "detections"]
    rows = [
        [w["image_id"], w["file_name"], w["errors"], w["missed"], w["false_detections"],
         w["confused"], w["gt"], w["detections"]]
        for w in worst
    ]  # fmt: skip
    return ["## Worst images", "", markdown_table(header, rows)]


def pr_file_names(names: Sequence[str], category_ids: Sequence[int]) -> dict[str, str]:
    """{class name: pr_<safe name>.png}, unique even where names differ only in case or in
    characters a file name cannot hold (the category id is appended then)."""
    stems = [safe_file_name(n, fallback=f"id{c}") for n, c in zip(names, category_ids, strict=True)]
    lowered = [s.lower() for s in stems]
    out = {}
    for name, stem, cat in zip(names, stems, category_ids, strict=True):
        if lowered.count(stem.lower()) > 1:
            stem = f"{stem}_id{cat}"
        out[name] = f"pr_{stem}.png"
    return out


def plot_confusion_matrix(analysis: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """The confusion matrix, colours by row share (where each class's objects went), counts in
    the cells while they are readable."""
    import numpy as np

    plt = pyplot("the diagnostics")
    confusion = analysis["confusion"]
    counts = np.asarray(confusion["matrix"], dtype=np.float64)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
    n = len(confusion["rows"])
    side = min(max(5.0, 0.45 * n + 2.5), 40.0)
    fig, ax = plt.subplots(figsize=(side, side))
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    if n <= MATRIX_NUMBERS_MAX:
        for (g, d), value in np.ndenumerate(counts):
            if value:
                color = "white" if shares[g, d] > 0.5 else "black"
                ax.text(d, g, int(value), ha="center", va="center", fontsize=8, color=color)
    ax.set_xticks(range(n), confusion["columns"], rotation=90, fontsize=8)
    ax.set_yticks(range(n), confusion["rows"], fontsize=8)
    ax.set_xlabel("detected class")
    ax.set_ylabel("ground-truth class")
    ax.set_title(
        f"Confusion matrix (score >= {analysis['score_thresh']:g}, IoU >= "
        f"{analysis['iou_thresh']:g}); colour: share of the row",
        fontsize=9,
    )
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return save_figure(fig, path)


def plot_pr_curve(
    name: str, curve: Mapping[str, Any], per_class: Mapping[str, Any], score_thresh: float,
    path: str | os.PathLike,
) -> Path:  # fmt: skip
    """One class's precision-recall curves (IoU .5 and .75) and its operating point at the
    score threshold."""
    plt = pyplot("the diagnostics")
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    for key, iou, ap, style in (
        ("precision50", ".50", "AP50", "-"),
        ("precision75", ".75", "AP75", "--"),  # dashed: it often lies on the other
    ):
        ax.plot(curve["recall"], curve[key], style, label=f"IoU {iou} (AP {curve[ap]:.1f})")
    if per_class["precision"] is not None and per_class["recall"] is not None:
        ax.plot(
            per_class["recall"],
            per_class["precision"],
            "o",
            color="black",
            label=f"score >= {score_thresh:g}",
        )
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(f"{name}: {per_class['gt']} objects", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return save_figure(fig, path)


def write_analysis(analysis: Mapping[str, Any], output_dir: str | os.PathLike) -> dict[str, Any]:
    """Write the diagnostics to `output_dir` (created): analysis.json, summary.md,
    confusion_matrix.png and a pr_<class>.png per class with ground truth; each file
    atomically. Returns {"dir", "summary", "files": [file names]}."""
    out = Path(output_dir)
    per_class = analysis["per_class"]
    pr_files = pr_file_names(list(per_class), [c["category_id"] for c in per_class.values()])
    written = ["analysis.json", "summary.md", "confusion_matrix.png"]
    record = {**analysis, "pr_files": {}}
    for name, curve in analysis["pr_curves"].items():
        if curve is None:
            continue  # no ground truth of this class: no curve
        plot_pr_curve(name, curve, per_class[name], analysis["score_thresh"], out / pr_files[name])
        record["pr_files"][name] = pr_files[name]
        written.append(pr_files[name])
    plot_confusion_matrix(analysis, out / "confusion_matrix.png")
    summary = format_analysis(analysis)
    write_text(out / "summary.md", summary)
    write_json(out / "analysis.json", record)  # last: its presence means the folder is complete
    return {"dir": out, "summary": summary, "files": written}
