"""Starting a whole detector from a detector checkpoint: `model.weights` and `model.class_map`.

`read_detector_weights` reads the checkpoint and checks the class map before the model is built
(so that a bad path or class name costs nothing); `apply_detector_weights` then loads every
tensor whose name and shape match into the built model and returns a `FinetuneReport`.

The class predictor (cls_score: K + 1 rows, background first; bbox_pred: 4 rows per class) is
copied as it is when the classes agree, re-initialised when they do not, or, with
`model.class_map` (source class name -> target class name), copied row by row: background and
each mapped class, so that fine-tuning on a subset of the checkpoint's classes starts from the
trained scores.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..config import Config, ConfigError, to_dict
from ..utils.checkpoint import read_checkpoint

logger = logging.getLogger(__name__)

PREDICTOR = ("roi_heads.predictor.cls_score.", "roi_heads.predictor.bbox_pred.")
# Backbone and neck (the FPN wraps the ResNet, so both live under `backbone.`): a detector
# checkpoint must fit them exactly, or it is a checkpoint of another architecture.
ARCHITECTURE = "backbone."
# Settings that change what loaded weights compute without changing any tensor's shape: a
# difference is reported (and warned about), since the start point is then worse than it looks.
SAME_COMPUTATION = (
    "model.input_format",
    "model.pixel_mean",
    "model.pixel_std",
    "model.backbone.stride_in_1x1",
    "model.roi_heads.box_reg_weights",
)
_MISSING = object()
_SHOWN = 5  # tensor names quoted in an error before "... and N more"


@dataclass
class DetectorWeights:
    """A detector checkpoint read for `model.weights`, its class map resolved to rows.

    rows: target class row -> source class row (1..K; background, row 0, is added when copying),
        or None to decide from the class names when the model is known.
    """

    path: str
    state: dict[str, torch.Tensor]
    source_names: list[str] | None
    target_names: list[str] | None
    source_config: dict
    rows: dict[int, int] | None = None


@dataclass
class FinetuneReport:
    """What `model.weights` did with each tensor of the model and of the checkpoint.

    loaded: model tensors loaded whole from the checkpoint.
    reinitialised: model tensors kept at their initialisation -> why.
    ignored: checkpoint tensors with no place in the model.
    predictor: how the class predictor was set ("copied", "copied by position (names
        differ)", "rows copied by model.class_map", "re-initialised").
    class_rows: (source class, target class) whose predictor rows were copied (background not
        listed; it is copied whenever any row is).
    notes: what the user should know (replaced backbone weights, differing names).
    """

    source: str
    loaded: list[str] = field(default_factory=list)
    reinitialised: dict[str, str] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    predictor: str = "re-initialised"
    class_rows: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [
            f"model.weights: loaded {len(self.loaded)} tensors from {self.source}, "
            f"re-initialised {len(self.reinitialised)}, ignored {len(self.ignored)}",
            f"  class predictor: {self.predictor}",
        ]
        if self.class_rows:
            pairs = ", ".join(f"{s} -> {t}" for s, t in self.class_rows)
            lines.append(f"  class rows copied (and background): {pairs}")
        if self.reinitialised:
            shown = [f"{k} ({why})" for k, why in self.reinitialised.items()]
            lines.append("  re-initialised: " + _some(shown, 8))
        if self.ignored:
            lines.append("  ignored (not in the model): " + _some(self.ignored, 8))
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _some(items: Sequence[str], n: int = _SHOWN) -> str:
    more = f", ... and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def _counted(key: str) -> bool:
    # BatchNorm's step counter means nothing to FrozenBN/GN and converted checkpoints drop it
    return not key.endswith("num_batches_tracked")


def read_detector_weights(
    cfg: Config, target_names: Sequence[str] | None
) -> DetectorWeights | None:
    """Read `cfg.model.weights` and resolve `cfg.model.class_map`, before any model is built.

    Returns None when `model.weights` is null. Raises FileNotFoundError (missing file),
    ValueError (not a resdet checkpoint) or ConfigError (a class map that does not fit).
    """
    m = cfg.model
    if m.weights is None:
        if m.class_map:
            raise ConfigError(
                "model.class_map is set but model.weights is null: the class map says which rows "
                "of a detector checkpoint's class predictor to copy; set model.weights to a "
                "detector checkpoint, or remove model.class_map"
            )
        return None
    from .zoo import resolve_weights  # a published name: fetched and converted on first use

    try:
        ckpt = read_checkpoint(resolve_weights(m.weights))
    except FileNotFoundError as e:
        raise FileNotFoundError(f"model.weights: {e}") from None
    except ValueError as e:
        raise ValueError(f"model.weights: {e}") from None
    names = ckpt.get("class_names")
    weights = DetectorWeights(
        path=str(m.weights),
        state=ckpt["model"],
        source_names=list(names) if names is not None else None,
        target_names=list(target_names) if target_names is not None else None,
        source_config=ckpt.get("config") or {},
    )
    if m.class_map:
        weights.rows = _class_map_rows(m.class_map, weights)
    return weights


def _index(name: str, names: list[str], what: str, key: str) -> int:
    """Row (1..K) of class `name` in `names`, or a ConfigError listing the known names."""
    if names.count(name) == 1:
        return names.index(name) + 1
    if name in names:
        raise ConfigError(
            f"model.class_map: {key} {name!r} names {names.count(name)} classes of {what}; "
            "it cannot say which row to copy"
        )
    known = list(dict.fromkeys(names))
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(
        f"model.class_map: {key} {name!r} is not a class of {what}.{hint} Its classes: "
        + ", ".join(known)
    )


def _class_map_rows(class_map: dict[str, str], w: DetectorWeights) -> dict[int, int]:
    """{target row: source row} of `class_map`, every name checked."""
    if w.source_names is None:
        raise ConfigError(
            f"model.class_map needs the class names of model.weights={w.path}, which has none; "
            "remove model.class_map (the class predictor is then re-initialised)"
        )
    if w.target_names is None:
        raise ConfigError(
            "model.class_map needs the training set's class names: build_model(cfg, "
            "class_names=...) was called without them"
        )
    rows: dict[int, int] = {}
    given_by: dict[int, str] = {}
    for source, target in class_map.items():
        src = _index(source, w.source_names, f"model.weights={w.path}", "source class")
        tgt = _index(target, w.target_names, "the training set", "target class")
        if tgt in rows:
            raise ConfigError(
                f"model.class_map: target class {target!r} is given by two source classes, "
                f"{given_by[tgt]!r} and {source!r}; map one of them"
            )
        rows[tgt] = src
        given_by[tgt] = source
    return rows


def _design(config: dict) -> str:
    names = (_setting(config, f"model.{part}.name") for part in ("backbone", "neck"))
    return "{} with neck {}".format(*(n if n is not _MISSING else "?" for n in names))


def _check_architecture(
    own: dict[str, torch.Tensor], src: dict[str, torch.Tensor], w: DetectorWeights, design: str
) -> None:
    """Refuse a checkpoint whose backbone/neck tensors differ from the model's in name or shape."""
    keys = sorted({k for k in (*own, *src) if k.startswith(ARCHITECTURE) and _counted(k)})
    diffs = []
    for k in keys:
        if k not in src:
            diffs.append(f"{k} (not in the checkpoint)")
        elif k not in own:
            diffs.append(f"{k} (not in the model)")
        elif src[k].shape != own[k].shape:
            diffs.append(
                f"{k} ({tuple(src[k].shape)} in the checkpoint, {tuple(own[k].shape)} in the model)"
            )
    if diffs:
        raise ConfigError(
            f"model.weights={w.path}: the checkpoint's backbone does not fit the model "
            f"({len(diffs)} tensor(s) differ: {_some(diffs)}). The checkpoint is "
            f"{_design(w.source_config)}, the config {design}: start from a checkpoint of the "
            "same backbone and neck, or use model.backbone.weights for ImageNet backbone weights"
        )


def _rows(rows: list[int], per_class: int) -> torch.Tensor:
    """Tensor rows of classes `rows`: row r itself (cls_score) or 4r..4r+3 (bbox_pred)."""
    r = torch.tensor(rows, dtype=torch.long)
    return (r[:, None] * per_class + torch.arange(per_class)).flatten()


def _predictor_state(
    own: dict[str, torch.Tensor],
    src: dict[str, torch.Tensor],
    w: DetectorWeights,
    report: FinetuneReport,
) -> dict[str, torch.Tensor]:
    """The class predictor's tensors to load (whole, row by row, or none), said in `report`."""
    keys = [k for k in own if k.startswith(PREDICTOR)]
    weight = PREDICTOR[0] + "weight"
    if any(k not in src for k in keys):
        return _reinitialise(keys, "not in the checkpoint", report)
    if src[weight].shape[1] != own[weight].shape[1]:
        widths = src[weight].shape[1], own[weight].shape[1]
        why = "box head width {} in the checkpoint, {} here".format(*widths)
        return _reinitialise(keys, why, report)
    k_src, k_tgt = src[weight].shape[0] - 1, own[weight].shape[0] - 1
    if w.source_names is not None and len(w.source_names) != k_src:
        raise ValueError(
            f"model.weights={w.path}: {len(w.source_names)} class names but a class predictor "
            f"of {k_src} classes; the checkpoint is inconsistent"
        )
    if w.rows is not None:
        return _copy_rows(keys, own, src, w, report)
    if k_src != k_tgt:
        report.notes += _class_map_hint(w, k_src, k_tgt)
        return _reinitialise(keys, f"{k_src} classes in the checkpoint, {k_tgt} here", report)
    report.predictor = "copied"
    if w.source_names is None or w.target_names is None:
        report.predictor = "copied by position (class names unknown)"
    elif w.source_names != w.target_names:
        report.predictor = "copied by position (class names differ)"
        report.notes.append(
            "the checkpoint's classes (" + ", ".join(w.source_names) + ") are not the training "
            "set's (" + ", ".join(w.target_names) + "): the predictor was copied by position; "
            "set model.class_map to choose which rows to copy"
        )
    return {k: src[k] for k in keys}


def _reinitialise(keys: list[str], why: str, report: FinetuneReport) -> dict[str, torch.Tensor]:
    report.predictor = f"re-initialised ({why})"
    report.reinitialised.update(dict.fromkeys(keys, why))
    return {}


def _copy_rows(
    keys: list[str],
    own: dict[str, torch.Tensor],
    src: dict[str, torch.Tensor],
    w: DetectorWeights,
    report: FinetuneReport,
) -> dict[str, torch.Tensor]:
    """The predictor at its initialisation but for background and the mapped classes' rows."""
    assert w.rows is not None and w.source_names is not None and w.target_names is not None
    targets = [0, *w.rows]  # background first
    sources = [0, *w.rows.values()]
    out = {}
    for k in keys:
        per_class = 4 if k.startswith(PREDICTOR[1]) else 1
        t = own[k].clone()
        t[_rows(targets, per_class)] = src[k][_rows(sources, per_class)].to(t.dtype)
        out[k] = t
    report.class_rows = [(w.source_names[s - 1], w.target_names[t - 1]) for t, s in w.rows.items()]
    fresh = [n for i, n in enumerate(w.target_names, 1) if i not in w.rows]
    report.predictor = f"rows copied by model.class_map ({len(w.rows)} classes and background)"
    if fresh:
        report.predictor += "; rows re-initialised for " + ", ".join(fresh)
    return out


def _class_map_hint(w: DetectorWeights, k_src: int, k_tgt: int) -> list[str]:
    """A note suggesting model.class_map when the two class lists share names."""
    if w.source_names is None or w.target_names is None:
        return []
    common = [n for n in w.target_names if w.source_names.count(n) == 1]
    if not common:
        return []
    example = ", ".join(f"{n}: {n}" for n in common)
    return [
        f"{len(common)} of the training set's {k_tgt} classes are among the checkpoint's {k_src}; "
        f"to start their rows from the trained ones, set model.class_map: {{{example}}}"
    ]


def apply_detector_weights(
    model: nn.Module, weights: DetectorWeights, cfg: Config
) -> FinetuneReport:
    """Load every tensor of `weights` whose name and shape match into `model` (built from
    `cfg`); the report says what was loaded, re-initialised and ignored."""
    own = model.state_dict()
    src = {k: v for k, v in weights.state.items() if _counted(k)}
    _check_architecture(own, src, weights, _design(to_dict(cfg)))
    report = FinetuneReport(weights.path)
    to_load = {}
    for key, value in own.items():
        if not _counted(key) or key.startswith(PREDICTOR):
            continue
        if key not in src:
            report.reinitialised[key] = "not in the checkpoint"
        elif src[key].shape != value.shape:
            # A head of another shape (anchor aspect ratios, fc_dim, pooler resolution) is
            # re-initialised, not refused: changing the heads is part of fine-tuning to new
            # data, as Detectron2's checkpointer allows; the report and a warning name each
            # tensor, and another backbone (another architecture) was refused above.
            report.reinitialised[key] = (
                f"shape {tuple(src[key].shape)} in the checkpoint, {tuple(value.shape)} here"
            )
        else:
            to_load[key] = src[key]
    predictor = _predictor_state(own, src, weights, report)
    model.load_state_dict({**to_load, **predictor}, strict=False)
    report.loaded = sorted(to_load) + (sorted(predictor) if not report.class_rows else [])
    report.ignored = sorted(k for k in src if k not in own)
    if cfg.model.backbone.weights:
        report.notes.insert(
            0,
            f"model.backbone.weights={cfg.model.backbone.weights} was not read: every backbone "
            "tensor comes from model.weights",
        )
    report.notes += _computation_notes(weights.source_config, to_dict(cfg))
    _log(report)
    return report


def _setting(config: dict, key: str) -> object:
    """The value of dotted `key` in a config dict, or _MISSING."""
    for part in key.split("."):
        if not isinstance(config, dict) or part not in config:
            return _MISSING
        config = config[part]
    return config


def _computation_notes(source: dict, target: dict) -> list[str]:
    """Settings that change what the loaded weights compute, though no tensor shape shows it."""
    changed = [
        f"{k}={_setting(source, k)!r} (here {_setting(target, k)!r})"
        for k in SAME_COMPUTATION
        if _setting(source, k) not in (_setting(target, k), _MISSING)
    ]
    if not changed:
        return []
    return [
        "the checkpoint was trained with "
        + ", ".join(changed)
        + ": its weights expect those settings; set them as in the checkpoint unless the change "
        "is intended"
    ]


def _log(report: FinetuneReport) -> None:
    logger.info("%s", report)
    reshaped = [
        f"{k} ({why})" for k, why in report.reinitialised.items() if why.startswith("shape")
    ]
    if reshaped:
        logger.warning(
            "model.weights: %d tensor(s) of another shape re-initialised: %s",
            len(reshaped),
            _some(reshaped),
        )
    if report.predictor.endswith("(class names differ)"):
        logger.warning("model.weights: class predictor %s", report.predictor)
    for note in report.notes:
        if note.startswith("the checkpoint was trained with"):
            logger.warning("model.weights: %s", note)
