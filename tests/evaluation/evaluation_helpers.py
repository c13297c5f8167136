"""Shared test data of tests/evaluation (a uniquely named module: test files import it, not
conftest, which several test folders have)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
TINY_OVERRIDES = [
    "model.backbone.weights=null",
    "input.min_size_test=96",
    "input.max_size_test=160",
    "model.roi_heads.num_classes=3",
    "model.rpn.post_nms_topk_test=32",
    "data.num_workers=0",
]

# non-contiguous category ids; 90 has no ground truth at all
CATEGORIES = [
    {"id": 42, "name": "zebra"},
    {"id": 3, "name": "cat"},
    {"id": 17, "name": "dog"},
    {"id": 90, "name": "unicorn"},
]
# image id -> (width, height, [(category id, [x, y, w, h], iscrowd)]); sizes differ so that a
# test model can recognise each image by its shape
HANDMADE = {
    1: (640, 480, [(3, [50, 50, 300, 250], 0), (17, [400, 100, 60, 50], 0),
                   (42, [10, 400, 20, 15], 0), (3, [350, 250, 250, 200], 1)]),
    2: (320, 240, [(3, [20, 30, 80, 60], 0), (3, [150, 40, 70, 90], 0),
                   (17, [250, 200, 25, 20], 0)]),
    3: (200, 300, []),
    4: (500, 400, [(42, [30, 30, 250, 200], 0), (42, [300, 250, 50, 60], 0),
                   (17, [0, 0, 200, 150], 1), (3, [400, 20, 12, 10], 0)]),
    5: (256, 256, [(17, [10, 10, 200, 180], 0), (17, [60, 50, 150, 150], 0),
                   (42, [220, 220, 30, 25], 0)]),
    6: (300, 200, [(3, [5, 5, 28, 20], 0), (3, [40, 10, 20, 30], 0), (17, [100, 60, 150, 130], 0)]),
}  # fmt: skip


def write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def handmade_gt() -> dict:
    images, annotations = [], []
    for image_id, (w, h, anns) in HANDMADE.items():
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "width": w, "height": h})
        for cat, box, crowd in anns:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": cat,
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": crowd,
                }
            )
    return {"images": images, "annotations": annotations, "categories": CATEGORIES}


def handmade_detections(seed: int = 0) -> list[dict]:
    """Jittered ground truth (some missed, some duplicated, some with the wrong class), boxes on
    crowd regions, false positives of every category; random scores."""
    rng = np.random.default_rng(seed)
    cats = [c["id"] for c in CATEGORIES]
    dets = []
    for image_id, (w, h, anns) in HANDMADE.items():
        for cat, (x, y, bw, bh), _crowd in anns:
            if rng.random() < 0.15:
                continue  # missed
            for _ in range(1 + int(rng.random() < 0.3)):  # sometimes a duplicate
                jitter = rng.normal(0, 0.08, 4) * [bw, bh, bw, bh]
                box = [x + jitter[0], y + jitter[1], bw + jitter[2], bh + jitter[3]]
                label = cat if rng.random() > 0.1 else int(rng.choice(cats))
                dets.append((image_id, label, box, float(rng.random())))
        for _ in range(3):  # false positives
            bw, bh = rng.uniform(5, w / 2), rng.uniform(5, h / 2)
            box = [rng.uniform(0, w - bw), rng.uniform(0, h - bh), bw, bh]
            dets.append((image_id, int(rng.choice(cats)), box, float(rng.random() * 0.6)))
    return [
        {"image_id": i, "category_id": c, "bbox": [float(v) for v in b], "score": s}
        for i, c, b, s in dets
    ]


class TableModel(torch.nn.Module):
    """A stand-in detector that answers each image (recognised by its size) with fixed
    detections: the model I/O of detection.build_model, exact and instant."""

    def __init__(self, detections: list[dict], category_to_label: dict[int, int]):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))  # gives the module a device
        sizes = {i: (h, w) for i, (w, h, _) in HANDMADE.items()}
        self.table: dict[tuple[int, int], dict[str, torch.Tensor]] = {}
        for image_id, size in sizes.items():
            mine = [d for d in detections if d["image_id"] == image_id]
            xywh = torch.tensor([d["bbox"] for d in mine], dtype=torch.float32).reshape(-1, 4)
            self.table[size] = {
                "boxes": torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1),
                "scores": torch.tensor([d["score"] for d in mine], dtype=torch.float32),
                "labels": torch.tensor(
                    [category_to_label[d["category_id"]] for d in mine], dtype=torch.int64
                ),
            }
        self.calls = 0

    def forward(self, images):
        assert not self.training and not torch.is_grad_enabled()
        self.calls += 1
        return [
            {k: v.clone() for k, v in self.table[tuple(img.shape[-2:])].items()} for img in images
        ]


def handmade_batches(image_ids, batch_size: int = 2) -> list:
    """(images, targets) batches of the hand-made images (black, in their original sizes)."""
    items = [(torch.zeros(3, HANDMADE[i][1], HANDMADE[i][0]), {"image_id": i}) for i in image_ids]
    return [
        ([img for img, _ in items[s : s + batch_size]], [t for _, t in items[s : s + batch_size]])
        for s in range(0, len(items), batch_size)
    ]


def handmade_dataset(ann_path: Path) -> SimpleNamespace:
    """What run_evaluation needs of a dataset, for the hand-made json."""
    cats = sorted(c["id"] for c in CATEGORIES)
    by_id = {c["id"]: c["name"] for c in CATEGORIES}
    return SimpleNamespace(
        annotations_path=ann_path,
        class_names=[by_id[c] for c in cats],
        label_to_category_id={k + 1: c for k, c in enumerate(cats)},
        image_ids=list(HANDMADE),
        images_dir=ann_path.parent,
    )


def handmade_setup(ann_path: Path):
    """(cfg, dataset, model) for run_evaluation on the hand-made set."""
    from detection import load_config

    dataset = handmade_dataset(ann_path)
    cfg = load_config(None, [f"model.roi_heads.num_classes={len(dataset.class_names)}"])
    labels = {c: k for k, c in dataset.label_to_category_id.items()}
    return cfg, dataset, TableModel(handmade_detections(), labels)


def ddp_worker(rank: int, world_size: int, port: int, ann_path: str, out_dir: str) -> None:
    """One process of the distributed test: its shard, plus one image of rank 0's shard again
    on rank 1 (gathering must count it once)."""
    import torch.distributed as dist

    from detection.evaluation import run_evaluation

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        cfg, dataset, model = handmade_setup(Path(ann_path))
        ids = list(HANDMADE)
        shards = [ids[:3], [ids[0], *ids[3:]]]  # image 1 on both ranks
        record = run_evaluation(
            model,
            cfg,
            out_dir if rank == 0 else None,
            dataset,
            handmade_batches(shards[rank]),
            progress=False,
        )
        Path(out_dir, f"record_rank{rank}.json").write_text(json.dumps(record))
    finally:
        dist.destroy_process_group()
