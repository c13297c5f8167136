"""The config schema: every field, its type, its default and a one-line description.

Defaults are the ResNet paper's Faster R-CNN C4 setup on COCO (with Detectron2's 1x schedule);
files under configs/ change what differs. Each field's `doc` is what the README and
`tools/print_config.py --help-fields` show.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from backbones import RegisteredNames
from backbones.norm import NORMS
from backbones.resnet import SHORTCUTS


def opt(default: Any, doc: str, choices: Sequence | None = None) -> Any:
    """A schema field: default, one-line description and (for enumerations) allowed values."""
    # a list is copied; another sequence (the registry's live RegisteredNames) is kept
    kept = tuple(choices) if isinstance(choices, list) else choices
    meta = {"doc": doc, "choices": kept or None}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


def section(factory: Any, doc: str) -> Any:
    """A nested section: its dataclass (or a function returning one) and a description."""
    return field(default_factory=factory, metadata={"doc": doc, "choices": None})


@dataclass
class BackboneConfig:
    """model.backbone: the feature extractor and how much of it trains."""

    name: str = opt(
        "resnet50", "backbone network (yours: backbones.register_backbone)", RegisteredNames()
    )
    weights: str | None = opt(
        None,
        "ImageNet weights: path to a torchvision .pth, or a torchvision weights name such as "
        "IMAGENET1K_V1 (downloads); null = random initialisation; not read when model.weights "
        "names a detector checkpoint",
    )
    shortcut: str = opt("B", "ResNet shortcut option (paper sec. 3.3); none = plain", SHORTCUTS)
    norm: str = opt("FrozenBN", "normalization layers of the backbone", NORMS)
    freeze_at: int = opt(2, "freeze the stem (1) and res2..res<k> (k >= 2); 0 trains everything")
    stride_in_1x1: bool = opt(False, "stride on the first 1x1 of a bottleneck (MSRA/Caffe layout)")
    zero_init_residual: bool = opt(
        False,
        "start every residual branch at zero (last norm's scale 0), for training a ResNet from "
        "scratch with BN or GN; pretrained weights replace it",
    )


@dataclass
class NeckConfig:
    """model.neck: the optional feature pyramid between backbone and heads."""

    name: str = opt("none", "feature neck: none (C4 / VGG-16 single map) or fpn", ("none", "fpn"))
    out_channels: int = opt(256, "channels of every FPN level")


@dataclass
class AnchorConfig:
    """model.anchors: the anchor sizes and aspect ratios per feature level."""

    sizes: list[list[int]] = opt(
        [[32, 64, 128, 256, 512]], "anchor sizes in pixels, one list per feature level"
    )
    aspect_ratios: list[float] = opt([0.5, 1.0, 2.0], "anchor aspect ratios (height / width)")


@dataclass
class RPNConfig:
    """model.rpn: the region proposal network's sampling, loss and NMS."""

    pre_nms_topk_train: int = opt(12000, "proposals kept before NMS in training (FPN: per level)")
    post_nms_topk_train: int = opt(2000, "proposals kept after NMS in training, per image")
    pre_nms_topk_test: int = opt(6000, "proposals kept before NMS at test time (per level for FPN)")
    post_nms_topk_test: int = opt(1000, "proposals kept after NMS at test time, per image")
    nms_thresh: float = opt(0.7, "IoU threshold of the proposal NMS")
    min_box_size: float = opt(1e-3, "proposals smaller than this (pixels) are removed")
    batch_size_per_image: int = opt(256, "anchors sampled per image for the RPN loss")
    positive_fraction: float = opt(0.5, "largest fraction of positives among sampled anchors")
    iou_thresholds: list[float] = opt(
        [0.3, 0.7], "anchors below the first IoU are negative, at or above the second positive"
    )
    smooth_l1_beta: float = opt(1.0 / 9, "smooth-L1 beta of the box loss (0 = L1)")


@dataclass
class RoIHeadsConfig:
    """model.roi_heads: RoI pooling, the box head and its predictions."""

    num_classes: int | None = opt(
        None,
        "object classes, background excluded; null = the training set's categories (said at "
        "start; a config that names another count than the data's is an error)",
    )
    batch_size_per_image: int = opt(512, "RoIs sampled per image in training")
    positive_fraction: float = opt(0.25, "largest fraction of foreground RoIs")
    iou_threshold: float = opt(0.5, "IoU with a ground-truth box at which a RoI is foreground")
    pooler_type: str = opt("roi_pool", "RoI feature extraction", ("roi_pool", "roi_align"))
    pooler_resolution: int = opt(14, "output size of the RoI pooler (C4: 14, then res5 halves it)")
    pooler_sampling_ratio: int = opt(0, "roi_align sampling points per bin (0 = adaptive)")
    pooler_aligned: bool = opt(False, "roi_align with the half-pixel correction")
    box_head: str = opt(
        "res5",
        "per-region head: res5 (C4), 2fc (FPN), vgg_fc (VGG-16 fc6/fc7)",
        ("res5", "2fc", "vgg_fc"),
    )
    fc_dim: int = opt(1024, "width of the 2fc head's layers")
    box_reg_weights: list[float] = opt([10.0, 10.0, 5.0, 5.0], "box coder weights (dx, dy, dw, dh)")
    smooth_l1_beta: float = opt(1.0 / 9, "smooth-L1 beta of the box loss (0 = L1)")
    score_thresh: float = opt(0.05, "detections scoring below this are dropped")
    nms_thresh: float = opt(0.5, "IoU threshold of the per-class NMS")


@dataclass
class ModelConfig:
    """model: the detector."""

    backbone: BackboneConfig = section(BackboneConfig, "the feature extractor")
    neck: NeckConfig = section(NeckConfig, "optional feature pyramid")
    anchors: AnchorConfig = section(AnchorConfig, "anchor generator")
    rpn: RPNConfig = section(RPNConfig, "region proposal network")
    roi_heads: RoIHeadsConfig = section(RoIHeadsConfig, "RoI pooling, box head and predictor")
    input_format: str = opt("RGB", "channel order the backbone's weights expect", ("RGB", "BGR"))
    pixel_mean: list[float] = opt([0.485, 0.456, 0.406], "per-channel mean (inputs in [0, 1])")
    pixel_std: list[float] = opt([0.229, 0.224, 0.225], "per-channel std (inputs in [0, 1])")
    weights: str | None = opt(
        None,
        "a detector checkpoint to start from: a file, or published weights by name (e.g. "
        "fasterrcnn_resnet50_fpn_coco; `resdet weights` lists them): every tensor whose name and "
        "shape match is loaded, the class predictor is re-initialised when the classes differ "
        "(see class_map); null = none",
    )
    class_map: dict[str, str] = opt(
        {},
        "with model.weights: source class name -> target class name; the class predictor's "
        "rows of these classes are copied from the checkpoint instead of re-initialised; a "
        "child config's map adds to its base's, null clears it",
    )
    compile: bool = opt(
        False,
        "torch.compile the backbone for evaluation and inference (eager, with a warning, where "
        "it cannot compile)",
    )


@dataclass
class InputConfig:
    """input: image sizes and augmentation."""

    min_size_train: list[int] = opt([800], "shortest side in training, one drawn per image")
    max_size_train: int = opt(1333, "longest side cap in training")
    min_size_test: int = opt(800, "shortest side at test time")
    max_size_test: int = opt(1333, "longest side cap at test time")
    flip: bool = opt(True, "random horizontal flip in training")
    vflip: bool = opt(
        False,
        "random vertical flip in training: for images with no up and down (microscopy, aerial "
        "and satellite photos)",
    )
    photometric: bool = opt(False, "random brightness / contrast / hue jitter in training")


@dataclass
class DatasetConfig:
    """data.train / data.test: a registered name or explicit files."""

    name: str | None = opt(
        None,
        "a registered dataset (see detection.config.datasets), resolved under $RESDET_DATASETS "
        "(default ./datasets); with annotations/images, a free-text label for them (otherwise "
        "a dataset given by files is labelled FOLDER/STEM of its annotation file)",
    )
    annotations: str | None = opt(None, "COCO-format json; replaces the registered name's file")
    images: str | None = opt(None, "image folder; replaces the registered name's folder")


def _train_set() -> DatasetConfig:
    return DatasetConfig(name="coco_2017_train")


def _test_set() -> DatasetConfig:
    return DatasetConfig(name="coco_2017_val")


@dataclass
class DataConfig:
    """data: the datasets and how they are loaded."""

    train: DatasetConfig = section(_train_set, "training set")
    test: DatasetConfig = section(_test_set, "evaluation set")
    num_workers: int = opt(4, "dataloader worker processes")
    filter_empty: bool = opt(True, "drop training images without annotations")
    aspect_ratio_grouping: bool = opt(True, "batch landscape and portrait images separately")
    skip_bad_images: bool = opt(
        False, "skip unreadable images and invalid annotations with a counted warning"
    )


@dataclass
class SolverConfig:
    """solver: optimizer, schedule, checkpoints and training precision."""

    ims_per_batch: int = opt(16, "images per iteration over all GPUs / processes")
    base_lr: float = opt(0.02, "learning rate for ims_per_batch (linear scaling rule)")
    momentum: float = opt(0.9, "SGD momentum")
    weight_decay: float = opt(1e-4, "L2 weight decay")
    weight_decay_norm: float = opt(0.0, "weight decay of normalization weights and biases")
    weight_decay_bias: float | None = opt(None, "weight decay of biases; null = weight_decay")
    warmup_iters: int = opt(1000, "iterations of linear warmup")
    warmup_factor: float = opt(0.001, "learning-rate factor at the first warmup iteration")
    steps: list[int] = opt([60000, 80000], "iterations where the learning rate is scaled by gamma")
    gamma: float = opt(0.1, "learning-rate decay factor")
    lr_schedule: str = opt(
        "step",
        "learning-rate decay after the warmup: step (x gamma at each of solver.steps), cosine or "
        "linear (from base_lr down to 0 at solver.max_iter; solver.steps and gamma unused)",
        ("step", "cosine", "linear"),
    )
    max_iter: int = opt(90000, "total training iterations")
    max_epochs: float | None = opt(
        None,
        "train this many passes over the training set instead: sets max_iter (ceil(images / "
        "ims_per_batch) iterations per epoch) and steps (from step_epochs); null = max_iter",
    )
    step_epochs: list[float] | None = opt(
        None,
        "with max_epochs: epochs where the learning rate is scaled by gamma; null = where "
        "solver.steps fall in solver.max_iter (2/3 and 8/9 for the 1x schedule)",
    )
    max_seconds: float | None = opt(
        None,
        "a time budget for the training loop: after a timed start (5% of the budget, at most "
        "2 minutes), max_iter and steps are scaled to the iterations that fit in this many "
        "seconds (the schedule's shape and warmup kept), and re-timed ten times over the rest "
        "of the run; null = max_iter (or max_epochs)",
    )
    checkpoint_period: int = opt(5000, "iterations between checkpoints")
    log_period: int = opt(20, "iterations between metrics.jsonl records and progress updates")
    keep_checkpoints: int = opt(3, "periodic checkpoints kept on disk (model_final.pth always)")
    amp: str = opt(
        "auto",
        "mixed precision of training: auto = bf16 where the hardware runs it natively (a GPU "
        "with bf16, a CPU with AMX or AVX512_BF16), off (fp32) elsewhere; off, bf16 or fp16 "
        "(CUDA) force one",
        ("auto", "off", "bf16", "fp16"),
    )
    memory_format: str = opt(
        "auto",
        "layout of training feature maps: channels_last (NHWC), contiguous (NCHW), or auto = "
        "channels_last when training runs in bf16 / fp16 (what solver.amp resolves to), "
        "contiguous in fp32",
        ("auto", "channels_last", "contiguous"),
    )
    clip_grad_norm: float | None = opt(None, "clip the gradient norm to this value; null = off")
    accumulate: int = opt(
        1,
        "forward/backward passes per optimizer step: each pass takes ims_per_batch / accumulate "
        "images (per process), so ims_per_batch stays the batch of the step; the schedule "
        "counts optimizer steps",
    )
    patience: int = opt(
        0,
        "stop training after this many evaluations (test.eval_period > 0) without a new best "
        "test.best_metric; 0 = never stop early",
    )


@dataclass
class EvaluationConfig:
    """test: evaluation and inference."""

    eval_period: int = opt(
        0, "evaluate every N iterations in training; 0 = at the end only, -1 = never"
    )
    detections_per_image: int = opt(100, "most detections kept per image")
    fast_path: bool = opt(
        True,
        "evaluation and inference fold FrozenBN into the convs and run channels_last (same "
        "detections up to float rounding)",
    )
    precision: str = opt(
        "auto",
        "autocast dtype of evaluation and inference: auto = bf16 where the hardware runs it "
        "natively, fp32 elsewhere; fp32, bf16 or fp16 (CUDA) force one",
        ("auto", "fp32", "bf16", "fp16"),
    )
    best_metric: str = opt(
        "AP",
        "bbox metric (higher is better) that picks model_best.pth among the evaluations of a "
        "training run (test.eval_period > 0)",
        ("AP", "AP50", "AP75", "APs", "APm", "APl"),
    )
    analyze: bool = opt(
        False,
        "after the final evaluation of training, also write the diagnostics of "
        "resdet evaluate --analyze (eval/analysis/)",
    )
    report: bool = opt(
        False,
        "also write report.html beside metrics.json (implies analyze): headline and per-class "
        "AP, PR curves, confusion matrix, the worst images drawn; one self-contained page",
    )
    analyze_score_thresh: float = opt(
        0.5, "score threshold of the diagnostics' per-class precision / recall and confusions"
    )
    evaluator: str = opt(
        "pycocotools",
        "COCO evaluation backend: pycocotools (the reference) or faster (faster-coco-eval, "
        "same numbers, quicker)",
        ("pycocotools", "faster"),
    )


@dataclass
class DashboardConfig:
    """dashboards: where training metrics go besides metrics.jsonl (rank 0)."""

    tensorboard: bool = opt(
        True,
        "TensorBoard event files in OUTPUT/tensorboard where the package is installed (pip install "
        "'resdet[tensorboard]'); without it, one notice says so",
    )
    wandb: bool = opt(
        False,
        "also log to Weights & Biases (pip install 'resdet[wandb]'; WANDB_MODE=offline keeps the "
        "run on disk); the run is named after output_dir and a resumed run continues it",
    )
    wandb_project: str = opt("resdet", "the Weights & Biases project of dashboards.wandb")


@dataclass
class Config:
    """The whole experiment; every field is documented in field_docs()."""

    model: ModelConfig = section(ModelConfig, "the detector")
    input: InputConfig = section(InputConfig, "input sizes and augmentation")
    data: DataConfig = section(DataConfig, "datasets and loading")
    solver: SolverConfig = section(SolverConfig, "optimizer and schedule")
    test: EvaluationConfig = section(EvaluationConfig, "evaluation")
    dashboards: DashboardConfig = section(DashboardConfig, "TensorBoard and Weights & Biases")
    output_dir: str = opt("output", "where logs, checkpoints and metrics are written")
    seed: int = opt(0, "random seed of initialisation, sampling and augmentation")
    imports: list[str] = opt(
        [],
        "Python modules imported before the config is checked (e.g. ones registering a backbone): "
        "module names, or .py paths relative to this config file",
    )
