"""The detection config's checks across fields (the loader checks each field's type and
choices), and the error every config problem raises."""

from __future__ import annotations

from .datasets import DATASETS, is_resolvable
from .schema import Config


class ConfigError(ValueError):
    """A config that cannot be used; the message says what, where and how to fix it."""


def _check_epochs(s) -> None:
    """solver.max_epochs > 0; step_epochs only with it, increasing, inside (0, max_epochs)."""
    if s.max_epochs is None:
        if s.step_epochs is not None:
            raise ConfigError("solver.step_epochs needs solver.max_epochs (or use solver.steps)")
        return
    if not s.max_epochs > 0:  # NaN too
        raise ConfigError(f"solver.max_epochs must be > 0, got {s.max_epochs}")
    steps = s.step_epochs or []
    if steps != sorted(steps) or any(not 0 < e < s.max_epochs for e in steps):
        raise ConfigError(
            f"solver.step_epochs must be increasing and inside (0, solver.max_epochs="
            f"{s.max_epochs:g}), got {steps}"
        )


def validate(cfg: Config) -> None:
    """The detection config's checks across fields; ConfigError with the fix in the message."""
    s = cfg.solver
    if s.steps != sorted(s.steps):
        raise ConfigError(f"solver.steps must be increasing, got {s.steps}")
    if any(v <= 0 for v in (s.ims_per_batch, s.max_iter, s.checkpoint_period)):
        raise ConfigError("solver.ims_per_batch, solver.max_iter and checkpoint_period must be > 0")
    _check_epochs(s)
    if s.max_seconds is not None and not s.max_seconds > 0:  # NaN too
        raise ConfigError(f"solver.max_seconds must be > 0 (or null), got {s.max_seconds}")
    if s.accumulate < 1 or s.ims_per_batch % s.accumulate:
        raise ConfigError(
            f"solver.accumulate={s.accumulate} must be >= 1 and divide solver.ims_per_batch="
            f"{s.ims_per_batch} (each pass takes ims_per_batch / accumulate images)"
        )
    if s.patience < 0:
        raise ConfigError(f"solver.patience must be >= 0 (0 = never stop early), got {s.patience}")
    if s.patience > 0 and cfg.test.eval_period <= 0:
        raise ConfigError(
            f"solver.patience={s.patience} counts periodic evaluations, but test.eval_period="
            f"{cfg.test.eval_period}; set test.eval_period > 0 or solver.patience=0"
        )
    if not 0.0 <= cfg.test.analyze_score_thresh <= 1.0:
        raise ConfigError(
            f"test.analyze_score_thresh must be in [0, 1], got {cfg.test.analyze_score_thresh}"
        )
    if cfg.model.class_map and not cfg.model.weights:
        raise ConfigError(
            "model.class_map maps the classes of a detector checkpoint, but model.weights is "
            "null; set model.weights=PATH or remove model.class_map"
        )
    if not cfg.input.min_size_train:
        raise ConfigError("input.min_size_train needs at least one size")
    m = cfg.model
    if len(m.pixel_mean) != 3 or len(m.pixel_std) != 3:
        raise ConfigError("model.pixel_mean and model.pixel_std need 3 values (one per channel)")
    if len(m.roi_heads.box_reg_weights) != 4:
        raise ConfigError("model.roi_heads.box_reg_weights needs 4 values (dx, dy, dw, dh)")
    lo, hi = (m.rpn.iou_thresholds + [None, None])[:2]
    if len(m.rpn.iou_thresholds) != 2 or lo > hi:
        raise ConfigError(
            f"model.rpn.iou_thresholds must be [negative_below, positive_from] with the first "
            f"<= the second, got {m.rpn.iou_thresholds}"
        )
    if m.roi_heads.num_classes is not None and m.roi_heads.num_classes < 1:
        raise ConfigError("model.roi_heads.num_classes must be at least 1")
    for split in ("train", "test"):
        d = getattr(cfg.data, split)
        if not is_resolvable(d.name, d.annotations, d.images):
            raise ConfigError(
                f"data.{split}: name {d.name!r} is not a registered dataset "
                f"({', '.join(DATASETS)}); set a registered name or both "
                f"data.{split}.annotations and data.{split}.images"
            )
