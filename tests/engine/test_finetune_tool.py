"""tools/train.py with model.weights: fine-tuning to a class subset, and bad input refused."""

import json
import re

import pytest
import torch

from detection import build_model, load_config
from detection.cli.train import main as train_main
from detection.data import ensure_shapes
from detection.utils.checkpoint import model_checkpoint, save_atomic

SHAPES = ["circle", "square", "triangle", "star", "ellipse"]
KEPT = {1: "circle", 2: "square", 4: "star"}  # category id -> name in shapes_train
CLASS_MAP = "model.class_map={circle: circle, square: square, star: star}"


@pytest.fixture
def source(tiny_config, tmp_path):
    """A 5-class checkpoint of the tiny config, every tensor moved off its initialisation."""
    path, _ = tiny_config
    torch.manual_seed(3)
    model = build_model(load_config(path), class_names=SHAPES)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    ckpt = tmp_path / "source.pth"
    save_atomic(model_checkpoint(model.state_dict(), load_config(path), SHAPES), ckpt)
    return ckpt, model.state_dict()


def subset_annotations(datasets_root, tmp_path):
    """shapes_train with circles, squares and stars only: (json, image folder)."""
    ann, images = ensure_shapes("shapes_train", datasets_root)
    data = json.loads(ann.read_text())
    data["categories"] = [c for c in data["categories"] if c["id"] in KEPT]
    data["annotations"] = [a for a in data["annotations"] if a["category_id"] in KEPT]
    out = tmp_path / "subset.json"
    out.write_text(json.dumps(data))
    return out, images


def test_finetune_to_a_subset_copies_the_mapped_rows(
    tiny_config, source, datasets_root, tmp_path, caplog
):
    path, out = tiny_config
    ckpt, src = source
    ann, images = subset_annotations(datasets_root, tmp_path)
    assert images.is_dir()
    args = [
        "--config", str(path), "--device", "cpu",
        f"model.weights={ckpt}", "model.roi_heads.num_classes=3", CLASS_MAP,
        f"data.train.annotations={ann}", f"data.train.images={images}",
        # lr 0: the final checkpoint still holds the weights the run started from
        "solver.base_lr=0.0", "solver.max_iter=2", "solver.steps=[]", "solver.warmup_iters=0",
    ]  # fmt: skip
    with caplog.at_level("INFO", logger="detection"):
        assert train_main(args) == 0
    assert any("class rows copied" in r.getMessage() for r in caplog.records)
    final = torch.load(out / "model_final.pth", weights_only=True)
    assert final["class_names"] == ["circle", "square", "star"]
    state = final["model"]
    for suffix in ("weight", "bias"):
        cls = "roi_heads.predictor.cls_score." + suffix
        assert torch.equal(state[cls], src[cls][[0, 1, 2, 4]])
        box = "roi_heads.predictor.bbox_pred." + suffix  # 4 rows per class
        rows = [4 * c + i for c in (0, 1, 2, 4) for i in range(4)]
        assert torch.equal(state[box], src[box][rows])
    rest = [k for k in state if "predictor" not in k]
    assert rest and all(torch.equal(state[k], src[k]) for k in rest)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.weights=MISSING"], "model.weights: checkpoint not found: .*gone.pth"),
        (
            ["model.weights=CKPT", "model.class_map={circl: circle}"],
            "source class 'circl' is not a class of model.weights=.*Did you mean 'circle'",
        ),
        (
            ["model.weights=CKPT", "model.backbone.name=resnet34"],
            r"the checkpoint's backbone does not fit the model \(42 tensor\(s\) differ: .*"
            r"backbone.res2.2.conv1.weight \(not in the checkpoint\), \.\.\. and 37 more\)",
        ),
    ],
    ids=["missing-file", "unknown-class", "other-backbone"],
)
def test_bad_weights_exit_2_and_write_nothing(
    tiny_config, source, tmp_path, capsys, overrides, message
):
    path, out = tiny_config
    ckpt, _ = source
    missing = tmp_path / "gone.pth"
    filled = [o.replace("CKPT", str(ckpt)).replace("MISSING", str(missing)) for o in overrides]
    assert train_main(["--config", str(path), "--device", "cpu", *filled]) == 2
    err = capsys.readouterr().err
    assert "error: " in err
    assert re.search(message, err), err
    assert not out.exists()


def test_resume_does_not_read_model_weights_and_keeps_a_log(tiny_config, source, capsys):
    """--resume takes every weight from the run's checkpoint: the file the run started from may
    be gone. The run's log lines (the weights report, progress, checkpoints) are in log.txt."""
    path, out = tiny_config
    ckpt, _ = source
    args = ["--config", str(path), "--device", "cpu", f"model.weights={ckpt}"]
    assert train_main([*args, "solver.max_iter=2", "solver.steps=[]"]) == 0
    log = (out / "log.txt").read_text()
    assert re.search(
        r"^\S+ \S+ INFO detection\.modeling\.finetune: model\.weights: loaded", log, re.M
    )
    assert "saved " in log and "model_final.pth" in log
    ckpt.unlink()
    assert train_main([*args, "--resume", "solver.max_iter=4", "solver.steps=[]"]) == 0
    assert "resumed from" in capsys.readouterr().err
    assert torch.load(out / "model_final.pth", weights_only=True)["iteration"] == 4
    assert "resumed from" in (out / "log.txt").read_text()
