"""Evaluating a detector on the config's test set: metrics.json and detections.json.

metrics.json holds {"bbox": {AP, AP50, AP75, APs, APm, APl, per_category}, "checkpoint",
"config", "dataset", "num_images", "inference"}; detections.json the COCO results (the
dataset's category ids, xywh boxes in original image pixels). Values are in percent; null
where COCOeval has no ground truth to average over (see detection.evaluation.coco). With
`analyze` (a score threshold), the diagnostics of detection.evaluation.diagnostics go to
analysis/ next to them, and metrics.json names that folder ("analysis": {dir, score_thresh});
with test.report also report.html, one page to look at (detection.evaluation.html_report).
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import nn

from ..config import Config, to_dict
from ..config.datasets import dataset_label
from ..modeling.fast import inference_options, prepare_for_inference
from ..predictor import Predictor
from ..utils.distributed import broadcast_from_main, gather_to_main, get_rank, get_world_size
from ..utils.io import write_json
from .coco import coco_evaluate, load_coco
from .diagnostics import analyze_detections
from .diagnostics_report import write_analysis
from .html_report import write_report
from .inference import infer_shard, merge_by_image, sorted_results, unwrap

logger = logging.getLogger(__name__)


def default_output_dir(cfg: Config) -> Path:
    """Where tools/evaluate.py writes without --output-dir: <cfg.output_dir>/eval."""
    return Path(cfg.output_dir) / "eval"


def load_checkpoint_model(
    checkpoint: str | os.PathLike,
    config: str | os.PathLike | None = None,
    overrides: Iterable[str] = (),
    *,
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, Config]:
    """(model in eval mode on the fast inference path of its config's test.fast_path /
    test.precision / model.compile, its config): the checkpoint's embedded config plus
    `overrides`, or, with `config`, that file plus `overrides` in its place."""
    predictor = Predictor.from_checkpoint(checkpoint, overrides, device=device, config=config)
    return predictor.model, predictor.cfg


def check_classes(model: nn.Module, cfg: Config, dataset) -> None:
    """The model's classes must be the test set's (same count; a name mismatch warns)."""
    num_classes = cfg.model.roi_heads.num_classes
    if num_classes != len(dataset.class_names):
        raise ValueError(
            f"the model predicts {num_classes} classes (model.roi_heads.num_classes) but the "
            f"test set {dataset.annotations_path} has {len(dataset.class_names)} categories; "
            "evaluate on the dataset the model was trained for (data.test.annotations / "
            "data.test.images)"
        )
    names = getattr(unwrap(model), "class_names", None)
    if names and list(names) != list(dataset.class_names):
        logger.warning(
            "the model's class names %s differ from the test set's %s; labels are matched by "
            "position (label k = the k-th category in id order)",
            list(names)[:5],
            list(dataset.class_names)[:5],
        )


def _evaluate_merged(
    merged: Mapping[int, list[dict[str, Any]]],
    results: list[dict[str, Any]],
    cfg: Config,
    dataset,
    summary: TextIO | None,
) -> dict[str, Any]:
    """COCO metrics of the gathered `results` (`merged` by image), on the images they cover."""
    labels = sorted(dataset.label_to_category_id)
    bbox = coco_evaluate(
        dataset.annotations_path,
        results,
        class_names=[dataset.class_names[label - 1] for label in labels],
        category_ids=[dataset.label_to_category_id[label] for label in labels],
        image_ids=list(merged),
        summary=summary,
        backend=cfg.test.evaluator,
    )
    total = getattr(dataset, "image_ids", None)
    if total is not None and len(merged) < len(total):
        logger.warning(
            "evaluated %d of the %d test images (only those the loaders yielded)",
            len(merged),
            len(total),
        )
    return bbox


def _metrics_record(
    bbox: dict[str, Any],
    cfg: Config,
    dataset,
    num_images: int,
    parts: Sequence[tuple[Any, int, float]],
    checkpoint: str | os.PathLike | None,
) -> dict[str, Any]:
    """The content of metrics.json; `parts` are the processes' (results, images, seconds)."""
    wall = max(p[2] for p in parts)
    spec = cfg.data.test
    return {
        "bbox": bbox,
        "checkpoint": str(checkpoint) if checkpoint is not None else None,
        "config": to_dict(cfg),
        "dataset": {
            "name": dataset_label(spec),
            "annotations": str(dataset.annotations_path),
            "images": str(getattr(dataset, "images_dir", spec.images)),
        },
        "num_images": num_images,
        "inference": {
            "processes": len(parts),
            "seconds": wall,
            "images_per_second": sum(p[1] for p in parts) / wall if wall > 0 else None,
        },
    }


def run_evaluation(
    model: nn.Module,
    cfg: Config,
    output_dir: str | os.PathLike | None,
    dataset,
    loader: Iterable,
    *,
    device: str | torch.device | None = None,
    checkpoint: str | os.PathLike | None = None,
    progress: bool = True,
    summary: TextIO | None = None,
    analyze: float | None = None,
) -> dict[str, Any]:
    """Infer `loader` (this process's shard of `dataset`), gather on rank 0, evaluate with
    pycocotools and, when `output_dir` is given, write metrics.json and detections.json there
    (rank 0 only). Every rank returns the same metrics record (the content of metrics.json).

    `dataset` needs `annotations_path`, `class_names` and `label_to_category_id` (a
    detection.data.COCODataset has them). Only the images the loaders yielded are evaluated.
    `analyze`: a score threshold in [0, 1] to also write the diagnostics (per-class precision /
    recall, confusions, PR curves, worst images) to <output_dir>/analysis/; None for none.
    """
    check_analyze(analyze, output_dir)
    check_classes(model, cfg, dataset)
    start = time.perf_counter()
    per_image = infer_shard(
        model,
        loader,
        label_to_category_id=dataset.label_to_category_id,
        device=device,
        progress=progress and get_rank() == 0,
    )
    parts = gather_to_main((per_image, len(per_image), time.perf_counter() - start))
    record = None
    if parts is not None:
        merged = merge_by_image(p[0] for p in parts)
        results = sorted_results(merged)
        bbox = _evaluate_merged(merged, results, cfg, dataset, summary)
        record = _metrics_record(bbox, cfg, dataset, len(merged), parts, checkpoint)
        module = unwrap(model)
        record["inference"]["precision"] = getattr(module, "precision", "fp32")
        record["inference"]["channels_last"] = bool(getattr(module, "channels_last", False))
        if output_dir is not None:
            _write_outputs(Path(output_dir), record, results, list(merged), cfg, dataset, analyze)
    return broadcast_from_main(record)


def check_analyze(analyze: float | None, output_dir: str | os.PathLike | None) -> None:
    """The diagnostics' score threshold must be in [0, 1], and they need a folder to go to."""
    if analyze is None:
        return
    if not 0.0 <= analyze <= 1.0:
        raise ValueError(
            f"the score threshold of the diagnostics must be in [0, 1], got {analyze} "
            "(test.analyze_score_thresh, or --score-thresh of resdet evaluate)"
        )
    if output_dir is None:
        raise ValueError("the diagnostics (analyze) are written to files: give an output_dir")


def _write_outputs(
    out: Path,
    record: dict[str, Any],
    results: list[dict[str, Any]],
    image_ids: list[int],
    cfg: Config,
    dataset,
    analyze: float | None,
) -> None:
    """detections.json and metrics.json, then, with `analyze`, the diagnostics in
    out/analysis/ and metrics.json again naming them (the metrics are safe on disk first)."""
    write_json(out / "detections.json", results)
    write_json(out / "metrics.json", record)
    logger.info("wrote %s and %s", out / "metrics.json", out / "detections.json")
    if analyze is None:
        return
    labels = sorted(dataset.label_to_category_id)
    analysis = analyze_detections(
        dataset.annotations_path,
        results,
        score_thresh=analyze,
        image_ids=image_ids,
        class_names=[dataset.class_names[label - 1] for label in labels],
        category_ids=[dataset.label_to_category_id[label] for label in labels],
        backend=cfg.test.evaluator,
    )
    written = write_analysis(analysis, out / "analysis")
    record["analysis"] = {"dir": str(written["dir"]), "score_thresh": float(analyze)}
    if cfg.test.report:
        report = write_report(
            out / "report.html",
            analysis,
            record["bbox"],
            load_coco(dataset.annotations_path).dataset["annotations"],
            results,
            getattr(dataset, "images_dir", None),
            f"{Path(cfg.output_dir).name}: evaluation on {record['dataset']['name']}",
        )
        record["report"] = str(report)
        logger.info("wrote the evaluation report %s", report)
    write_json(out / "metrics.json", record)
    logger.info(
        "wrote the diagnostics (score >= %g) to %s: %s",
        analyze,
        written["dir"],
        ", ".join(written["files"]),
    )


def evaluate_model(
    model: nn.Module,
    cfg: Config,
    output_dir: str | os.PathLike | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    *,
    device: str | torch.device | None = None,
    batch_size: int = 1,
    dataset=None,
    checkpoint: str | os.PathLike | None = None,
    progress: bool = True,
    summary: TextIO | None = None,
    analyze: float | None = None,
) -> dict[str, Any]:
    """Evaluate `model` on cfg's test set (built with detection.data unless `dataset` is given,
    e.g. kept by a training loop across periodic evaluations), each process its shard; rank and
    world size default to torch.distributed's. Returns the metrics record on every rank; writes
    metrics.json / detections.json to `output_dir` when given (rank 0), and the diagnostics at
    score threshold `analyze` to <output_dir>/analysis/ when that is not None."""
    from ..data import build_dataset, build_test_loader  # data imports albumentations: lazily

    check_analyze(analyze, output_dir)

    rank = get_rank() if rank is None else rank
    world_size = get_world_size() if world_size is None else world_size
    if world_size != get_world_size():
        raise ValueError(
            f"world_size={world_size} but torch.distributed has {get_world_size()} process(es); "
            "initialize the process group (torch.distributed.init_process_group) first"
        )
    if dataset is None:
        dataset = build_dataset(cfg, "test")
    loader = build_test_loader(
        cfg, rank=rank, world_size=world_size, batch_size=batch_size, dataset=dataset
    )
    return run_evaluation(
        model,
        cfg,
        output_dir,
        dataset,
        loader,
        device=device,
        checkpoint=checkpoint,
        progress=progress,
        summary=summary,
        analyze=analyze,
    )


def evaluate_checkpoint(
    checkpoint: str | os.PathLike,
    *,
    config: str | os.PathLike | None = None,
    overrides: Iterable[str] = (),
    output_dir: str | os.PathLike | Callable[[Config], str | os.PathLike] | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    summary: TextIO | None = None,
    show_config: Callable[[Config], None] | None = None,
    analyze: bool | None = None,
) -> dict[str, Any]:
    """Load a checkpoint (see load_checkpoint_model) and evaluate it on its config's test set.

    Args:
        config, overrides: the config to evaluate with, as load_checkpoint_model takes them.
        output_dir: where metrics.json and detections.json go: a folder, a function of the
            resolved config that names one (e.g. default_output_dir), or None to write nothing.
        show_config: called with the resolved config before inference starts (tools print it).
        analyze: also write the diagnostics at test.analyze_score_thresh to
            <output_dir>/analysis/; None: when the resolved config's test.analyze is true.

    Returns:
        The metrics record (the content of metrics.json), on every rank.
    """
    model, cfg = load_checkpoint_model(checkpoint, config, overrides, device=device)
    if show_config is not None:
        show_config(cfg)
    if callable(output_dir):
        output_dir = output_dir(cfg)
    if analyze is None:
        analyze = (cfg.test.analyze or cfg.test.report) and output_dir is not None
    return evaluate_model(
        model,
        cfg,
        output_dir,
        device=device,
        checkpoint=checkpoint,
        progress=progress,
        summary=summary,
        analyze=cfg.test.analyze_score_thresh if analyze else None,
    )


def training_evaluator(cfg: Config, rank: int | None = None, world_size: int | None = None):
    """The trainer's evaluation hook `evaluate(model, iteration, final=None)`: periodic
    evaluations in memory, the final one written to <output_dir>/eval (metrics.json,
    detections.json) as the run's result, with the diagnostics in <output_dir>/eval/analysis/
    when test.analyze is true (rank 0). The trainer says which evaluation is the final one
    (a time budget or an early stop ends a run away from solver.max_iter); a caller that does
    not say gets final = iteration >= solver.max_iter."""
    analyze = cfg.test.analyze_score_thresh if (cfg.test.analyze or cfg.test.report) else None
    check_analyze(analyze, default_output_dir(cfg))  # a bad threshold fails before training

    def evaluate(model: nn.Module, iteration: int, final: bool | None = None) -> dict[str, Any]:
        final = iteration >= cfg.solver.max_iter if final is None else final
        # the inference path of tools/evaluate.py (test.fast_path, test.precision), on a copy:
        # folding and casting change the weights, which go on training
        module = unwrap(model)
        options = {**inference_options(cfg), "compile": False}  # not once per evaluation
        # (a deep-copied Parameter leaves its .grad behind)
        frozen = prepare_for_inference(copy.deepcopy(module).requires_grad_(False), **options)
        return evaluate_model(
            frozen,
            cfg,
            output_dir=default_output_dir(cfg) if final else None,
            rank=rank,
            world_size=world_size,
            checkpoint=str(Path(cfg.output_dir) / "model_final.pth") if final else None,
            analyze=analyze if final else None,
        )

    return evaluate
