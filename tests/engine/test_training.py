"""Training end to end on shapes: metrics, checkpoints, resume, non-finite losses, DDP."""

import json
import socket
from pathlib import Path

import pytest
import torch
from helpers import read_jsonl, run_tool

from detection.config import ConfigError, load_config
from detection.engine.trainer import Trainer, train

ROOT = Path(__file__).resolve().parents[2]


def test_train_writes_metrics_checkpoints_and_config(tiny_config):
    path, out = tiny_config
    calls = []

    def evaluate(model, iteration):
        calls.append(iteration)
        return {"bbox": {"AP": 1.5, "AP50": 3.0}}

    cfg = load_config(path, ["test.eval_period=3", "solver.keep_checkpoints=1"])
    result = train(cfg, evaluate=evaluate)
    assert calls == [3, 6]  # periodic, then at the end
    assert result["eval"]["bbox"]["AP"] == 1.5
    records = read_jsonl(out / "metrics.jsonl")
    train_records = [r for r in records if "total_loss" in r]
    assert [r["iteration"] for r in train_records] == [1, 2, 3, 4, 5, 6]
    for r in train_records:
        assert {"lr", "loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box"} <= set(r)
        assert r["images_per_s"] > 0 and r["peak_memory_mb"] > 0
    assert [r["bbox/AP"] for r in records if "bbox/AP" in r] == [1.5, 1.5]
    assert load_config(out / "config.yaml") == cfg
    assert (out / "last_checkpoint").read_text().strip() == "model_final.pth"
    assert sorted(p.name for p in out.glob("model_*.pth")) == [
        "model_0000004.pth",
        "model_final.pth",
    ]
    ckpt = torch.load(out / "model_final.pth", weights_only=True)
    assert ckpt["iteration"] == 6 and ckpt["class_names"][0] == "circle"
    assert {"model", "optimizer", "scheduler", "rng", "config", "data"} <= set(ckpt)


def test_mismatched_class_count_is_a_config_error(tiny_config):
    path, _ = tiny_config
    with pytest.raises(ConfigError, match="set model.roi_heads.num_classes=5"):
        Trainer(load_config(path, ["model.roi_heads.num_classes=80"]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tiny_config, tmp_path):
    path, _ = tiny_config
    take_all = [
        "model.rpn.batch_size_per_image=100000",
        "model.roi_heads.batch_size_per_image=100000",
        "solver.max_iter=6",
        "solver.checkpoint_period=3",
    ]
    run_tool(
        [ROOT / "tools/train.py", "--config", path, "--output-dir", tmp_path / "one", *take_all]
    )
    run_tool(
        [
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            free_port(),
            ROOT / "tools/train.py",
            "--config",
            path,
            "--output-dir",
            tmp_path / "two",
            *take_all,
        ]
    )
    one = [r for r in read_jsonl(tmp_path / "one/metrics.jsonl") if "total_loss" in r]
    two = [r for r in read_jsonl(tmp_path / "two/metrics.jsonl") if "total_loss" in r]
    assert [r["iteration"] for r in two] == [r["iteration"] for r in one] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(one, two, strict=True):
        # the same images per global batch; per-rank loss normalisation differs slightly
        assert b["total_loss"] == pytest.approx(a["total_loss"], rel=0.1), (a, b)
        assert b["lr"] == pytest.approx(a["lr"])
    # rank 0 alone writes: one file per checkpoint, no temporary leftovers
    names = sorted(p.name for p in (tmp_path / "two").iterdir() if p.suffix == ".pth")
    assert names == ["model_0000003.pth", "model_final.pth"]
    assert not list((tmp_path / "two").glob(".*.tmp"))


def test_plot_metrics(tiny_config, tmp_path):
    path, out = tiny_config
    train(load_config(path, ["solver.max_iter=3"]), evaluate=lambda m, i: {"bbox": {"AP": 2.0}})
    with (out / "metrics.jsonl").open("a") as f:
        f.write("{torn line\n")
    r = run_tool([ROOT / "tools/plot_metrics.py", out])
    assert (out / "curves.png").stat().st_size > 1000
    assert "is not JSON; skipped" in r.stderr
    r = run_tool([ROOT / "tools/plot_metrics.py", tmp_path / "nothing"], check=False)
    assert r.returncode == 2 and "no metrics.jsonl" in r.stderr


def test_eval_only(tiny_config, tmp_path, datasets_root):
    path, out = tiny_config
    train(load_config(path, ["solver.max_iter=1"]))
    coco = json.loads((datasets_root / "shapes/annotations/instances_val.json").read_text())
    keep = {img["id"] for img in coco["images"][:3]}
    coco["images"] = [i for i in coco["images"] if i["id"] in keep]
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in keep]
    subset = tmp_path / "val3.json"
    subset.write_text(json.dumps(coco))
    r = run_tool(
        [
            ROOT / "tools/train.py",
            "--config",
            path,
            "--eval-only",
            "--checkpoint",
            out / "model_final.pth",
            "--output-dir",
            tmp_path / "ev",
            f"data.test.annotations={subset}",
            f"data.test.images={datasets_root / 'shapes/val'}",
        ],
        env_extra={"RESDET_DATASETS": str(datasets_root)},
    )
    metrics = json.loads((tmp_path / "ev/metrics.json").read_text())
    assert metrics["num_images"] == 3 and "AP50" in r.stdout
    assert metrics["checkpoint"].endswith("model_final.pth")
