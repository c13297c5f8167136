"""Layer responses (paper Fig. 7): the tool's CSV against hooks written here independently."""

import csv
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from detection.analysis.responses import RunningMoments, backbone_model
from detection.config import load_config
from detection.modeling import build_model, load_model
from detection.utils.checkpoint import model_checkpoint

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from detection.cli.analyze_responses import main  # noqa: E402

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def read_rows(path: Path) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    with path.open() as f:
        for row in csv.DictReader(f):
            rows.setdefault(row["model"], []).append(row)
    return rows


def inputs(folder: Path, mean=MEAN, std=STD) -> list[torch.Tensor]:
    """The images as normalised 1x3xHxW tensors (64x80: --size 64 does not resize them)."""
    out = []
    for path in sorted(folder.glob("*.png")):
        x = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
        out.append(((x.float() / 255.0)[None] - mean) / std)
    return out


def hooked_std(modules: dict[str, torch.nn.Module], run) -> dict[str, float]:
    """Std of every element each module outputs over all calls of `run` (copied in the hook:
    the ReLU after it works in place)."""
    seen: dict[str, list[torch.Tensor]] = {name: [] for name in modules}
    handles = [
        m.register_forward_hook(lambda _m, _i, out, name=name: seen[name].append(out.clone()))
        for name, m in modules.items()
    ]
    with torch.no_grad():
        run()
    for h in handles:
        h.remove()
    return {
        name: torch.cat([t.flatten().double() for t in ts]).std(correction=0).item()
        for name, ts in seen.items()
    }


def three_by_three_norms(module: torch.nn.Module, prefix: str = "") -> dict[str, torch.nn.Module]:
    """bn1/bn2 of basic blocks and bn2 of bottlenecks, keyed like the CSV's layer names."""
    found = {}
    for name, m in module.named_modules():
        match = re.fullmatch(r"(res\d\.\d+|\d+)\.bn(\d)", name)
        if not match:
            continue
        block = module.get_submodule(name.rsplit(".", 1)[0])
        conv = getattr(block, f"conv{match.group(2)}")
        if conv.kernel_size == (3, 3):
            found[f"{prefix}{match.group(1)}.conv{match.group(2)}"] = m
    return found


def check_rows(rows: list[dict], expected: dict[str, float]) -> None:
    assert [r["layer"] for r in rows] == list(expected)
    assert [int(r["index"]) for r in rows] == list(range(1, len(rows) + 1))
    for r in rows:
        assert float(r["std"]) == pytest.approx(expected[r["layer"]], rel=1e-6), r["layer"]
    stds = [float(r["std"]) for r in rows]
    ranks = [int(r["rank"]) for r in rows]
    assert sorted(ranks) == list(range(1, len(rows) + 1))
    by_rank = [stds[ranks.index(k)] for k in range(1, len(rows) + 1)]
    assert by_rank == sorted(stds, reverse=True)


def test_backbones_plain_and_residual(image_dir, tmp_path):
    out = tmp_path / "out"
    argv = ["--backbone", "resnet18", "--shortcut", "none"]
    argv += ["--backbone", "resnet18", "--shortcut", "B", "--label", "res18"]
    argv += ["--backbone", "resnet50", "--seed", "3", "--images", str(image_dir)]
    argv += ["--size", "64", "--output", str(out)]
    assert main(argv) == 0
    rows = read_rows(out / "responses.csv")
    assert list(rows) == ["plain-18", "res18", "ResNet-50 B"]
    # ResNet-18: 2 3x3 layers in each of 8 basic blocks; ResNet-50: one in each of 16 bottlenecks
    assert [len(v) for v in rows.values()] == [16, 16, 16]
    assert (out / "responses.png").stat().st_size > 0
    images = inputs(image_dir)
    nets = {}
    for label, (name, shortcut) in zip(
        rows, [("resnet18", "none"), ("resnet18", "B"), ("resnet50", "B")], strict=True
    ):
        # the tool's network (same seed), run whole by ResNet.forward with hooks set up here
        net = nets[label] = backbone_model(name, shortcut=shortcut, seed=3).module
        expected = hooked_std(three_by_three_norms(net), lambda net=net: [net(x) for x in images])
        check_rows(rows[label], expected)
    # the same init: every layer of plain-18 equals ResNet-18's, which only adds projections
    res18 = nets["res18"].state_dict()
    for key, value in nets["plain-18"].state_dict().items():
        assert torch.equal(value, res18[key]), key
    # so the responses agree until the first addition (res2.0's output) enters the branch
    assert [r["std"] for r in rows["plain-18"][:2]] == [r["std"] for r in rows["res18"][:2]]
    assert rows["plain-18"][2]["std"] != rows["res18"][2]["std"]


def _save_detector(tmp_path: Path, config: str, overrides: list[str]) -> Path:
    cfg = load_config(
        ROOT / config,
        ["model.backbone.weights=null", "model.roi_heads.num_classes=5", *overrides],
    )
    torch.manual_seed(0)
    model = build_model(cfg)
    path = tmp_path / Path(config).stem / "model_final.pth"
    path.parent.mkdir()
    torch.save(model_checkpoint(model.state_dict(), cfg, None), path)
    return path


def test_detector_checkpoints_c4_and_fpn(image_dir, tmp_path):
    c4 = _save_detector(tmp_path, "configs/coco/faster_rcnn_R18_C4_1x.yaml", [])
    fpn = _save_detector(
        tmp_path,
        "configs/coco/faster_rcnn_R50_FPN_1x.yaml",
        ["model.backbone.name=resnet18", "model.backbone.norm=GN"],
    )
    out = tmp_path / "out"
    argv = ["--checkpoint", str(c4), "--checkpoint", str(fpn), "--label", "fpn"]
    assert main([*argv, "--images", str(image_dir), "--size", "64", "--output", str(out)]) == 0
    rows = read_rows(out / "responses.csv")
    assert [len(v) for v in rows.values()] == [16, 16]
    c4_rows = rows["ResNet-18 B (faster_rcnn_R18_C4_1x)"]
    assert [r["stage"] for r in c4_rows[-4:]] == ["res5"] * 4

    model = load_model(c4)
    images = inputs(image_dir, model.pixel_mean[None], model.pixel_std[None])
    res5 = model.roi_heads.box_head.res5
    norms = {**three_by_three_norms(model.backbone), **three_by_three_norms(res5, "res5.")}
    # C4: res5 (the box head's) runs on the whole res4 map
    expected = hooked_std(norms, lambda: [res5(model.backbone(x)["res4"]) for x in images])
    check_rows(c4_rows, expected)

    model = load_model(fpn)
    bottom_up = model.backbone.bottom_up
    expected = hooked_std(three_by_three_norms(bottom_up), lambda: [bottom_up(x) for x in images])
    check_rows(rows["fpn"], expected)


def test_images_from_a_config_or_a_dataset_name(tmp_path, subset, shapes_val, monkeypatch):
    from detection.analysis.responses import image_paths

    ann = subset(5, "five")
    names = [im["file_name"] for im in json.loads(ann.read_text())["images"]]
    config = tmp_path / "c.yaml"
    config.write_text(f"data: {{test: {{annotations: {ann}, images: {shapes_val[1]}}}}}\n")
    paths = image_paths(config, limit=3)
    assert paths == [Path(shapes_val[1]) / n for n in names[:3]]  # the annotation file's order
    assert all(p.is_file() for p in paths)
    monkeypatch.setenv("RESDET_DATASETS", str(Path(shapes_val[0]).parents[2]))
    assert image_paths("shapes_val", limit=3) == paths
    with pytest.raises(FileNotFoundError, match="registered dataset"):
        image_paths("no_such_set")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--shortcut", "none", "--backbone", "resnet18"], "must follow"),
        (["--checkpoint", "x.pth", "--shortcut", "A"], "--backbone only"),
        (["--backbone", "vgg16"], "defined for ResNets"),
        (["--backbone", "resnet18", "--backbone", "resnet18"], "--label"),
    ],
)
def test_errors_for_people(argv, message, image_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main([*argv, "--images", str(image_dir), "--size", "32", "--output", str(tmp_path)])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_running_moments_merge_exactly():
    torch.manual_seed(0)
    chunks = [torch.randn(n) * 3 + 1 for n in (5, 1000, 17)]
    m = RunningMoments()
    for c in chunks:
        m.update(c)
    flat = torch.cat(chunks).double()
    assert m.std == pytest.approx(flat.std(correction=0).item(), rel=1e-12)
    assert m.mean == pytest.approx(flat.mean().item(), rel=1e-12)
