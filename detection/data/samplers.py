"""Batch samplers: an infinite seeded training stream with aspect-ratio grouping, sharded by
rank, and the evaluation sampler (contiguous disjoint shards, no padding)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch


def aspect_groups(aspect_ratios: np.ndarray) -> np.ndarray:
    """Group id per image: 0 landscape or square (w >= h), 1 portrait."""
    return (np.asarray(aspect_ratios) < 1.0).astype(np.int64)


class TrainingBatchSampler(torch.utils.data.Sampler):
    """Yields batches forever: lists of (dataset index, augmentation seed).

    Epoch e visits a permutation drawn from (seed, e); rank r takes every world_size-th index
    of it; indices are grouped by aspect ratio (a batch is all landscape or all portrait, a group
    carrying its unfinished batch into the next epoch) and a batch is emitted when its last image
    arrives. The whole stream, augmentation seeds included, is a function of (seed, rank,
    world_size, iteration) only, so `start_iter=k` resumes at exactly batch k.

    passes: gradient accumulation (solver.accumulate). Each iteration's batch of `batch_size`
    images is yielded as `passes` consecutive lists of batch_size / passes; the images and their
    augmentation seeds do not depend on `passes`, and `start_iter` still counts iterations
    (optimizer steps), so a run sees the same data whatever its accumulation.
    """

    def __init__(
        self,
        num_images: int,
        batch_size: int,
        *,
        groups: np.ndarray | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        start_iter: int = 0,
        passes: int = 1,
    ):
        if batch_size <= 0:
            raise ValueError(f"batch size must be positive, got {batch_size}")
        if passes <= 0 or batch_size % passes:
            raise ValueError(
                f"{passes} passes per iteration must divide the batch size {batch_size}"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        if num_images < world_size:
            raise ValueError(
                f"the training set has {num_images} images, fewer than the {world_size} processes"
            )
        self.num_images = num_images
        self.batch_size = batch_size
        self.groups = (
            np.zeros(num_images, np.int64) if groups is None else np.asarray(groups, np.int64)
        )
        if len(self.groups) != num_images:
            raise ValueError(f"{len(self.groups)} group ids for {num_images} images")
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start_iter = start_iter
        self.passes = passes

    def _epoch_batches(self, epoch: int, carry: dict[int, np.ndarray]) -> np.ndarray:
        """The [B, batch_size] batches completed in this epoch, in completion order; updates the
        per-group carry-over."""
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_images)
        shard = perm[self.rank :: self.world_size]
        shard_groups = self.groups[shard]
        batches, done_at = [], []
        for g in np.union1d(shard_groups, np.fromiter(carry, np.int64, len(carry))).tolist():
            pos = np.flatnonzero(shard_groups == g)
            left = carry.get(g, np.zeros(0, np.int64))
            members = np.concatenate([left, shard[pos]])
            # position in the shard at which each member arrived (carried ones: before it)
            arrival = np.concatenate([np.full(len(left), -1), pos])
            n = len(members) // self.batch_size
            batches.append(members[: n * self.batch_size].reshape(n, self.batch_size))
            done_at.append(arrival[self.batch_size - 1 : n * self.batch_size : self.batch_size])
            carry[g] = members[n * self.batch_size :]
        order = np.argsort(np.concatenate(done_at), kind="stable")
        return np.concatenate(batches)[order]

    def batch_indices(self) -> Iterator[np.ndarray]:
        """The stream of index batches from start_iter on (no augmentation seeds)."""
        carry: dict[int, np.ndarray] = {}
        iteration, epoch = 0, 0
        while True:
            batches = self._epoch_batches(epoch, carry)
            epoch += 1
            if iteration + len(batches) <= self.start_iter:
                iteration += len(batches)
                continue
            yield from batches[max(0, self.start_iter - iteration) :]
            iteration += len(batches)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        size = self.batch_size // self.passes
        for iteration, batch in enumerate(self.batch_indices(), start=self.start_iter):
            seeds = np.random.SeedSequence([self.seed, self.rank, self.world_size, iteration])
            aug_seeds = seeds.generate_state(len(batch)).tolist()
            samples = list(zip(batch.tolist(), aug_seeds, strict=True))
            for start in range(0, len(samples), size):
                yield samples[start : start + size]


class InferenceSampler(torch.utils.data.Sampler):
    """Every index exactly once, rank r taking the r-th of world_size contiguous shards whose
    sizes differ by at most one; the shards' union is the dataset, without duplicates."""

    def __init__(self, size: int, *, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        bounds = np.linspace(0, size, world_size + 1).round().astype(np.int64)
        self.size = size
        self.start, self.end = int(bounds[rank]), int(bounds[rank + 1])

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.end))

    def __len__(self) -> int:
        return self.end - self.start
