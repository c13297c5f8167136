"""Inference over loaders and run_evaluation: single process, and 2 gloo processes."""

from __future__ import annotations

import json

import pytest
import torch.multiprocessing as mp
from evaluation_helpers import (
    HANDMADE,
    ddp_worker,
    handmade_batches,
    handmade_detections,
    handmade_setup,
)
from helpers import free_port

from detection.evaluation import (
    coco_evaluate,
    evaluate_checkpoint,
    evaluate_model,
    inference_on_dataset,
    load_checkpoint_model,
    run_evaluation,
)


def test_inference_on_dataset_gives_coco_results(handmade):
    ann, dets = handmade
    cfg, dataset, model = handmade_setup(ann)
    model.train()
    ids = list(HANDMADE)
    # image 2 twice: it counts once
    loader = handmade_batches([*ids, 2], batch_size=3)
    results = inference_on_dataset(
        model, loader, label_to_category_id=dataset.label_to_category_id, progress=False
    )
    assert model.training  # the mode it had comes back
    assert [r["image_id"] for r in results] == sorted(r["image_id"] for r in results)
    key = lambda r: (r["image_id"], r["category_id"], r["score"])  # noqa: E731
    assert len(results) == len(dets)
    for got, want in zip(sorted(results, key=key), sorted(dets, key=key), strict=True):
        assert got["image_id"] == want["image_id"]
        assert got["category_id"] == want["category_id"]
        assert got["bbox"] == pytest.approx(want["bbox"], abs=1e-3)  # float32 round trip
        assert got["score"] == pytest.approx(want["score"], abs=1e-6)


def test_run_evaluation_writes_metrics(handmade, tmp_path):
    ann, _ = handmade
    cfg, dataset, model = handmade_setup(ann)
    record = run_evaluation(
        model, cfg, tmp_path / "out", dataset, handmade_batches(list(HANDMADE)), progress=False
    )
    written = json.loads((tmp_path / "out/metrics.json").read_text())
    assert written == json.loads(json.dumps(record))
    assert set(record) >= {"bbox", "checkpoint", "config", "dataset", "num_images"}
    assert record["num_images"] == len(HANDMADE)
    assert record["config"]["model"]["roi_heads"]["num_classes"] == 4
    detections = json.loads((tmp_path / "out/detections.json").read_text())
    assert record["bbox"] == coco_evaluate(ann, detections)
    assert 5 < record["bbox"]["AP"] < 95


def test_run_evaluation_checks_the_classes(handmade):
    ann, _ = handmade
    _, dataset, model = handmade_setup(ann)
    from detection import load_config

    cfg = load_config(None, ["model.roi_heads.num_classes=80"])
    with pytest.raises(ValueError, match="80 classes .* 4 categories"):
        run_evaluation(model, cfg, None, dataset, handmade_batches([1]), progress=False)


def test_distributed_evaluation_equals_one_process(handmade, tmp_path):
    ann, _ = handmade
    cfg, dataset, model = handmade_setup(ann)
    single = run_evaluation(
        model, cfg, tmp_path / "single", dataset, handmade_batches(list(HANDMADE)), progress=False
    )
    out = tmp_path / "ddp"
    out.mkdir()
    mp.spawn(ddp_worker, args=(2, free_port(), str(ann), str(out)), nprocs=2, join=True)
    records = [json.loads((out / f"record_rank{r}.json").read_text()) for r in range(2)]
    assert records[0] == records[1]  # every rank gets rank 0's record
    assert records[0]["num_images"] == len(HANDMADE)  # image 1 was on both ranks: once
    assert records[0]["inference"]["processes"] == 2
    assert records[0]["bbox"] == json.loads(json.dumps(single["bbox"]))
    assert json.loads((out / "detections.json").read_text()) == json.loads(
        (tmp_path / "single/detections.json").read_text()
    )
    assert len(handmade_detections()) == len(json.loads((out / "detections.json").read_text()))


def test_evaluate_model_for_the_training_loop(tiny_checkpoint, tiny_coco, tmp_path):
    ann, images = tiny_coco
    overrides = [
        "data.test.name=null",
        f"data.test.annotations={ann}",
        f"data.test.images={images}",
        "data.num_workers=0",
    ]
    model, cfg = load_checkpoint_model(tiny_checkpoint, overrides=overrides)
    model.train()  # as the training loop hands it over
    record = evaluate_model(model, cfg, progress=False)
    assert model.training
    assert record["num_images"] == 3 and record["checkpoint"] is None
    assert not list(tmp_path.glob("**/metrics.json"))  # output_dir=None writes nothing
    shown = []
    saved = evaluate_checkpoint(
        tiny_checkpoint,
        overrides=overrides,
        # a function of the resolved config names the output folder
        output_dir=lambda resolved: tmp_path / f"out{resolved.data.num_workers}",
        progress=False,
        show_config=shown.append,
    )
    assert [c.data.test.annotations for c in shown] == [str(ann)]
    assert saved["bbox"] == record["bbox"]
    assert json.loads((tmp_path / "out0/metrics.json").read_text())["checkpoint"] == str(
        tiny_checkpoint
    )
    with pytest.raises(ValueError, match="world_size=2 but torch.distributed has 1 process"):
        evaluate_model(model, cfg, rank=0, world_size=2)
