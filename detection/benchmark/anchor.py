"""torchvision's anchor in the real-photo benchmark: the project's anchor script
(../shared/anchors/torchvision_frcnn_baseline.py) run unchanged, once per seed, and its saved
model evaluated again with every metric resdet reports.

The script fixes its seeds (torch 0, random 0). Seed k > 0 runs it with both shifted by k
(`torch.manual_seed(0 + k)`, `random.seed(0 + k)`), the script itself unchanged. It reports AP
and AP50 only; it also saves its weights (OUT_JSON + ".model.pth"), so the benchmark rebuilds
its detector as the script does (torchvision's FasterRCNN on a ResNet-18 FPN, min_size 320,
max_size 512), runs it on the same images the same way (PIL, RGB, to_tensor) and evaluates with
pycocotools through resdet's COCO evaluation: AP75, APs/m/l and per-class AP beside the
script's own AP and AP50, which the re-evaluation must reproduce (a difference is logged).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .real_runs import RunResult, Split

ANCHOR_NAME = "torchvision"
AGREEMENT = 0.05  # AP points: the re-evaluation against the script's own figure

# seed k > 0: the anchor run with its two fixed seeds shifted by k, the script unchanged
_SEEDED_ANCHOR = (
    "import random, runpy, sys, torch\n"
    "k = int(sys.argv[1]); _t, _r = torch.manual_seed, random.seed\n"
    "torch.manual_seed = lambda s: _t(s + k)\n"
    "random.seed = lambda s=None: _r(None if s is None else s + k)\n"
    "sys.argv = sys.argv[2:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


def anchor_command(anchor: Path, split: Split, iters: int, out_json: Path, seed: int) -> list[str]:
    """The anchor's command line (seed 0: the script as it is; k > 0: seeds shifted by k)."""
    args = [str(split.train), str(split.val), str(split.images), str(iters), str(out_json)]
    if seed == 0:
        return [sys.executable, str(anchor), *args]
    return [sys.executable, "-c", _SEEDED_ANCHOR, str(seed), str(anchor), *args]


def run_anchor(
    anchor: Path,
    split: Split,
    iters: int,
    out_dir: Path,
    seed: int,
    *,
    reuse: bool = False,
    log: Callable[[str], None] = print,
) -> RunResult:
    """Train and evaluate torchvision's detector with the anchor script (its output goes to
    <out_dir>/anchor.log), then evaluate its saved model again for every metric; with `reuse`,
    an earlier result of the same budget is read instead."""
    out_json = out_dir / "result.json"
    if reuse and out_json.is_file():
        done = json.loads(out_json.read_text())
        if done.get("iters") == iters:
            log(f"{ANCHOR_NAME} seed {seed}: reusing {out_json}")
            return anchor_result(done, seed, out_json, split, log)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").unlink(missing_ok=True)
    command = anchor_command(anchor, split, iters, out_json, seed)
    log(f"{ANCHOR_NAME} seed {seed}: {' '.join(command[:2])} ... (log: {out_dir / 'anchor.log'})")
    with open(out_dir / "anchor.log", "w") as f:
        code = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT).returncode
    if code != 0 or not out_json.is_file():
        status = f"failed: exit {code}, see {out_dir / 'anchor.log'}"
        return RunResult(ANCHOR_NAME, seed, "anchor", status=status, output=str(out_dir))
    return anchor_result(json.loads(out_json.read_text()), seed, out_json, split, log)


def anchor_result(
    done: dict[str, Any], seed: int, source: Path, split: Split, log: Callable[[str], None]
) -> RunResult:
    """The run's result: the script's AP, AP50 and seconds, and the other metrics from the
    re-evaluation of its saved model (cached in metrics.json beside the result; absent when
    the script saved no model)."""
    result = RunResult(
        ANCHOR_NAME,
        seed,
        "anchor",
        ap=done["AP"],
        ap50=done["AP50"],
        train_seconds=done["train_seconds"],
        iterations=done.get("iters"),
        output=str(source),
    )
    model_file = Path(str(source) + ".model.pth")
    cache = source.parent / "metrics.json"
    if cache.is_file():
        metrics = json.loads(cache.read_text())["bbox"]
    elif model_file.is_file():
        log(f"{ANCHOR_NAME} seed {seed}: evaluating {model_file} for every metric")
        metrics = evaluate_anchor_model(model_file, split)
        cache.write_text(json.dumps({"bbox": metrics, "model": str(model_file)}, indent=1))
    else:
        log(f"{ANCHOR_NAME} seed {seed}: no {model_file.name}; AP and AP50 only")
        return result
    for key in ("AP", "AP50"):
        if metrics[key] is not None and abs(metrics[key] - done[key]) > AGREEMENT:
            log(
                f"{ANCHOR_NAME} seed {seed}: the re-evaluation's {key} {metrics[key]:.2f} differs "
                f"from the script's {done[key]:.2f}; the table shows the script's"
            )
    result.set_metrics({**metrics, "AP": done["AP"], "AP50": done["AP50"]})
    return result


def build_anchor_model(num_classes: int):
    """torchvision's detector exactly as the anchor script builds it (K classes + background)."""
    import torch
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    backbone = resnet_fpn_backbone(
        backbone_name="resnet18", weights=None, norm_layer=torch.nn.BatchNorm2d, trainable_layers=5
    )
    return FasterRCNN(backbone, num_classes=num_classes + 1, min_size=320, max_size=512)


def evaluate_anchor_model(model_file: Path, split: Split) -> dict[str, Any]:
    """The anchor's saved detector on split.val, as the script evaluates it, with resdet's COCO
    evaluation (pycocotools): AP, AP50, AP75, APs, APm, APl and per-category AP in percent."""
    import torch
    import torchvision.transforms.functional as TF
    from PIL import Image, ImageFile
    from tqdm import tqdm

    from ..evaluation.coco import coco_evaluate

    train = json.loads(Path(split.train).read_text())
    val = json.loads(Path(split.val).read_text())
    model = build_anchor_model(len(train["categories"]))
    model.load_state_dict(torch.load(model_file, map_location="cpu", weights_only=True))
    model.eval()
    results: list[dict[str, Any]] = []
    truncated = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True  # as the script decodes them
    try:
        with torch.inference_mode():
            for info in tqdm(val["images"], desc="anchor eval", unit="img", file=sys.stderr):
                with Image.open(Path(split.images) / info["file_name"]) as image:
                    tensor = TF.to_tensor(image.convert("RGB"))
                results += _as_coco_results(info["id"], model([tensor])[0])
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = truncated
    return coco_evaluate(split.val, results)


def _as_coco_results(image_id: int, out: dict[str, Any]) -> list[dict[str, Any]]:
    """torchvision's output for one image as COCO results (its labels are the category ids, as
    the anchor script writes them)."""
    return [
        {"image_id": image_id, "category_id": label, "bbox": [x0, y0, x1 - x0, y1 - y0], "score": s}
        for (x0, y0, x1, y1), s, label in zip(
            out["boxes"].tolist(), out["scores"].tolist(), out["labels"].tolist(), strict=True
        )
    ]
