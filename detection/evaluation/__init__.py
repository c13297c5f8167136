"""COCO evaluation (pycocotools), inference over data loaders and image files, comparison tables,
diagnostics (per-class precision / recall, confusions, PR curves: analyze_detections).

Metrics are in percent; a metric is None (null in JSON) where COCOeval has no ground truth to
average over (an empty area range, or a category without boxes in the evaluated images).
"""

# write_json stays importable from here, where it lived before detection.utils
from ..utils.io import write_json
from .coco import coco_evaluate, detections_to_coco, format_table, load_coco
from .compare import (
    comparison_rows,
    find_metrics,
    format_csv,
    format_markdown,
    load_entry,
    plot_comparison,
)
from .diagnostics import analyze_detections
from .diagnostics_report import format_analysis, write_analysis
from .evaluator import (
    check_analyze,
    check_classes,
    default_output_dir,
    evaluate_checkpoint,
    evaluate_model,
    load_checkpoint_model,
    run_evaluation,
    training_evaluator,
)
from .inference import infer_shard, inference_on_dataset, merge_by_image
from .predict import list_images, predict_images

__all__ = [
    "analyze_detections",
    "check_analyze",
    "check_classes",
    "coco_evaluate",
    "comparison_rows",
    "default_output_dir",
    "detections_to_coco",
    "evaluate_checkpoint",
    "evaluate_model",
    "training_evaluator",
    "find_metrics",
    "format_csv",
    "format_analysis",
    "format_markdown",
    "format_table",
    "infer_shard",
    "inference_on_dataset",
    "list_images",
    "load_checkpoint_model",
    "load_coco",
    "load_entry",
    "merge_by_image",
    "plot_comparison",
    "predict_images",
    "run_evaluation",
    "write_analysis",
    "write_json",
]
