"""COCO evaluation (pycocotools), inference over data loaders and image files, comparison tables,
diagnostics (per-class precision / recall, confusions, PR curves: analyze_detections).

Metrics are in percent; a metric is None (null in JSON) where COCOeval has no ground truth to
average over (an empty area range, or a category without boxes in the evaluated images).

The public names are imported on first use (PEP 562): a submodule such as
detection.evaluation.compare loads without the evaluator's imports (the detector and torchvision's
ops, which import torch._dynamo), which tools/compare.py never needs.
"""

from __future__ import annotations

from ..utils.lazy import lazy_exports

_PUBLIC = {
    "analyze_detections": ".diagnostics",
    "check_analyze": ".evaluator",
    "check_classes": ".evaluator",
    "coco_evaluate": ".coco",
    "comparison_rows": ".compare",
    "default_output_dir": ".evaluator",
    "detections_to_coco": ".coco",
    "evaluate_checkpoint": ".evaluator",
    "evaluate_model": ".evaluator",
    "find_metrics": ".compare",
    "format_analysis": ".diagnostics_report",
    "format_csv": ".compare",
    "format_markdown": ".compare",
    "format_table": ".coco",
    "infer_shard": ".inference",
    "inference_on_dataset": ".inference",
    "list_images": ".predict",
    "load_checkpoint_model": ".evaluator",
    "load_coco": ".coco",
    "load_entry": ".compare",
    "merge_by_image": ".inference",
    "plot_comparison": ".compare",
    "predict_images": ".predict",
    "run_evaluation": ".evaluator",
    "training_evaluator": ".evaluator",
    "write_analysis": ".diagnostics_report",
    "write_json": "..utils.io",
}

__all__ = sorted(_PUBLIC)

__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
