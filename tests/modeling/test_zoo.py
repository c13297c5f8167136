"""Published weights by name: fetched into the torch hub cache (hash checked), converted once,
cached; clear errors offline or on a wrong file, nothing half-written. A local file stands in for
the download (a file:// URL through the same download code); nothing reaches the network."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights, fasterrcnn_resnet50_fpn

from detection import Predictor, build_model
from detection.cli.infer import main as infer_main
from detection.config import load_config
from detection.modeling import zoo
from detection.modeling.convert import TORCHVISION_FPN_OVERRIDES, coco_class_names

NAME = "fasterrcnn_resnet50_fpn_coco"
SMALL = ["input.min_size_test=96", "input.max_size_test=128"]  # quick inference


def test_the_published_entry_is_torchvisions_coco_file():
    entry = zoo.DETECTORS[NAME]
    assert entry.url == FasterRCNN_ResNet50_FPN_Weights.COCO_V1.url
    assert entry.hash_prefix == "258fb6c6"
    for alias in (NAME, "FasterRCNN_ResNet50_FPN_Weights.COCO_V1", "fasterrcnn_resnet50_fpn"):
        assert zoo.published(alias) is entry
    assert zoo.published("resnet50") is None


@pytest.fixture(scope="module")
def published_file(tmp_path_factory):
    """A fasterrcnn_resnet50_fpn state dict (seeded random weights; class 1, 'person', scores
    high everywhere, so that every image has detections) named <stem>-<its sha256 prefix>.pth."""
    torch.manual_seed(0)
    model = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.bias[1] = 12.0
    folder = tmp_path_factory.mktemp("published")
    tmp = folder / "state.pth"
    torch.save(model.state_dict(), tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    path = folder / f"fasterrcnn_resnet50_fpn_coco-{digest[:8]}.pth"
    tmp.rename(path)
    return path


@pytest.fixture
def hub(tmp_path, monkeypatch, published_file):
    """TORCH_HOME in tmp_path and the published entry's URL pointing at the stand-in file;
    returns the hub's checkpoints folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    entry = dataclasses.replace(zoo.DETECTORS[NAME], url=published_file.as_uri())
    monkeypatch.setitem(zoo.DETECTORS, NAME, entry)
    return tmp_path / "torch" / "hub" / "checkpoints"


def _files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_first_use_downloads_checks_converts_and_caches(hub, published_file):
    path = zoo.resolve_weights(NAME, progress=False)
    assert _files(hub) == [
        published_file.name,
        f"resdet/{published_file.stem}.resdet{zoo.CONVERTED_VERSION}.pth",
    ]
    assert path == hub / "resdet" / f"{published_file.stem}.resdet{zoo.CONVERTED_VERSION}.pth"
    ckpt = torch.load(path, weights_only=True)
    source = torch.load(published_file, weights_only=True)
    assert ckpt["class_names"] == coco_class_names()
    torch.testing.assert_close(
        ckpt["model"]["backbone.bottom_up.stem.conv1.weight"], source["backbone.body.conv1.weight"]
    )
    torch.testing.assert_close(
        ckpt["model"]["roi_heads.predictor.cls_score.bias"],
        source["roi_heads.box_predictor.cls_score.bias"],
    )
    # converted once: later uses read the cache, even with the download gone
    (hub / published_file.name).unlink()
    assert zoo.resolve_weights(NAME) == path


def test_a_file_of_that_name_comes_first(hub, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / NAME).write_bytes(b"mine")
    assert zoo.resolve_weights(NAME).resolve() == tmp_path / NAME
    assert not hub.exists()  # nothing fetched


def test_offline_error_names_url_place_and_local_path_flag(hub, monkeypatch, tmp_path):
    url = (tmp_path / "nowhere" / "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth").as_uri()
    monkeypatch.setitem(zoo.DETECTORS, NAME, dataclasses.replace(zoo.DETECTORS[NAME], url=url))
    with pytest.raises(zoo.WeightsDownloadError) as e:
        zoo.resolve_weights(NAME)
    message = str(e.value)
    assert url in message
    assert str(hub / "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth") in message
    assert "--weights model.pth" in message and "resdet convert-weights" in message
    assert _files(hub) == []  # no partial download, no conversion


def test_wrong_hash_leaves_nothing_in_the_cache(hub, published_file, monkeypatch, tmp_path):
    liar = tmp_path / "fasterrcnn_resnet50_fpn_coco-00000000.pth"
    liar.write_bytes(published_file.read_bytes())
    entry = dataclasses.replace(zoo.DETECTORS[NAME], url=liar.as_uri())
    monkeypatch.setitem(zoo.DETECTORS, NAME, entry)
    with pytest.raises(zoo.WeightsDownloadError, match="invalid hash value"):
        zoo.resolve_weights(NAME)
    assert _files(hub) == []


def test_a_wrong_file_put_in_the_cache_by_hand_is_refused(hub, published_file):
    hub.mkdir(parents=True)
    (hub / published_file.name).write_bytes(b"not the weights")
    with pytest.raises(zoo.WeightsDownloadError, match="is not the published file") as e:
        zoo.resolve_weights(NAME)
    assert "Delete it" in str(e.value)
    assert not (hub / "resdet").exists()


def test_unknown_name_suggests_the_closest():
    with pytest.raises(FileNotFoundError, match=f"Did you mean '{NAME}'"):
        zoo.resolve_weights("fasterrcnn_resnet50_fpn_cocoo")


def test_from_pretrained_detects_with_coco_names(hub):
    predictor = Predictor.from_pretrained(NAME, SMALL, score_thresh=0.5)
    assert predictor.class_names == coco_class_names()
    image = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    result = predictor(image)
    assert len(result["labels"]) > 0 and set(result["class_names"]) == {"person"}


def test_a_path_given_to_the_constructor_names_the_loaders(tmp_path):
    with pytest.raises(TypeError, match="from_checkpoint.*from_pretrained"):
        Predictor(str(tmp_path / "model.pth"))


def test_resdet_infer_with_weights_by_name_draws_coco_names(hub, tmp_path, capsys):
    photo = tmp_path / "photo.jpg"
    Image.fromarray(np.full((120, 160, 3), 128, np.uint8)).save(photo)
    out = tmp_path / "out"
    argv = ["--weights", NAME, "--input", str(photo), "--output", str(out), "--no-progress"]
    assert infer_main([*argv, "--device", "cpu", *SMALL]) == 0
    assert "device: cpu (" in capsys.readouterr().err
    record = json.loads((out / "photo.json").read_text())
    assert record["detections"] and {d["class"] for d in record["detections"]} == {"person"}
    assert (out / "photo.jpg").is_file()


def test_model_weights_by_name_starts_fine_tuning(hub):
    cfg = load_config(None, [*TORCHVISION_FPN_OVERRIDES, f"model.weights={NAME}"])
    model = build_model(cfg, class_names=coco_class_names())
    report = model.weights_report
    assert report.source == NAME and report.predictor == "copied"
    assert not report.reinitialised and len(report.loaded) > 100
