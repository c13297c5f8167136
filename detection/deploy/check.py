"""The export's check: an exported file's detections against PyTorch's on one image.

Two runtimes do not round alike (onnxruntime's convolutions, resize and softmax are not
PyTorch's), so boxes and scores differ by float noise (TOLERANCES). Where two candidates are
tied within that noise, the post-processing decides between them on the noise: which of two
overlapping boxes of one class NMS keeps (a confident detector's scores saturate at 1.0 or one
ulp below it), whether an IoU within noise of the threshold suppresses, which of equal scores
make the `detections_per_image` cut, whether a score at the threshold passes. Those are
different decisions of the same model, not a different model; `compare_detections` accepts
them when given the reference's post-processing (`Decisions`: its settings and candidates)
and only then. Everything else must agree: a detection of the exported run only must be one
of the reference's candidates (within the bounds) that no other exported detection of its
class suppresses, a detection in one run only is accepted only when a near-tied decision
explains it, and every chain of such explanations starts at a tie within the bounds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# The bounds of the check. fp32: the same arithmetic in another runtime; differences are
# float rounding (measured: boxes within 1e-4 px, scores within 2e-5). fp16: both sides run
# the backbone and heads in fp16, but ONNX Runtime's fp16 kernels round and accumulate
# differently from PyTorch's (10-bit mantissa: a logit of 10 moves by 0.005), so scores are
# held to 1e-2 and boxes to 1 px.
TOLERANCES = {"fp32": (0.5, 1e-3), "fp16": (1.0, 1e-2)}


@dataclass(frozen=True)
class Decisions:
    """The reference's post-processing, whose decisions float rounding can flip: its settings,
    and its candidates (boxes in the image's pixels, scores, labels before per-class NMS and
    the detections cut; DeployableDetector.all_candidates)."""

    nms_thresh: float  # per-class NMS IoU
    detections_per_image: int
    score_thresh: float
    candidates: dict[str, torch.Tensor]

    @classmethod
    def of(cls, detector, image: torch.Tensor) -> Decisions:
        """The settings and the candidates of a DeployableDetector on `image`."""
        with torch.inference_mode():
            candidates = detector.all_candidates(image)
        return cls(
            detector.nms_thresh,
            detector.detections_per_image,
            detector.score_thresh,
            {k: v.float() if v.is_floating_point() else v for k, v in candidates.items()},
        )


@dataclass
class Comparison:
    """Detections of an exported file against PyTorch's on one image."""

    reference: int  # detections of the PyTorch model
    exported: int
    matched: int  # pairs of the same label within the bounds
    max_box_diff: float  # px, over matched pairs
    max_score_diff: float
    box_atol: float
    score_atol: float
    flipped: int = 0  # detections of one run only, each explained by a near-tied decision
    unexplained: int = 0  # detections of one run only that nothing explains

    @property
    def ok(self) -> bool:
        return (
            self.unexplained == 0
            and self.max_box_diff <= self.box_atol
            and self.max_score_diff <= self.score_atol
        )

    def __str__(self) -> str:
        verdict = "OK" if self.ok else "FAILED"
        if self.reference == 0 and self.exported == 0:
            return "no detections in either (nothing else to compare)"
        text = (
            f"{verdict}: detections {self.exported} exported / {self.reference} PyTorch, "
            f"{self.matched} matched by label; max |box diff| {self.max_box_diff:.2e} px "
            f"(bound {self.box_atol:g}), max |score diff| {self.max_score_diff:.2e} (bound "
            f"{self.score_atol:g})"
        )
        if self.flipped:
            text += (
                f"; {self.flipped} in one run only, decided differently between candidates "
                "tied within the bounds (NMS, the detections cut or the score threshold)"
            )
        if self.unexplained:
            text += f"; {self.unexplained} in one run only that no near tie explains"
        return text


def _pairs(
    ref: dict[str, torch.Tensor], out: dict[str, torch.Tensor], box_atol: float, score_atol: float
) -> tuple[list[tuple[int, int]], torch.Tensor]:
    """Each reference detection (best first) paired with the unpaired exported one of the same
    label, within the bounds, with the nearest box; and the box distances [n, m]."""
    n, m = len(ref["boxes"]), len(out["boxes"])
    if not n or not m:
        return [], torch.zeros((n, m))
    dist = (ref["boxes"][:, None, :] - out["boxes"][None, :, :]).abs().amax(-1)
    close = (
        (ref["labels"][:, None] == out["labels"][None, :])
        & (dist <= box_atol)
        & ((ref["scores"][:, None] - out["scores"][None, :]).abs() <= score_atol)
    )
    cost = torch.where(close, dist, torch.full_like(dist, float("inf")))
    pairs, taken = [], torch.zeros(m, dtype=torch.bool)
    for i in range(n):  # at most detections_per_image
        row = cost[i].masked_fill(taken, float("inf"))
        j = int(row.argmin())
        if torch.isfinite(row[j]):
            taken[j] = True
            pairs.append((i, j))
    return pairs, dist


def _iou_bounds(box: torch.Tensor, others: torch.Tensor, d: float):
    """The least and the largest IoU of `box` [4] with each of `others` [M, 4] when every
    coordinate may move by up to `d`."""
    iw = torch.minimum(box[2], others[:, 2]) - torch.maximum(box[0], others[:, 0])
    ih = torch.minimum(box[3], others[:, 3]) - torch.maximum(box[1], others[:, 1])
    aw, ah = box[2] - box[0], box[3] - box[1]
    bw, bh = others[:, 2] - others[:, 0], others[:, 3] - others[:, 1]

    def area(w, h, grow):
        return (w + grow).clamp(min=0) * (h + grow).clamp(min=0)

    inter_hi, inter_lo = area(iw, ih, 2 * d), area(iw, ih, -2 * d)
    union_lo = area(aw, ah, -2 * d) + area(bw, bh, -2 * d) - inter_hi
    union_hi = area(aw, ah, 2 * d) + area(bw, bh, 2 * d) - inter_lo
    hi = inter_hi / torch.maximum(union_lo, inter_hi).clamp(min=1e-12)
    return inter_lo / union_hi.clamp(min=1e-12), hi


def _genuine(
    x: int, run: dict[str, torch.Tensor], rules: Decisions, noise: float, box_atol, score_atol
) -> bool:
    """Whether exported detection `x` is one the reference could have kept: one of its
    candidates (label, box and score within the bounds), and no other exported detection of
    its label overlaps it beyond the NMS threshold (whatever the rounding)."""
    box, score, label = run["boxes"][x], run["scores"][x], run["labels"][x]
    candidates = rules.candidates
    candidate = (
        (candidates["labels"] == label)
        & ((candidates["boxes"] - box).abs().amax(-1) <= box_atol)
        & ((candidates["scores"] - score).abs() <= score_atol)
    ).any()
    lo, _ = _iou_bounds(box, run["boxes"], noise)
    others = (run["labels"] == label) & (torch.arange(len(lo)) != x)
    return bool(candidate) and not bool((others & (lo > rules.nms_thresh)).any())


def _explained(
    x: int,
    side: dict[str, torch.Tensor],
    other: dict[str, torch.Tensor],
    absent: tuple[torch.Tensor, torch.Tensor],
    rules: Decisions,
    noise: float,
    score_atol: float,
) -> bool:
    """Whether detection `x` of `side`, absent from `other`, can be a decision that rounding
    flipped. `absent`: the detections of `other` that `side` lacks, and those of them already
    explained (they score at least as high as x); `noise`: how far rounding moves a box
    coordinate (for IoUs near the NMS threshold)."""
    score = float(side["scores"][x])
    if score <= rules.score_thresh + score_atol:
        return True  # at the score threshold
    n = len(other["scores"])
    if n >= rules.detections_per_image and score <= float(other["scores"].min()) + score_atol:
        return True  # at the detections cut, tied with the last one there
    same = other["labels"] == side["labels"][x]
    if not same.any():
        return False
    lo, hi = _iou_bounds(side["boxes"][x], other["boxes"], noise)
    gap = other["scores"] - score
    # a y of `other` suppressed x there, and here it did not: y lost to x here on a tied
    # score (they swapped), or rounding puts their IoU on either side of the threshold, or
    # y is missing here by a flipped decision of its own
    lacking, explained = absent
    outranks = gap >= -score_atol
    swapped = lacking & (gap.abs() <= score_atol)
    borderline = outranks & (lo <= rules.nms_thresh)
    chained = explained & outranks
    return bool((same & (hi > rules.nms_thresh) & (swapped | borderline | chained)).any())


def _flipped(runs, single, decisions: Decisions | None, noise, box_atol, score_atol) -> int:
    """How many of the detections of one run only (`single`, per run) are decisions that
    rounding flipped; taken from the best down, so that an explanation only leans on
    better-scoring detections."""
    if decisions is None:
        return 0
    explained = [torch.zeros_like(s) for s in single]
    order = sorted(
        (
            (float(runs[s]["scores"][x]), s, int(x))
            for s in (0, 1)
            for x in torch.where(single[s])[0]
        ),
        reverse=True,
    )
    for _, s, x in order:
        o = 1 - s
        absent = (single[o], explained[o])
        explained[s][x] = _explained(
            x, runs[s], runs[o], absent, decisions, noise, score_atol
        ) and (s == 0 or _genuine(x, runs[s], decisions, noise, box_atol, score_atol))
    return int(explained[0].sum() + explained[1].sum())


def compare_detections(
    reference: dict[str, torch.Tensor],
    exported: dict[str, torch.Tensor],
    box_atol: float = TOLERANCES["fp32"][0],
    score_atol: float = TOLERANCES["fp32"][1],
    decisions: Decisions | None = None,
) -> Comparison:
    """Pair each reference detection (best first) with an exported one of the same label
    within the bounds (nearest box), so that detections of almost equal score may swap places.
    Without `decisions` every detection must have its pair. With them, a detection of one run
    only is accepted where float rounding can have flipped the decision that kept it in one
    and not the other (module docstring); an exported one must also be one of the reference's
    candidates, and not overlap another of its class beyond the threshold. How far rounding
    moves a box, for IoUs near the threshold, is measured on the pairs (twice their largest
    box difference, at most `box_atol`)."""
    runs = []
    for d in (reference, exported):
        run = {k: d[k].cpu() for k in ("boxes", "scores", "labels")}
        runs.append({**run, "boxes": run["boxes"].float(), "scores": run["scores"].float()})
    ref, out = runs
    pairs, dist = _pairs(ref, out, box_atol, score_atol)
    box_diff = max((float(dist[i, j]) for i, j in pairs), default=0.0)
    score_diff = max(
        (float((ref["scores"][i] - out["scores"][j]).abs()) for i, j in pairs), default=0.0
    )
    single = [torch.ones(len(r["scores"]), dtype=torch.bool) for r in runs]
    for i, j in pairs:
        single[0][i], single[1][j] = False, False
    noise = min(2 * box_diff, box_atol) if pairs else box_atol
    flipped = _flipped(runs, single, decisions, noise, box_atol, score_atol)
    unexplained = int(single[0].sum() + single[1].sum()) - flipped
    return Comparison(
        len(ref["scores"]),
        len(out["scores"]),
        len(pairs),
        box_diff,
        score_diff,
        box_atol,
        score_atol,
        flipped,
        unexplained,
    )
