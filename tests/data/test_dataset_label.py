"""A dataset is named by its registered name, a free-text name, or else by its annotation file."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from detection.config import load_config
from detection.config.datasets import DATASETS, dataset_label, file_label
from detection.config.schema import DatasetConfig
from detection.data import COCODataset

COCO_CONFIG = Path(__file__).resolve().parents[2] / "configs/coco/Base-C4.yaml"


def test_registered_name_only():
    cfg = load_config()
    assert dataset_label(cfg.data.test) == "coco_2017_val"
    assert dataset_label(cfg.data.train) == "coco_2017_train"


@pytest.mark.parametrize("config", [None, COCO_CONFIG])
def test_default_name_with_user_files_is_labelled_by_the_file(tmp_path, config):
    # the user sets only the files: a config of the COCO family keeps data.test.name
    # coco_2017_val (the schema's defaults have no name then); neither may label the data
    ann = tmp_path / "mydata/annotations/instances_val.json"
    cfg = load_config(config, [f"data.test.annotations={ann}", f"data.test.images={tmp_path}"])
    assert cfg.data.test.name == (None if config is None else "coco_2017_val")
    assert dataset_label(cfg.data.test) == "mydata/instances_val"


def test_free_text_name_with_files_is_labelled_by_the_name(tmp_path):
    overrides = [
        "data.test.name=my warehouse boxes",
        f"data.test.annotations={tmp_path / 'val.json'}",
        f"data.test.images={tmp_path}",
    ]
    assert dataset_label(load_config(None, overrides).data.test) == "my warehouse boxes"


def test_no_name_or_registered_file_itself(tmp_path, monkeypatch):
    assert dataset_label(DatasetConfig(name=None, annotations="a/b/val.json")) == "b/val"
    # the registered name's own file, spelled out: still that name
    monkeypatch.setenv("RESDET_DATASETS", str(tmp_path))
    own = str(tmp_path / DATASETS["shapes_val"][0])
    assert dataset_label(DatasetConfig(name="shapes_val", annotations=own)) == "shapes_val"
    other = str(tmp_path / "elsewhere/instances_val.json")
    assert dataset_label(DatasetConfig(name="shapes_val", annotations=other)) == (
        "elsewhere/instances_val"
    )
    with pytest.raises(ValueError, match="registered name or both"):
        dataset_label(DatasetConfig(name=None))


def test_file_label_forms(tmp_path, monkeypatch):
    assert file_label("/data/voc/voc_2007_test.json") == "voc/voc_2007_test"
    assert file_label("/data/shapes/Annotations/instances_val.json") == "shapes/instances_val"
    assert file_label("/val.json") == "val"
    monkeypatch.chdir(tmp_path)
    assert file_label("val.json") == f"{os.path.basename(tmp_path)}/val"


def test_dataset_summary_names_the_label(messy_coco, caplog):
    ann, images = messy_coco
    with caplog.at_level(logging.INFO, logger="detection.data"):
        COCODataset(ann, images, train=False, label="my set")
        COCODataset(ann, images, train=False)
    first, second = [r.getMessage() for r in caplog.records if "kept" in r.getMessage()]
    assert first.startswith("dataset my set (evaluation): kept 5 images")
    assert second.startswith(f"dataset {file_label(ann)} (evaluation): kept 5 images")
