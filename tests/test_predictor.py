"""detection.Predictor: every input kind gives model(tensor)'s detections, in input pixels."""

import numpy as np
import pytest
import torch
from helpers import ROOT
from PIL import Image

from detection import Predictor, load_model
from detection.config import load_config
from detection.modeling import build_model, inference_options, prepare_for_inference
from detection.utils.checkpoint import model_checkpoint, save_atomic

SMALL = [
    "model.backbone.name=resnet18",
    "model.backbone.weights=null",
    "model.roi_heads.num_classes=3",
    "model.roi_heads.pooler_resolution=8",
    "input.min_size_test=96",
    "input.max_size_test=128",
    "test.precision=fp32",
]
NAMES = ["circle", "square", "triangle"]


def small_model(extra=()):
    cfg = load_config(ROOT / "configs/coco/faster_rcnn_R50_C4_1x.yaml", [*SMALL, *extra])
    torch.manual_seed(0)
    model = build_model(cfg, load_weights=False, class_names=NAMES).eval()
    with torch.no_grad():  # spread the scores so that random weights give detections
        model.roi_heads.predictor.cls_score.weight.mul_(30)
    return model


@pytest.fixture(scope="module")
def array():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(90, 120, 3), dtype=np.uint8)
    img[20:60, 30:80] = (220, 40, 40)  # a flat block among the noise
    return img


def as_tensor(a: np.ndarray) -> torch.Tensor:
    return torch.tensor(a).permute(2, 0, 1).float().div(255.0)


def reference(model, a):
    with torch.inference_mode():
        return model([as_tensor(a)])[0]


def assert_same(result, ref, atol):
    assert len(ref["boxes"]) > 0, "the reference has no detections: the test would be empty"
    torch.testing.assert_close(result["boxes"], ref["boxes"], atol=atol, rtol=0)
    torch.testing.assert_close(result["scores"], ref["scores"], atol=atol, rtol=0)
    assert torch.equal(result["labels"], ref["labels"])
    assert result["class_names"] == [NAMES[i - 1] for i in ref["labels"].tolist()]


def inputs_of_every_kind(a, tmp_path):
    png = tmp_path / "image.png"
    Image.fromarray(a).save(png)
    return {
        "str path": str(png),
        "Path": png,
        "PIL": Image.fromarray(a),
        "numpy": a,
        "tensor": as_tensor(a),
    }


def test_every_input_kind_on_the_plain_path(array, tmp_path):
    model = small_model()
    ref = reference(model, array)
    predictor = Predictor(model, fast=False)
    for kind, item in inputs_of_every_kind(array, tmp_path).items():
        result = predictor(item)
        assert isinstance(result, dict), kind
        assert_same(result, ref, atol=1e-4)


def test_every_input_kind_on_the_fast_path(array, tmp_path):
    ref = reference(small_model(), array)
    predictor = Predictor(small_model())
    assert predictor.model.channels_last and predictor.precision.name == "fp32"
    results = predictor(list(inputs_of_every_kind(array, tmp_path).values()))
    assert isinstance(results, list) and len(results) == 5
    for result in results:
        assert_same(result, ref, atol=1e-2)  # as the fast-path tests: folding changes rounding


def test_exif_rotated_jpeg_gives_boxes_in_the_upright_image(array, tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(array).save(path, exif=exif, quality=95)
    with Image.open(path) as raw:
        from PIL import ImageOps

        upright = np.asarray(ImageOps.exif_transpose(raw).convert("RGB"))
    assert upright.shape[:2] == array.shape[1::-1]  # height and width swapped
    model = small_model()
    ref = reference(model, upright)
    predictor = Predictor(model, fast=False)
    for item in (path, Image.open(path)):
        result = predictor(item)
        assert_same(result, ref, atol=1e-4)
        assert (result["boxes"][:, 2] <= upright.shape[1] + 1e-3).all()
        assert (result["boxes"][:, 3] <= upright.shape[0] + 1e-3).all()


def test_batched_lists_and_score_threshold(array):
    model = small_model()
    ref = reference(model, array)
    one_by_one = Predictor(model, fast=False)([array, array[:, ::-1].copy()])
    batched = Predictor(model, fast=False, batch_size=2)([array, array[:, ::-1].copy()])
    assert len(batched) == 2
    assert_same(one_by_one[0], ref, atol=1e-4)
    assert len(batched[0]["boxes"]) > 0
    thresh = float(ref["scores"].median())
    kept = Predictor(model, fast=False, score_thresh=thresh)(array)
    assert 0 < len(kept["scores"]) < len(ref["scores"])
    assert (kept["scores"] >= thresh).all()


@pytest.mark.parametrize(
    "item, message",
    [
        (np.zeros((8, 8), np.uint8), r"grayscale \(HxW\)"),
        (np.zeros((8, 8, 1), np.uint8), r"grayscale \(HxWx1\)"),
        (np.zeros((8, 8, 4), np.uint8), r"RGBA \(HxWx4\)"),
        (np.zeros((8, 8, 3), np.float32), "must be uint8"),
        (torch.zeros(8, 8, 3), r"3xHxW float.*\(8, 8, 3\)"),
        (torch.zeros(3, 8, 8, dtype=torch.uint8), "torch.uint8"),
    ],
)
def test_bad_arrays_and_tensors_are_named(item, message):
    predictor = Predictor(small_model(), fast=False)
    with pytest.raises(ValueError, match=message) as info:
        predictor(item)
    assert "Accepted:" in str(info.value)


@pytest.mark.parametrize("item, name", [(42, "int"), ({"image": 1}, "dict"), (b"x", "bytes")])
def test_wrong_types_are_named(item, name):
    with pytest.raises(TypeError, match=f"cannot read a {name}; accepted: an image path"):
        Predictor(small_model(), fast=False)(item)


def test_empty_list_and_missing_file(tmp_path):
    predictor = Predictor(small_model(), fast=False)
    with pytest.raises(ValueError, match="empty list"):
        predictor([])
    with pytest.raises(OSError, match="not found"):
        predictor(tmp_path / "missing.jpg")


def test_from_checkpoint_applies_the_configs_test_settings(array, tmp_path):
    model = small_model()
    path = save_atomic(model_checkpoint(model.state_dict(), model.cfg, NAMES), tmp_path / "m.pth")
    predictor = Predictor.from_checkpoint(path)
    expected = load_model(path)
    expected = prepare_for_inference(expected, **inference_options(expected.cfg))
    assert_same(predictor(array), reference(expected, array), atol=1e-5)
    assert predictor.class_names == NAMES
    bf16 = Predictor.from_checkpoint(path, ["test.precision=bf16"])
    assert bf16.precision.name == "bf16" and bf16.model.precision == "bf16"
