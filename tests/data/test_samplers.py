"""Samplers and loaders: sharding, aspect-ratio grouping, the seeded stream and its resume."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from detection.config import load_config
from detection.data import (
    InferenceSampler,
    TrainingBatchSampler,
    build_dataset,
    build_test_loader,
    build_train_loader,
    collate,
    per_rank_batch_size,
)

SHAPES_CONFIG = Path(__file__).resolve().parents[2] / "configs/shapes/Base-shapes.yaml"


@pytest.mark.parametrize("size", [0, 1, 2, 5, 7, 10, 101])
@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_inference_shards_cover_everything_once(size, world_size):
    shards = [
        list(InferenceSampler(size, rank=r, world_size=world_size)) for r in range(world_size)
    ]
    assert list(itertools.chain(*shards)) == list(range(size))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert [
        len(InferenceSampler(size, rank=r, world_size=world_size)) for r in range(world_size)
    ] == [len(s) for s in shards]


def take(sampler, n):
    return [b for b in itertools.islice(iter(sampler), n)]


def test_batches_are_grouped_by_aspect_ratio_and_resume_exactly():
    rng = np.random.default_rng(0)
    groups = (rng.random(53) < 0.3).astype(np.int64)
    sampler = TrainingBatchSampler(53, 4, groups=groups, seed=5)
    stream = take(sampler, 60)  # several epochs
    for batch in stream:
        assert len(batch) == 4 and len({groups[i] for i, _ in batch}) == 1
    assert take(TrainingBatchSampler(53, 4, groups=groups, seed=5), 60) == stream
    for k in (1, 13, 14, 37):
        resumed = TrainingBatchSampler(53, 4, groups=groups, seed=5, start_iter=k)
        assert take(resumed, 60 - k) == stream[k:]
    other = take(TrainingBatchSampler(53, 4, groups=groups, seed=6), 60)
    assert other != stream
    # every image comes round: 240 draws of 53 images, each seen 3 to 6 times
    counts = np.bincount([i for b in stream for i, _ in b], minlength=53)
    assert counts.min() >= 3 and counts.max() <= 6


def test_ranks_see_disjoint_shards_of_each_epoch():
    world, n, bs = 3, 30, 2
    firsts = []
    for r in range(world):
        sampler = TrainingBatchSampler(n, bs, seed=1, rank=r, world_size=world)
        firsts.append({i for b in take(sampler, n // world // bs) for i, _ in b})
    assert set.union(*firsts) == set(range(n)) and sum(map(len, firsts)) == n


def test_batch_size_must_divide():
    assert per_rank_batch_size(16, 4) == 4
    with pytest.raises(
        ValueError, match=r"ims_per_batch=6 must be a positive multiple of .* \(4\)"
    ):
        per_rank_batch_size(6, 4)


def test_collate_returns_lists():
    a, b = (torch.zeros(3, 4, 5), {"x": 1}), (torch.ones(3, 6, 2), {"x": 2})
    images, targets = collate([a, b])
    assert isinstance(images, list) and images[1].shape == (3, 6, 2)
    assert targets == [{"x": 1}, {"x": 2}]


def shapes_cfg(*overrides):
    return load_config(
        SHAPES_CONFIG,
        ["input.min_size_train=[96,128]", "input.max_size_train=200", *overrides],
    )


def same_batches(a, b):
    for (ia, ta), (ib, tb) in zip(a, b, strict=True):
        assert [t["image_id"] for t in ta] == [t["image_id"] for t in tb]
        for x, y in zip(ia, ib, strict=True):
            assert torch.equal(x, y)
        for x, y in zip(ta, tb, strict=True):
            assert torch.equal(x["boxes"], y["boxes"]) and torch.equal(x["labels"], y["labels"])


def test_train_loader_stream_is_a_function_of_seed_and_iteration(tiny_shapes):
    cfg = shapes_cfg("data.num_workers=0", "solver.ims_per_batch=4")
    dataset = build_dataset(cfg, "train")
    stream = list(itertools.islice(build_train_loader(cfg, dataset=dataset), 6))
    images, targets = stream[0]
    assert len(images) == len(targets) == 4
    for image, target in zip(images, targets, strict=True):
        assert min(image.shape[1:]) in (96, 128) or max(image.shape[1:]) == 200
        h, w = image.shape[1:]
        boxes = target["boxes"]
        assert (boxes >= 0).all() and (boxes[:, 0::2] <= w).all() and (boxes[:, 1::2] <= h).all()
    # with worker processes, and resumed at iteration 3, the batches are the same
    workers = shapes_cfg("data.num_workers=2", "solver.ims_per_batch=4")
    resumed = build_train_loader(workers, dataset=dataset, start_iter=3)
    same_batches(stream[3:], list(itertools.islice(resumed, 3)))
    # two ranks of 2 images each: batches of 2, a different shard each
    r0 = next(iter(build_train_loader(cfg, dataset=dataset, rank=0, world_size=2)))
    r1 = next(iter(build_train_loader(cfg, dataset=dataset, rank=1, world_size=2)))
    assert len(r0[0]) == len(r1[0]) == 2
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        build_train_loader(cfg, dataset=dataset, world_size=3)


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_test_loader_shards_the_image_set(tiny_shapes, world_size):
    cfg = shapes_cfg("data.num_workers=0")
    dataset = build_dataset(cfg, "test")
    seen = []
    for rank in range(world_size):
        loader = build_test_loader(
            cfg, rank=rank, world_size=world_size, batch_size=3, dataset=dataset
        )
        for images, targets in loader:
            assert len(images) == len(targets) <= 3
            for image, target in zip(images, targets, strict=True):
                assert tuple(image.shape[1:]) == tuple(target["orig_size"])  # not resized
            seen += [t["image_id"] for t in targets]
    assert sorted(seen) == sorted(dataset.image_ids.tolist())
    assert len(seen) == len(set(seen)) == 10
