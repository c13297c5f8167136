"""The backbone registry: one table of the networks `build_backbone` and `build_classifier` know.

Each entry declares what the rest of the code asks of a network without building it: its feature
maps (name -> stride, channels), the stages `freeze_at` counts, the map a detector without FPN
reads and the stage it runs per region, the maps an FPN reads, the norms and options it takes,
and its ImageNet weights by name. The families shipped (ResNet with the paper's shortcut options
and plain nets, VGG-16, the CIFAR ResNets, ResNeXt, Wide ResNet) are declared at the end of this
file. A user adds their own from any module (see docs/backbones.md):

    @register_backbone("tiny", features={"c3": (8, 64), "c4": (16, 128), ...}, c4_feature="c4")
    def tiny(out_features, norm):
        return TinyNet(out_features, norm)  # forward(images) -> {feature name: map}
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from torch import nn

from .cifar import CIFAR_SPECS, CifarResNet, cifar_depth
from .norm import NORMS
from .resnet import RESNET_SPECS, STAGE_STRIDES, STAGES, ResNet, ResNetClassifier
from .vgg import VGG, VGG_FEATURES, VGG_STAGES, VGG_STRIDES, VGGClassifier, freeze_stages

# The options a family may take, at the value that means "not used" (build_backbone's defaults).
OPTIONS: dict[str, Any] = {"shortcut": "B", "stride_in_1x1": False, "zero_init_residual": False}


@dataclass(frozen=True)
class BackboneSpec:
    """One registered network.

    name: what configs write as model.backbone.name (model.name for a classifier).
    build: build(out_features=[...], norm=..., **options) -> a module whose forward(images)
        returns {feature name: map}; None for a classifier-only network (the CIFAR ResNets).
    features: feature name -> (stride, channels), in network order: every map it can return.
    stages: what freeze_at counts, in network order (default: the features); each is an
        attribute of the built module unless `freeze` says otherwise. The last stage is the
        default output.
    c4_feature: the one map the RPN and the RoI pooler read without FPN (stride 16 in the
        paper); None = the network needs an FPN.
    c4_head: the stage after c4_feature that runs per region (model.roi_heads.box_head=res5);
        the built module then has split_after(c4_feature) -> {stage: module}, as ResNet does.
    fc_head: its ImageNet classifier's fc6/fc7 can be the box head (box_head=vgg_fc).
    fpn_inputs: the maps an FPN reads, finest first, each stride twice the previous one.
    norms: the values of `norm` it takes.
    options: the options of OPTIONS it takes, with its default for each (CIFAR: shortcut A).
    weights: ImageNet weights: name -> URL of a state dict (torch hub's cache; the file name's
        hash prefix is checked on download).
    classifier: classifier(num_classes, norm=..., **options) -> its ImageNet classifier, with the
        backbone as `.backbone`; None = global average pooling and one fc on the last stage.
    freeze: freeze(module, k) freezes its first k stages; None = replace each stage attribute
        by its frozen copy (backbones.norm.freeze).
    label: the name people write: "ResNet-50", "VGG-16" (default: `name`).
    """

    name: str
    build: Callable[..., nn.Module] | None
    features: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    stages: tuple[str, ...] = ()
    c4_feature: str | None = None
    c4_head: str | None = None
    fc_head: bool = False
    fpn_inputs: tuple[str, ...] = ()
    norms: tuple[str, ...] = NORMS
    options: Mapping[str, Any] = field(default_factory=dict)
    weights: Mapping[str, str] = field(default_factory=dict)
    classifier: Callable[..., nn.Module] | None = None
    freeze: Callable[[nn.Module, int], None] | None = None
    label: str = ""

    def __post_init__(self) -> None:
        # plain dicts of tuples, whatever mappings and sequences the caller gave
        features = {f: tuple(v) if isinstance(v, list) else v for f, v in self.features.items()}
        object.__setattr__(self, "features", features)
        object.__setattr__(self, "options", dict(self.options))
        object.__setattr__(self, "weights", dict(self.weights))
        for key in ("stages", "fpn_inputs", "norms"):
            object.__setattr__(self, key, tuple(getattr(self, key)))
        if not self.stages and self.build is not None:
            object.__setattr__(self, "stages", tuple(self.features))
        object.__setattr__(self, "label", self.label or self.name)


_TABLE: dict[str, BackboneSpec] = {}


def _check_spec(spec: BackboneSpec) -> None:
    """Raise ValueError (naming the entry and the field) for a spec the builders cannot use."""

    def fail(what: str) -> None:
        raise ValueError(f"register_backbone({spec.name!r}): {what}")

    if not isinstance(spec.name, str) or not spec.name:
        fail("the name must be a non-empty string")
    if spec.build is None and spec.classifier is None:
        fail("give a builder (a feature extractor) or a classifier")
    if spec.build is not None and not spec.features:
        fail("features: give {feature name: (stride, channels)} of the maps the module returns")
    for f, value in spec.features.items():
        ints = isinstance(value, tuple) and all(isinstance(v, int) for v in value)
        if not (ints and len(value) == 2 and min(value) > 0):
            fail(f"features[{f!r}] must be (stride, channels), positive integers; got {value!r}")
    references = [("c4_feature", spec.c4_feature), ("c4_head", spec.c4_head)]
    references += [("fpn_inputs", f) for f in spec.fpn_inputs]
    references += [("stages", f) for f in spec.stages]
    for key, f in references:
        if f is not None and f not in spec.features:
            fail(f"{key} names {f!r}, which is not among its features {list(spec.features)}")
    strides = [spec.features[f][0] for f in spec.fpn_inputs]
    if any(b != 2 * a for a, b in zip(strides, strides[1:], strict=False)):
        fail(f"fpn_inputs need strides that double from one to the next, got {strides}")
    if not set(spec.norms) <= set(NORMS) or not set(spec.options) <= set(OPTIONS):
        fail(f"norms must be among {NORMS} and options among {tuple(OPTIONS)}")


def _add(spec: BackboneSpec) -> BackboneSpec:
    _check_spec(spec)
    old = _TABLE.get(spec.name)
    if old is not None and _origin(old) != _origin(spec):
        raise ValueError(
            f"backbone {spec.name!r} is registered already (by {_origin(old)}); choose another name"
        )
    _TABLE[spec.name] = spec  # the same definition imported again (e.g. by path) replaces it
    return spec


def _origin(spec: BackboneSpec) -> str:
    """Where the entry's builder is defined: file and name (the same whether its module was
    imported by name or by path)."""
    fn = spec.build or spec.classifier
    fn = getattr(fn, "func", fn)  # functools.partial
    try:
        where = inspect.getfile(fn)
    except TypeError:
        where = getattr(fn, "__module__", "?")
    return f"{where}:{getattr(fn, '__qualname__', '?')}"


def register_backbone(name: str, build: Callable[..., nn.Module] | None = None, **fields: Any):
    """Register the backbone `name` (fields: those of BackboneSpec) and return its builder.

    Without `build` it is a decorator of the builder: `@register_backbone("tiny", features=...)`.
    Registering a name twice is an error, unless it is the same function imported again.
    """

    def register(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _add(BackboneSpec(name=name, build=fn, **fields))
        return fn

    return register if build is None else register(build)


def _did_you_mean(value: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(value, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def get_backbone(name: str, *, classifier: bool = False) -> BackboneSpec:
    """The registry entry of `name`: a detection backbone, or with `classifier` any network.

    ValueError with the closest name and every valid one when `name` is not registered.
    """
    spec = _TABLE.get(name)
    if spec is not None and (classifier or spec.build is not None):
        return spec
    valid = list_classifiers() if classifier else list_backbones()
    if spec is not None:
        raise ValueError(
            f"{name} is a classifier only: it has no feature maps for a detector; valid "
            f"backbones: {', '.join(valid)}"
        )
    kind = "classifier" if classifier else "backbone"
    raise ValueError(
        f"unknown {kind} {name!r}{_did_you_mean(str(name), valid)}; valid names: "
        f"{', '.join(valid)} (a backbone of your own: backbones.register_backbone, in a module "
        "the config lists under imports)"
    )


def list_backbones() -> list[str]:
    """Names accepted by build_backbone (and build_classifier): the detection backbones."""
    return [name for name, spec in _TABLE.items() if spec.build is not None]


def list_classifiers() -> list[str]:
    """Names accepted by build_classifier: the backbones and the classifier-only networks."""
    return list_backbones() + [n for n, s in _TABLE.items() if s.build is None]


class RegisteredNames(Sequence):
    """The registered names, read at each use: a config schema's choices that include the
    backbones registered after the schema was defined."""

    def __init__(self, classifiers: bool = False) -> None:
        self.classifiers = classifiers

    def _names(self) -> list[str]:
        return list_classifiers() if self.classifiers else list_backbones()

    def __getitem__(self, index):
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __repr__(self) -> str:
        return f"RegisteredNames({self._names()})"


# ---------------------------------------------------------------------------------------------
# The families shipped

_TORCHVISION = "https://download.pytorch.org/models/"


def _imagenet(*files: str, **extra: str) -> dict[str, str]:
    """torchvision's ImageNet weights: IMAGENET1K_V1 (V2, ...), `extra`, DEFAULT (the newest)."""
    weights = {f"IMAGENET1K_V{i}": _TORCHVISION + f for i, f in enumerate(files, 1)}
    weights.update({k: _TORCHVISION + f for k, f in extra.items()})
    return {**weights, "DEFAULT": _TORCHVISION + files[-1]}


# name: (label, torchvision's ImageNet weight files, oldest first)
_RESNETS = {
    "resnet18": ("ResNet-18", ["resnet18-f37072fd.pth"]),
    "resnet34": ("ResNet-34", ["resnet34-b627a593.pth"]),
    "resnet50": ("ResNet-50", ["resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth"]),
    "resnet101": ("ResNet-101", ["resnet101-63fe2227.pth", "resnet101-cd907fc2.pth"]),
    "resnet152": ("ResNet-152", ["resnet152-394f9c45.pth", "resnet152-f82ba261.pth"]),
}
_RESNET_SUCCESSORS = {
    "resnext50_32x4d": (
        "ResNeXt-50 32x4d",
        ["resnext50_32x4d-7cdf4587.pth", "resnext50_32x4d-1a0047aa.pth"],
    ),
    "resnext101_32x8d": (
        "ResNeXt-101 32x8d",
        ["resnext101_32x8d-8ba56ff5.pth", "resnext101_32x8d-110c445d.pth"],
    ),
    "wide_resnet50_2": (
        "Wide ResNet-50-2",
        ["wide_resnet50_2-95faca4d.pth", "wide_resnet50_2-9ba9bcbe.pth"],
    ),
}


def _register_resnets(table: dict[str, tuple[str, list[str]]]) -> None:
    """ResNets (and their successors): stem + res2..res5; C4 reads res4 and runs res5 per
    region; the FPN reads res2..res5; shortcut options A/B/C and plain nets."""
    for name, (label, files) in table.items():
        expansion = 1 if RESNET_SPECS[name].block == "basic" else 4
        channels = [64] + [64 * 2**i * expansion for i in range(4)]
        _add(
            BackboneSpec(
                name,
                build=partial(ResNet, name),
                features={s: (STAGE_STRIDES[s], c) for s, c in zip(STAGES, channels, strict=True)},
                c4_feature="res4",
                c4_head="res5",
                fpn_inputs=("res2", "res3", "res4", "res5"),
                options=dict(OPTIONS),
                weights=_imagenet(*files),
                classifier=partial(ResNetClassifier, name),
                label=label,
            )
        )


def _register_vgg() -> None:
    """VGG-16 (and -BN): conv1..conv5 and pool5 (conv5_3 max-pooled, no weights, the FPN's
    stride-32 input); without FPN the RPN and RoIs read conv5_3, fc6/fc7 act per region."""
    files = {"vgg16": "vgg16-397923af.pth", "vgg16_bn": "vgg16_bn-6c64b313.pth"}
    extra = {"vgg16": {"IMAGENET1K_FEATURES": "vgg16_features-amdegroot-88682ab5.pth"}}
    for name, file in files.items():
        channels = {f: 64 * 2 ** min(VGG_FEATURES.index(f), 3) for f in VGG_FEATURES}
        _add(
            BackboneSpec(
                name,
                build=partial(VGG, name),
                features={f: (VGG_STRIDES[f], channels[f]) for f in VGG_FEATURES},
                stages=VGG_STAGES,
                c4_feature="conv5",
                fc_head=True,
                fpn_inputs=("conv3", "conv4", "conv5", "pool5"),
                weights=_imagenet(file, **extra.get(name, {})),
                classifier=partial(VGGClassifier, name),
                freeze=freeze_stages,
                label="VGG-16-BN" if name == "vgg16_bn" else "VGG-16",
            )
        )


def _register_cifar() -> None:
    """The CIFAR-10 ResNets (and plain nets): classifiers of 32x32 images, trained whole, shortcut
    A by default (the paper's CIFAR choice)."""
    for name in CIFAR_SPECS:
        _add(
            BackboneSpec(
                name,
                build=None,
                options={"shortcut": "A", "zero_init_residual": False},
                classifier=partial(CifarResNet, name),
                label=f"ResNet-{cifar_depth(name)}",
            )
        )


_register_resnets(_RESNETS)
_register_vgg()
_register_cifar()
_register_resnets(_RESNET_SUCCESSORS)
