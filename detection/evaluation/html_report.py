"""One self-contained HTML page of an evaluation: the headline metrics, a per-class table, the
PR curves, the confusion matrix and the worst images with ground truth and detections drawn side
by side. Everything is inside the file (SVG curves, base64 JPEG thumbnails, a few lines of
script to sort the table), so it can be mailed or opened from any folder without a server."""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.images import ImageReadError, read_image
from ..data.visualize import draw_boxes
from ..utils.io import write_text

HEADLINE = ("AP", "AP50", "AP75", "APs", "APm", "APl")
CLASS_COLUMNS = (
    ("class", None), ("AP", "AP"), ("AP50", "AP50"), ("AP75", "AP75"), ("APs", "APs"),
    ("APm", "APm"), ("APl", "APl"), ("precision", "precision"), ("recall", "recall"),
    ("objects", "gt"), ("detections", "detections"), ("TP", "TP"), ("FP", "FP"), ("FN", "FN"),
)  # fmt: skip
THUMB_WIDTH = 360
WORST_SHOWN = 12

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; font-size: .9em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: right; }
th { background: #f3f3f3; cursor: pointer; user-select: none; }
td:first-child, th:first-child { text-align: left; }
.cards { display: flex; gap: 1em; flex-wrap: wrap; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: .6em 1em; min-width: 6em; }
.card b { display: block; font-size: 1.6em; }
.curves, .worst { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; } figcaption { font-size: .85em; color: #555; }
.pair { display: flex; gap: 4px; } .pair img { width: 360px; }
"""

SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th, col) {
    th.addEventListener('click', function () {
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      var down = th.dataset.order !== 'desc';
      rows.sort(function (a, b) {
        var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
        var nx = parseFloat(x), ny = parseFloat(y);
        var c = (isNaN(nx) || isNaN(ny)) ? String(x).localeCompare(String(y)) : nx - ny;
        return down ? -c : c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
      th.dataset.order = down ? 'desc' : 'asc';
    });
  });
});
document.documentElement.dataset.report = 'ready';
"""


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{title}</h2>{body}</section>'


def _num(value: float | None, scale: float = 1.0) -> str:
    return "n/a" if value is None else f"{value * scale:.1f}"


def _headline(metrics: Mapping[str, Any]) -> str:
    cards = "".join(
        f'<div class="card">{key}<b>{_num(metrics.get(key))}</b></div>' for key in HEADLINE
    )
    return _section("summary", "Box AP (COCO, percent)", f'<div class="cards">{cards}</div>')


def _cell(value: Any, scale: float = 1.0) -> str:
    if isinstance(value, str):
        return f'<td data-v="{html.escape(value)}">{html.escape(value)}</td>'
    if isinstance(value, int):
        return f'<td data-v="{value}">{value}</td>'
    return f'<td data-v="{"" if value is None else value * scale}">{_num(value, scale)}</td>'


def _class_table(analysis: Mapping[str, Any]) -> str:
    head = "".join(f"<th>{name}</th>" for name, _ in CLASS_COLUMNS)
    rows = []
    for name, c in analysis["per_class"].items():
        cells = [_cell(name)]
        for _, key in CLASS_COLUMNS[1:]:
            cells.append(_cell(c[key], 100.0 if key in ("precision", "recall") else 1.0))
        rows.append(f"<tr>{''.join(cells)}</tr>")
    note = (
        f"Precision, recall and counts: detections scoring &ge; {analysis['score_thresh']:g}, "
        f"matched at IoU &ge; {analysis['iou_thresh']:g}. AP columns: all detections. "
        "Click a column to sort."
    )
    table = (
        f'<table class="sortable"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
    return _section("per-class", "Per class", f"<p>{note}</p>{table}")


def _svg_curve(name: str, curve: Mapping[str, Any], point: Mapping[str, Any]) -> str:
    """A 260x220 SVG of one class's PR curves at IoU .5 (solid) and .75 (dashed)."""
    w, h, pad = 260, 220, 30

    def xy(r: float, p: float) -> str:
        return f"{pad + r * (w - pad - 8):.1f},{h - pad - max(p, 0.0) * (h - pad - 8):.1f}"

    lines = []
    for key, dash, color in (("precision50", "", "#1f77b4"), ("precision75", "5,3", "#d62728")):
        pts = " ".join(xy(r, p) for r, p in zip(curve["recall"], curve[key], strict=True))
        lines.append(
            f'<polyline fill="none" stroke="{color}" stroke-width="1.5" '
            f'stroke-dasharray="{dash}" points="{pts}"/>'
        )
    if point["precision"] is not None and point["recall"] is not None:
        cx, cy = xy(point["recall"], point["precision"]).split(",")
        lines.append(f'<circle cx="{cx}" cy="{cy}" r="4" fill="#000"/>')
    axes = (
        f'<line x1="{pad}" y1="{h - pad}" x2="{w - 8}" y2="{h - pad}" stroke="#888"/>'
        f'<line x1="{pad}" y1="8" x2="{pad}" y2="{h - pad}" stroke="#888"/>'
        f'<text x="{w / 2}" y="{h - 8}" font-size="11" text-anchor="middle">recall</text>'
        f'<text x="10" y="{h / 2}" font-size="11" transform="rotate(-90 10 {h / 2})" '
        'text-anchor="middle">precision</text>'
    )
    caption = (
        f"{html.escape(name)}: AP50 {curve['AP50']:.1f} (solid), AP75 {curve['AP75']:.1f} "
        "(dashed); the dot: the score threshold"
    )
    return (
        f'<figure><svg width="{w}" height="{h}" role="img">{axes}{"".join(lines)}</svg>'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def _curves(analysis: Mapping[str, Any]) -> str:
    figures = [
        _svg_curve(name, curve, analysis["per_class"][name])
        for name, curve in analysis["pr_curves"].items()
        if curve is not None
    ]
    body = "".join(figures) or "<p>No class has ground truth in these images.</p>"
    return _section("pr-curves", "Precision-recall curves", f'<div class="curves">{body}</div>')


def _confusion(analysis: Mapping[str, Any]) -> str:
    labels = analysis["confusion"]["rows"]
    matrix = np.asarray(analysis["confusion"]["matrix"], dtype=np.int64)
    head = "<th>ground truth \\ detected</th>" + "".join(
        f"<th>{html.escape(c)}</th>" for c in labels
    )
    rows = []
    for g, label in enumerate(labels):
        total = max(int(matrix[g].sum()), 1)
        cells = []
        for d in range(len(labels)):
            share = matrix[g, d] / total
            color = "60,140,60" if g == d else "200,60,60"
            cells.append(
                f'<td style="background: rgba({color},{share:.2f})">{int(matrix[g, d])}</td>'
            )
        rows.append(f"<tr><td>{html.escape(label)}</td>{''.join(cells)}</tr>")
    note = (
        "Rows: ground truth (background: detections that match no object); columns: what was "
        "detected (background: objects that were missed). Shading: the share of the row."
    )
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    return _section("confusion", "Confusion matrix", f"<p>{note}</p>{table}")


def _thumbnail(image: np.ndarray, boxes, labels, names, scores=None) -> str:
    canvas = draw_boxes(image, boxes, labels, names, scores)
    scale = THUMB_WIDTH / canvas.width
    if scale < 1:
        canvas = canvas.resize((THUMB_WIDTH, max(1, round(canvas.height * scale))))
    buffer = io.BytesIO()
    canvas.convert("RGB").save(buffer, format="JPEG", quality=85)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _xyxy(entries: Sequence[Mapping[str, Any]]) -> np.ndarray:
    boxes = np.asarray([e["bbox"] for e in entries], dtype=np.float32).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]
    return boxes


def _worst_image(
    entry: Mapping[str, Any], gt: Mapping[int, list], results: Mapping[int, list],
    images_dir: Path, label_of: Mapping[int, int], names: Sequence[str], score_thresh: float,
) -> str:  # fmt: skip
    image_id, file_name = entry["image_id"], entry["file_name"]
    caption = (
        f"{html.escape(str(file_name))} (id {image_id}): {entry['errors']} errors: "
        f"{entry.get('missed', 0)} missed, {entry.get('false_detections', 0)} false, "
        f"{entry.get('confused', 0)} confused. Left: ground truth; right: detections &ge; "
        f"{score_thresh:g}."
    )
    try:
        image = read_image(images_dir / file_name)
    except ImageReadError as e:
        caption += f" (image not shown: {html.escape(str(e))})"
        return f"<figure><figcaption>{caption}</figcaption></figure>"
    objs = [a for a in gt.get(image_id, ()) if a["category_id"] in label_of]
    dets = [
        r
        for r in results.get(image_id, ())
        if r["score"] >= score_thresh and r["category_id"] in label_of
    ]
    left = _thumbnail(image, _xyxy(objs), [label_of[a["category_id"]] for a in objs], names)
    right = _thumbnail(
        image, _xyxy(dets), [label_of[r["category_id"]] for r in dets], names,
        np.asarray([r["score"] for r in dets], dtype=np.float32),
    )  # fmt: skip
    return (
        f'<figure><div class="pair"><img alt="ground truth" src="data:image/jpeg;base64,{left}">'
        f'<img alt="detections" src="data:image/jpeg;base64,{right}"></div>'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def _by_image(entries: Sequence[Mapping[str, Any]], image_ids: set[int]) -> dict[int, list]:
    out: dict[int, list] = {}
    for e in entries:
        if e["image_id"] in image_ids:
            out.setdefault(e["image_id"], []).append(e)
    return out


def _worst(analysis: Mapping[str, Any], gt_annotations, results, images_dir: Path | None) -> str:
    worst = analysis["worst_images"][:WORST_SHOWN]
    if not worst:
        body = "<p>No image has an error at this threshold.</p>"
    elif images_dir is None:
        body = "<p>Images not shown: no image folder given.</p>"
    else:
        label_of = {c["category_id"]: k + 1 for k, c in enumerate(analysis["per_class"].values())}
        names = list(analysis["per_class"])
        shown = {e["image_id"] for e in worst}
        gt, dets = _by_image(gt_annotations, shown), _by_image(results, shown)
        for image_id in gt:
            gt[image_id] = [a for a in gt[image_id] if not a.get("iscrowd", 0)]
        figures = [
            _worst_image(e, gt, dets, images_dir, label_of, names, analysis["score_thresh"])
            for e in worst
        ]
        body = f'<div class="worst">{"".join(figures)}</div>'
    return _section("worst-images", "Images with the most errors", body)


def render_report(
    analysis: Mapping[str, Any],
    metrics: Mapping[str, Any],
    gt_annotations: Sequence[Mapping[str, Any]],
    results: Sequence[Mapping[str, Any]],
    images_dir: str | os.PathLike | None,
    title: str,
) -> str:
    """The report page as a string (see the module doc). `analysis` is analyze_detections'
    output, `metrics` coco_evaluate's, `gt_annotations` the json's annotation list and `results`
    the COCO result entries the two were computed from."""
    folder = Path(images_dir) if images_dir is not None else None
    sections = [
        _headline(metrics),
        _class_table(analysis),
        _curves(analysis),
        _confusion(analysis),
        _worst(analysis, gt_annotations, results, folder),
    ]
    intro = (
        f"{analysis['num_images']} images, {analysis['total']['gt']} objects, "
        f"{len(results)} detections."
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{intro}</p>{''.join(sections)}"
        f"<script>{SCRIPT}</script></body></html>\n"
    )


def write_report(path: str | os.PathLike, *args, **kwargs) -> Path:
    """Write render_report(*args, **kwargs) to `path` atomically."""
    return write_text(path, render_report(*args, **kwargs))
