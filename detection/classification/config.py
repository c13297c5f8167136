"""The classifier's config schema: the paper's ImageNet recipe as the defaults.

He et al. (2016), section 3.4: SGD with momentum 0.9 and weight decay 1e-4, mini-batches of 256
from learning rate 0.1, divided by 10 at fixed points; scale augmentation (shorter side drawn
from [256, 480]), a 224x224 random crop and horizontal flips; at test time a 224 centre crop of
the image resized to 256 (or the 10-crop test). configs/classification/*.yaml change what
differs (the CIFAR recipe of section 4.2, the embedded shapes set). Loading, `_base_` files and
KEY=VALUE overrides are the detection configs' own (detection.config.load_config).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from backbones import RegisteredNames, get_backbone
from backbones.norm import NORMS
from backbones.resnet import SHORTCUTS

from ..config.loader import ConfigError, load_config
from ..config.schema import DashboardConfig, opt, section

DATASET_KINDS = ("imagefolder", "cifar10", "shapes_cls")


@dataclass
class ClassifierModelConfig:
    """model: the network."""

    name: str = opt(
        "resnet50",
        "network (cifar_* take 32x32 images; yours: backbones.register_backbone)",
        RegisteredNames(classifiers=True),
    )
    num_classes: int | None = opt(None, "outputs of the last fc; null = the training set's classes")
    shortcut: str = opt("B", "ResNet shortcut option (paper sec. 3.3); none = plain", SHORTCUTS)
    norm: str = opt("BN", "normalization layers (plain vgg16 has none)", NORMS)
    zero_init_residual: bool = opt(
        False, "start every residual branch at zero (last norm's scale 0)"
    )
    head: str = opt(
        "default",
        "classifier head: default = the paper's (ResNets: global average pool + fc; VGG-16: "
        "pool5, fc6, fc7, fc8); pool_fc = global average pool + fc for VGG-16 too, a light head "
        "when only the convolutional layers are to be transferred",
        ("default", "pool_fc"),
    )
    weights: str | None = opt(
        None,
        "initialise every layer but the last fc from a torchvision .pth, a resdet checkpoint or "
        "a torchvision weights name (ImageNet ResNets and VGG-16); null = random initialisation",
    )


@dataclass
class ClassifierInputConfig:
    """input: augmentation in training, resizing and crops at test time."""

    train_scale: list[int] = opt(
        [256, 480], "shorter side drawn uniformly from [min, max] in training; [] = no resize"
    )
    pad: int = opt(0, "zero padding added on every side before the training crop (CIFAR: 4)")
    crop: int = opt(224, "side of the random square crop in training")
    flip: bool = opt(True, "random horizontal flip in training")
    test_scale: int | None = opt(256, "shorter side at test time; null = no resize")
    test_crop: int = opt(224, "side of the centre crop (and of the ten crops) at test time")
    ten_crop: bool = opt(
        False, "test on ten crops (corners, centre and their flips), averaging the softmax"
    )
    pixel_mean: list[float] = opt([0.485, 0.456, 0.406], "per-channel mean (inputs in [0, 1])")
    pixel_std: list[float] = opt([0.229, 0.224, 0.225], "per-channel std (inputs in [0, 1])")


@dataclass
class ClassifierDataConfig:
    """data: where the images are."""

    dataset: str = opt(
        "imagefolder",
        "imagefolder: root/<split>/<class>/*.jpg|png (ImageNet's layout); cifar10: CIFAR-10's "
        "python batches; shapes_cls: the embedded synthetic set (generated on first use)",
        DATASET_KINDS,
    )
    root: str | None = opt(
        None,
        "imagefolder: the folder holding the split folders; cifar10: the cifar-10-batches-py "
        "folder; shapes_cls: null = $RESDET_DATASETS/shapes_cls",
    )
    train_split: str = opt("train", "split folder of the training images (imagefolder)")
    val_split: str = opt("val", "split folder of the validation images (imagefolder)")
    num_workers: int = opt(4, "dataloader worker processes")


@dataclass
class ClassifierSolverConfig:
    """solver: SGD, the step schedule, checkpoints and precision."""

    ims_per_batch: int = opt(256, "images per iteration over all processes")
    base_lr: float = opt(0.1, "learning rate at reference_batch images per iteration")
    reference_batch: int = opt(
        256, "batch of base_lr: the rate used is base_lr * ims_per_batch / reference_batch"
    )
    momentum: float = opt(0.9, "SGD momentum")
    weight_decay: float = opt(1e-4, "L2 weight decay (every parameter, as in the paper)")
    max_epochs: int | None = opt(90, "training length in epochs; null = solver.max_iter")
    max_iter: int | None = opt(None, "training length in iterations (set max_epochs: null)")
    steps: list[float] = opt(
        [30, 60],
        "the learning rate is multiplied by gamma at these points: epochs with max_epochs, "
        "iterations with max_iter",
    )
    gamma: float = opt(0.1, "learning-rate decay factor")
    warmup_iters: int = opt(0, "iterations of warmup (ResNet-110 on CIFAR: 400)")
    warmup_factor: float = opt(0.1, "learning-rate factor during (or at the start of) warmup")
    warmup_method: str = opt(
        "constant",
        "constant: warmup_factor throughout (the paper's 0.01 for ResNet-110); linear: from "
        "warmup_factor up to 1",
        ("constant", "linear"),
    )
    checkpoint_period: int = opt(5000, "iterations between checkpoints")
    log_period: int = opt(20, "iterations between metrics.jsonl records (training loss, error)")
    keep_checkpoints: int = opt(3, "periodic checkpoints kept on disk (model_final.pth always)")
    amp: str = opt(
        "auto",
        "mixed precision of training: auto = bf16 where the hardware runs it natively, off "
        "(fp32) elsewhere; off, bf16 or fp16 (CUDA) force one",
        ("auto", "off", "bf16", "fp16"),
    )
    memory_format: str = opt(
        "auto",
        "channels_last, contiguous, or auto = channels_last when training runs in bf16 / fp16",
        ("auto", "channels_last", "contiguous"),
    )


@dataclass
class ClassifierTestConfig:
    """test: validation during and after training."""

    eval_period: int = opt(
        0, "top-1/top-5 validation error every N iterations; 0 = at the end only, -1 = never"
    )
    ims_per_batch: int = opt(100, "validation images per batch and process")
    precision: str = opt(
        "auto",
        "autocast dtype of validation: auto = bf16 where native, fp32 elsewhere; fp32, bf16 or "
        "fp16 (CUDA) force one",
        ("auto", "fp32", "bf16", "fp16"),
    )


@dataclass
class ClassifierConfig:
    """A classification experiment (tools/train_classifier.py)."""

    model: ClassifierModelConfig = section(ClassifierModelConfig, "the network")
    input: ClassifierInputConfig = section(ClassifierInputConfig, "augmentation and test crops")
    data: ClassifierDataConfig = section(ClassifierDataConfig, "the dataset")
    solver: ClassifierSolverConfig = section(ClassifierSolverConfig, "optimizer and schedule")
    test: ClassifierTestConfig = section(ClassifierTestConfig, "validation")
    dashboards: DashboardConfig = section(DashboardConfig, "TensorBoard and Weights & Biases")
    output_dir: str = opt("output/classification", "where checkpoints and metrics are written")
    seed: int = opt(0, "random seed of initialisation, sampling and augmentation")
    imports: list[str] = opt(
        [],
        "Python modules imported before the config is checked (e.g. ones registering a backbone): "
        "module names, or .py paths relative to this config file",
    )


def _check_solver(s: ClassifierSolverConfig) -> None:
    if (s.max_epochs is None) == (s.max_iter is None):
        raise ConfigError(
            "set exactly one of solver.max_epochs and solver.max_iter (the other null), got "
            f"max_epochs={s.max_epochs}, max_iter={s.max_iter}"
        )
    length = s.max_epochs if s.max_epochs is not None else s.max_iter
    if length <= 0:
        raise ConfigError(f"the training length must be positive, got {length}")
    if s.steps != sorted(s.steps) or any(x <= 0 for x in s.steps):
        raise ConfigError(f"solver.steps must be positive and increasing, got {s.steps}")
    for key in ("ims_per_batch", "reference_batch", "checkpoint_period", "log_period"):
        if getattr(s, key) <= 0:
            raise ConfigError(f"solver.{key} must be positive, got {getattr(s, key)}")
    if s.base_lr <= 0 or s.warmup_iters < 0 or s.keep_checkpoints < 1:
        raise ConfigError(
            "solver.base_lr must be > 0, solver.warmup_iters >= 0, solver.keep_checkpoints >= 1"
        )


def _check_input(i: ClassifierInputConfig) -> None:
    if len(i.train_scale) not in (0, 2) or (
        i.train_scale and not 0 < i.train_scale[0] <= i.train_scale[1]
    ):
        raise ConfigError(
            f"input.train_scale must be [min, max] with 0 < min <= max, or [] for no resize; "
            f"got {i.train_scale}"
        )
    if (
        i.crop <= 0
        or i.test_crop <= 0
        or i.pad < 0
        or (i.test_scale is not None and i.test_scale <= 0)
    ):
        raise ConfigError(
            "input.crop, input.test_crop and input.test_scale must be positive, input.pad >= 0"
        )
    if len(i.pixel_mean) != 3 or len(i.pixel_std) != 3 or min(i.pixel_std) <= 0:
        raise ConfigError("input.pixel_mean and input.pixel_std need 3 values, the std positive")


def validate(cfg: ClassifierConfig) -> None:
    """Checks across fields, with the fix in the message."""
    _check_solver(cfg.solver)
    _check_input(cfg.input)
    d, m = cfg.data, cfg.model
    if d.dataset in ("imagefolder", "cifar10") and not d.root:
        where = (
            "the folder with train/ and val/"
            if d.dataset == "imagefolder"
            else ("the cifar-10-batches-py folder")
        )
        raise ConfigError(f"data.dataset={d.dataset} needs data.root: {where}")
    if d.num_workers < 0 or cfg.test.ims_per_batch <= 0:
        raise ConfigError("data.num_workers must be >= 0 and test.ims_per_batch > 0")
    if m.num_classes is not None and m.num_classes < 2:
        raise ConfigError(f"model.num_classes must be at least 2 (or null), got {m.num_classes}")
    if m.weights and get_backbone(m.name, classifier=True).build is None:
        raise ConfigError(
            f"model.weights initialises a backbone (the ImageNet ResNets, VGG-16, ...); {m.name} "
            "is a classifier only, with no pretrained weights to load: set model.weights to null"
        )


def load_classifier_config(
    path: str | os.PathLike | None = None, overrides: Iterable[str] = ()
) -> ClassifierConfig:
    """The classifier config of YAML file `path` (the defaults when None) with `overrides`;
    ConfigError naming the file, key or override when something is wrong."""
    cfg = load_config(path, overrides, schema=ClassifierConfig)
    validate(cfg)
    return cfg
