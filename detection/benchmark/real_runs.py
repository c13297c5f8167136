"""What the real-photo benchmark passes around (real_photos.py, anchor.py, real_report.py): the
data split a run trains and reports on, and one trained model's result."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BUDGETS = ("time", "iterations")  # equal training time, equal iterations (real_photos.py)
# bbox metrics of a run, as RunResult fields
METRIC_KEYS = (
    ("ap", "AP"),
    ("ap50", "AP50"),
    ("ap75", "AP75"),
    ("aps", "APs"),
    ("apm", "APm"),
    ("apl", "APl"),
)


@dataclass
class Split:
    """The benchmark's data: COCO train / val files, their image folder, and how they were
    made (for the report's heading)."""

    train: Path
    val: Path
    images: Path
    description: str = ""

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
    """One trained model: who (the anchor or a set member), with which budget ("time",
    "iterations"; the anchor: "anchor"), its seed, metrics, iterations and training seconds."""

    name: str
    seed: int
    budget: str = "iterations"
    ap: float | None = None
    ap50: float | None = None
    ap75: float | None = None
    aps: float | None = None
    apm: float | None = None
    apl: float | None = None
    per_class: dict[str, float | None] = field(default_factory=dict)
    train_seconds: float | None = None
    iterations: int | None = None
    status: str = "ok"
    output: str = ""

    def set_metrics(self, bbox: dict[str, Any]) -> None:
        """Take the metrics of a metrics.json "bbox" record (percent; None where undefined)."""
        for attr, key in METRIC_KEYS:
            setattr(self, attr, bbox.get(key))
        self.per_class = dict(bbox.get("per_category") or {})
