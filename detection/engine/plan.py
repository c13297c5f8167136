"""What a training run settles from its data before the first iteration: the number of classes
(model.roi_heads.num_classes unset = the training set's categories), a schedule given in epochs
(solver.max_epochs, solver.step_epochs) as iterations, and a test set that will be evaluated
checked now, so that a wrong data.test fails within seconds rather than after the training."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from ..config import Config, ConfigError
from ..config.datasets import dataset_label
from .budget import scaled_steps


def classes_from_data(cfg: Config, class_names: Sequence[str], log: Callable[[str], None]) -> None:
    """Set model.roi_heads.num_classes from the training set when the config leaves it unset
    (said in the log); a config that names another count is a ConfigError naming both."""
    k = len(class_names)
    heads = cfg.model.roi_heads
    where = dataset_label(cfg.data.train)
    if heads.num_classes is None:
        heads.num_classes = k
        log(
            f"model.roi_heads.num_classes={k} from the training data ({where}): "
            + ", ".join(class_names)
        )
    elif heads.num_classes != k:
        raise ConfigError(
            f"the training set {where} has {k} classes ({', '.join(class_names)}) but the config "
            f"says model.roi_heads.num_classes={heads.num_classes}; set "
            f"model.roi_heads.num_classes={k}, or null to take it from the data"
        )


def iterations_per_epoch(cfg: Config, num_images: int) -> int:
    """Optimizer steps that see every training image once (solver.ims_per_batch per step)."""
    return max(1, math.ceil(num_images / cfg.solver.ims_per_batch))


def epochs_to_iterations(cfg: Config, num_images: int, log: Callable[[str], None]) -> int:
    """Resolve solver.max_epochs / solver.step_epochs into solver.max_iter / solver.steps (said
    in the log); returns the iterations per epoch. Without step_epochs the LR steps keep the
    config's own schedule shape (steps / max_iter: 2/3 and 8/9 for the 1x schedule). A warmup
    longer than the first step is cut to end there. Without max_epochs nothing changes."""
    s = cfg.solver
    per_epoch = iterations_per_epoch(cfg, num_images)
    if s.max_epochs is None:
        return per_epoch
    new_max = max(1, round(s.max_epochs * per_epoch))
    if s.step_epochs is not None:
        s.steps = scaled_steps(s.step_epochs, s.max_epochs, new_max)
    else:
        s.steps = scaled_steps(s.steps, s.max_iter, new_max)
    s.max_iter = new_max
    stepped = s.lr_schedule == "step"
    warmup = min(s.warmup_iters, s.steps[0] if s.steps and stepped else s.max_iter)
    warmup_said = f"; warmup cut to {warmup} iterations" if warmup < s.warmup_iters else ""
    s.warmup_iters = warmup
    steps_said = ", ".join(f"{step} (epoch {step / per_epoch:.3g})" for step in s.steps) or "none"
    decay = f"LR steps at iterations {steps_said}" if stepped else f"{s.lr_schedule} LR decay"
    log(
        f"schedule: {s.max_epochs:g} epochs of {per_epoch} iterations ({num_images} images, "
        f"{s.ims_per_batch} per iteration) = solver.max_iter={s.max_iter}; {decay}{warmup_said}"
    )
    return per_epoch


def check_test_split(cfg: Config, class_names: Sequence[str]) -> None:
    """Open data.test as the final evaluation will (annotation file, image folder, every image
    file) and compare its classes with the training set's: a ConfigError naming what is wrong."""
    from ..data import build_dataset  # detection.data imports albumentations: lazily

    try:
        test = build_dataset(cfg, "test")
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(f"data.test cannot be used for the evaluation: {e}") from None
    if list(test.class_names) != list(class_names):
        raise ConfigError(
            f"data.test ({dataset_label(cfg.data.test)}) has the classes "
            f"{list(test.class_names)} but the training set has {list(class_names)}; the "
            "evaluation needs the same categories (same names, same order of ids)"
        )
