"""Gradient accumulation (solver.accumulate): the data stream does not depend on it, the
schedule counts optimizer steps, and k passes of 1 image give the gradient of 1 pass of k."""

import itertools
import json

import numpy as np
import pytest
import torch
from helpers import read_jsonl
from PIL import Image

from detection.config import ConfigError, load_config
from detection.data import TrainingBatchSampler, per_rank_batch_size
from detection.engine.optim import build_optimizer, build_scheduler
from detection.engine.trainer import Trainer, check_training_config

# two 128 x 128 images (no resize at min_size_train 128), two boxes each, placed differently
BOXES = {
    "a.png": [([10, 10, 50, 60], 1), ([70, 20, 50, 80], 2)],
    "b.png": [([20, 30, 70, 60], 2), ([5, 80, 45, 45], 1)],
}


def write_two_images(folder):
    """A COCO dataset of the two images of BOXES (textured, so features differ); its json."""
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for image_id, (name, boxes) in enumerate(BOXES.items(), start=1):
        pixels = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
        for (x, y, w, h), label in boxes:
            pixels[y : y + h, x : x + w] = (200, 40, 40) if label == 1 else (40, 40, 200)
        Image.fromarray(pixels).save(folder / name)
        images.append({"id": image_id, "file_name": name, "width": 128, "height": 128})
        for (x, y, w, h), label in boxes:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": label,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    path = folder / "train.json"
    categories = [{"id": 1, "name": "red"}, {"id": 2, "name": "blue"}]
    path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return path


def gradients_of_first_step(trainer):
    """Train one iteration; the gradients the optimizer step saw, by parameter name."""
    named = [(n, p) for n, p in trainer.model.named_parameters() if p.requires_grad]
    grads = {}

    def capture(optimizer, args, kwargs):
        if not grads:
            grads.update({n: p.grad.detach().clone() for n, p in named if p.grad is not None})

    trainer.optimizer.register_step_pre_hook(capture)
    trainer.train()
    return grads


def test_two_passes_of_one_image_equal_one_pass_of_two(tiny_config, tmp_path):
    """k=2 passes x 1 image give the gradients of k=1 x 2 images (float tolerance).

    The losses are means over the anchors / RoIs sampled in the whole pass (as torchvision's),
    so one pass over two images equals the mean of two one-image passes only when each image
    contributes the same number of sampled anchors and RoIs, and the sampling picks the same
    ones whatever the order in which the random generator is drawn. The config makes that so:
    two images of the same size (no resize: min_size_train 128, flip off; no padding
    difference), so the same anchors; RPN IoU thresholds [0.5, 0.5] (no anchor ignored) and a
    sampling budget above the anchor count, so every anchor is sampled; proposal NMS at IoU 1.0
    so that each image keeps post_nms_topk_train = 16 proposals, plus its 2 ground-truth boxes,
    all sampled (the RoI matcher ignores none); GroupNorm, which is per image. The sampler is
    seeded and yields the same images for both (the stream does not depend on accumulate).
    """
    path, _ = tiny_config
    ann = write_two_images(tmp_path)
    common = [
        f"data.train.annotations={ann}",
        f"data.train.images={tmp_path}",
        "model.roi_heads.num_classes=2",
        "model.rpn.iou_thresholds=[0.5,0.5]",
        "model.rpn.batch_size_per_image=100000",
        "model.rpn.nms_thresh=1.0",
        "model.rpn.post_nms_topk_train=16",
        "model.roi_heads.batch_size_per_image=100000",
        "solver.ims_per_batch=2",
        "solver.max_iter=1",
        "solver.steps=[]",
        "solver.warmup_iters=0",
    ]
    grads, losses = {}, {}
    for k in (1, 2):
        out = tmp_path / f"k{k}"
        cfg = load_config(path, [*common, f"solver.accumulate={k}", f"output_dir={out}"])
        grads[k] = gradients_of_first_step(Trainer(cfg))
        (losses[k],) = [r for r in read_jsonl(out / "metrics.jsonl") if "total_loss" in r]
    assert grads[1].keys() == grads[2].keys() and len(grads[1]) > 50
    assert sum(g.abs().sum() for g in grads[1].values()) > 0
    for name, g in grads[1].items():
        torch.testing.assert_close(grads[2][name], g, rtol=1e-4, atol=1e-6, msg=name)
    # the logged losses are the mean over the passes: the same as one pass's
    for term in ("loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box", "total_loss"):
        assert losses[2][term] == pytest.approx(losses[1][term], rel=1e-5), term


def test_schedule_counts_optimizer_steps(tiny_config):
    path, out = tiny_config
    cfg = load_config(path, ["solver.accumulate=2", "solver.max_iter=3", "solver.steps=[2]"])
    trainer = Trainer(cfg)
    passes = []
    forward = trainer.model.forward
    trainer.model.forward = lambda images, targets=None: (
        passes.append(len(images)) or forward(images, targets)
    )
    trainer.train()
    # 3 optimizer steps of 2 passes of 1 image (ims_per_batch 2)
    assert passes == [1] * 6
    assert trainer.iteration == 3 and trainer.scheduler.last_epoch == 3
    records = [r for r in read_jsonl(out / "metrics.jsonl") if "total_loss" in r]
    assert [r["iteration"] for r in records] == [1, 2, 3]
    # the learning rates of 3 scheduler steps (warmup 2, decay at 2), not of 6
    optimizer = build_optimizer(trainer.model, cfg)
    scheduler = build_scheduler(optimizer, cfg)
    expected = []
    for _ in range(3):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert len(set(expected)) == 3
    assert [r["lr"] for r in records] == pytest.approx(expected)
    assert torch.load(out / "model_final.pth", weights_only=True)["iteration"] == 3


def take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_sampler_passes_split_each_batch_and_resume_by_iteration():
    groups = (np.random.default_rng(0).random(53) < 0.3).astype(np.int64)
    whole = take(TrainingBatchSampler(53, 4, groups=groups, seed=5), 30)
    for passes in (2, 4):
        split = take(TrainingBatchSampler(53, 4, groups=groups, seed=5, passes=passes), 30 * passes)
        assert all(len(b) == 4 // passes for b in split)
        # the same images and augmentation seeds, in the same order, whatever the passes
        assert [sum(split[i : i + passes], []) for i in range(0, len(split), passes)] == whole
        # start_iter counts iterations (optimizer steps), not passes
        resumed = TrainingBatchSampler(53, 4, groups=groups, seed=5, passes=passes, start_iter=7)
        assert take(resumed, 5 * passes) == split[7 * passes : 12 * passes]
    with pytest.raises(ValueError, match="3 passes per iteration must divide the batch size 4"):
        TrainingBatchSampler(53, 4, passes=3)


def test_accumulate_must_split_each_process_batch(tiny_config):
    assert per_rank_batch_size(16, 2, 4) == 8
    with pytest.raises(ConfigError, match=r"2 images per process, which solver.accumulate=4"):
        per_rank_batch_size(8, 4, 4)
    path, _ = tiny_config
    cfg = load_config(path, ["solver.accumulate=2"])  # 2 images, 2 passes: fine on one process
    check_training_config(cfg, 1)
    with pytest.raises(ConfigError, match="solver.accumulate=2 passes cannot share"):
        check_training_config(cfg, 2)
