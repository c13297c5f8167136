"""Resolving a dataset config to its files; the registry itself is detection.config.datasets."""

from __future__ import annotations

from pathlib import Path

from detection.config.datasets import (
    DATASETS,
    dataset_label,
    dataset_root,
    file_label,
    is_resolvable,
)

__all__ = ["DATASETS", "dataset_label", "dataset_root", "file_label", "resolve_dataset"]


def resolve_dataset(
    name: str | None, annotations: str | None = None, images: str | None = None
) -> tuple[Path, Path]:
    """(annotation json, image folder) of a dataset config; explicit paths beat the name."""
    if not is_resolvable(name, annotations, images):
        if name is not None:
            raise ValueError(
                f"unknown dataset {name!r}: registered names are {', '.join(DATASETS)}; "
                "or set both annotations and images"
            )
        raise ValueError("a dataset needs a registered name or both annotations and images")
    registered = DATASETS.get(name or "")
    root = dataset_root()
    ann = Path(annotations) if annotations is not None else root / registered[0]
    img = Path(images) if images is not None else root / registered[1]
    return ann, img
