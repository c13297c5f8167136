"""A backbone defined outside the library (user_backbone.py, beside this file) registered and
named in configs: C4 and FPN detectors and the classifier train with it, as a user's would."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from backbones import build_backbone, get_backbone, list_backbones, registry
from detection.classification import load_classifier_config, train_classifier
from detection.config import ConfigError, load_config
from detection.engine.trainer import train
from detection.modeling import load_model

HERE = Path(__file__).resolve().parent
USER_FILE = HERE / "user_backbone.py"


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch):
    """Each test imports the user's module through its config, as a new process would, and
    leaves neither the module nor its backbone behind."""
    monkeypatch.syspath_prepend(str(HERE))
    table = dict(registry._TABLE)
    modules = set(sys.modules)
    yield
    registry._TABLE.clear()
    registry._TABLE.update(table)
    for name in set(sys.modules) - modules:
        if name == "user_backbone" or name.startswith("resdet_imports."):
            del sys.modules[name]


def _iterations(out: Path) -> list[int]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["iteration"] for r in records if "total_loss" in r or "loss" in r]


def _detector_config(tiny_config, extra: str) -> Path:
    path, _ = tiny_config
    path.write_text(path.read_text() + extra)
    return path


def test_c4_detector_trains_with_a_user_backbone(tiny_config):
    """The module named in `imports:`, the backbone by its registered name; 2 iterations."""
    path = _detector_config(tiny_config, "imports: [user_backbone]\n")
    assert "tiny_user" not in list_backbones()
    overrides = ["model.backbone.name=tiny_user", "model.roi_heads.box_head=2fc"]
    cfg = load_config(path, [*overrides, "solver.max_iter=2"])
    assert "tiny_user" in list_backbones()
    train(cfg)
    out = Path(cfg.output_dir)
    assert _iterations(out) == [1, 2]
    model = load_model(out / "model_final.pth")
    assert type(model.backbone).__name__ == "TinyNet"
    assert model.backbone.out_channels == {"c4": 48} and model.backbone.strides == {"c4": 16}
    # a checkpoint's config imports nothing: without the module its backbone is unknown
    registry._TABLE.pop("tiny_user")
    del sys.modules["user_backbone"]
    with pytest.raises(ConfigError, match=r"imports \['user_backbone'\] that are not imported"):
        load_model(out / "model_final.pth")
    assert type(load_model(out / "model_final.pth", ["imports=[user_backbone]"]).backbone)


def test_fpn_detector_trains_with_a_user_backbone_from_a_path(tiny_config):
    """`imports:` as a .py path relative to the config file, stored resolved; 2 iterations."""
    path, _ = tiny_config
    relative = os.path.relpath(USER_FILE, path.parent)
    extra = (
        f"imports: [{relative}]\n"
        "model:\n  backbone: {name: tiny_user, norm: GN, freeze_at: 1}\n"
        "  neck: {name: fpn, out_channels: 32}\n"
        "  anchors: {sizes: [[32], [64], [128], [256], [512]]}\n"
        "  roi_heads: {box_head: 2fc, fc_dim: 64, pooler_type: roi_align, pooler_resolution: 7}\n"
    )
    # the fixture's file sets model: once; its keys and ours merge through a _base_
    (path.parent / "fpn.yaml").write_text(f"_base_: {path.name}\n" + extra)
    cfg = load_config(path.parent / "fpn.yaml", ["solver.max_iter=2"])
    assert cfg.imports == [str(USER_FILE)]
    train(cfg)
    out = Path(cfg.output_dir)
    assert _iterations(out) == [1, 2]
    assert load_config(out / "config.yaml").imports == [str(USER_FILE)]
    model = load_model(out / "model_final.pth")
    assert type(model.backbone.bottom_up).__name__ == "TinyNet"
    assert list(model.backbone.out_channels) == ["p2", "p3", "p4", "p5", "p6"]
    stem = model.backbone.bottom_up.stem
    assert all(not p.requires_grad for p in stem.parameters())  # freeze_at: 1


def _image_folder(root: Path, classes=("a", "b"), per_class=4) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", 2)):
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 60, (40, 40, 3), dtype=np.uint8)
                img[..., c] += np.uint8(150)
                cv2.imwrite(str(root / split / name / f"{i}.png"), img)
    return root


def test_classifier_trains_with_a_user_backbone(tmp_path):
    """The classifier trainer: global average pooling and one fc on the last stage."""
    out = tmp_path / "out"
    (tmp_path / "cls.yaml").write_text(
        f"imports: [{USER_FILE}]\n"
        "model: {name: tiny_user, norm: GN}\n"
        f"data: {{dataset: imagefolder, root: {_image_folder(tmp_path / 'images')}, "
        "num_workers: 0}\n"
        "input: {train_scale: [32, 40], crop: 32, test_scale: 36, test_crop: 32}\n"
        "solver: {ims_per_batch: 4, base_lr: 0.05, max_epochs: null, max_iter: 2, steps: [1],\n"
        "         checkpoint_period: 2, log_period: 1}\n"
        f"test: {{eval_period: -1, ims_per_batch: 4}}\noutput_dir: {out}\n"
    )
    cfg = load_classifier_config(tmp_path / "cls.yaml")
    train_classifier(cfg)
    assert _iterations(out) == [1, 2]
    state = torch.load(out / "model_final.pth", weights_only=True)["model"]
    assert state["fc.weight"].shape == (2, 64)  # c5's 64 channels, two classes
    assert any(k.startswith("backbone.c5.") for k in state)


def test_registered_backbone_builds_and_unknown_names_suggest_it():
    import user_backbone  # noqa: F401  (registers tiny_user)

    net = build_backbone("tiny_user", out_features=["c3", "c5"], norm="BN", freeze_at=2)
    assert net.out_channels == {"c3": 32, "c5": 64} and net.strides == {"c3": 8, "c5": 32}
    assert net.arch_name == "tiny_user" and net.out_features == ["c3", "c5"]
    out = net(torch.randn(1, 3, 64, 64))
    assert out["c3"].shape == (1, 32, 8, 8) and out["c5"].shape == (1, 64, 2, 2)
    assert not any(p.requires_grad for p in [*net.stem.parameters(), *net.c3.parameters()])
    assert get_backbone("tiny_user").label == "Tiny (user)"
    with pytest.raises(ValueError, match=r"unknown backbone 'tiny_usr' \(did you mean 'tiny_user"):
        build_backbone("tiny_usr")
    with pytest.raises(ConfigError, match="did you mean tiny_user.*allowed values: resnet18"):
        load_config(None, ["model.backbone.name=tiny_usr"])
    with pytest.raises(ValueError, match="has no shortcut connections"):
        build_backbone("tiny_user", shortcut="A")
    with pytest.raises(ConfigError, match="res5 is the ResNet C4 design"):
        from detection.modeling import build_model

        build_model(load_config(None, ["model.backbone.name=tiny_user"]), load_weights=False)


@pytest.mark.parametrize(
    "entry, message",
    [
        ("no_such_module_xyz", "no module 'no_such_module_xyz' on the Python path"),
        ("missing/user.py", "no file missing/user.py"),
        ("{a: 1}", "must be a list of module names or .py paths"),
    ],
)
def test_import_errors_say_what_to_do(entry, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [f"imports=[{entry}]" if "{" not in entry else f"imports={entry}"])
