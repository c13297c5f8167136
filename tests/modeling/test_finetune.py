"""model.weights / model.class_map: a whole detector started from a detector checkpoint."""

from pathlib import Path

import pytest
import torch

from detection import build_model, load_config, load_model
from detection.config import ConfigError
from detection.utils.checkpoint import model_checkpoint, save_atomic

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs/shapes/demo_R18_FPN.yaml"
SMALL = ["input.min_size_test=96", "input.max_size_test=128", "model.roi_heads.score_thresh=0.0"]
SOURCE = ["circle", "square", "triangle", "star", "ellipse"]
TARGET = ["round", "star", "box"]
CLS = "roi_heads.predictor.cls_score."
BOX = "roi_heads.predictor.bbox_pred."


def config(*overrides):
    return load_config(CONFIG, [*SMALL, *overrides])


def save_source(path, cfg, names, seed=1):
    """A checkpoint whose every tensor differs from a fresh model's (as after training)."""
    torch.manual_seed(seed)
    model = build_model(cfg, class_names=names)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    save_atomic(model_checkpoint(model.state_dict(), cfg, names), path)
    return model.state_dict()


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """(path, state) of a 5-class shapes detector checkpoint."""
    path = tmp_path_factory.mktemp("finetune") / "source.pth"
    return path, save_source(path, config(), SOURCE)


def build_pair(overrides, names):
    """(model from the checkpoint, fresh model of the same config and seed)."""
    torch.manual_seed(0)
    model = build_model(config(*overrides), class_names=names)
    fresh_overrides = [o for o in overrides if not o.startswith("model.class_map")]
    torch.manual_seed(0)
    fresh = build_model(config(*fresh_overrides, "model.weights=null"), class_names=names)
    return model, fresh.state_dict()


def assert_rest_loaded(state, src):
    """Every tensor but the class predictor's equals the checkpoint's."""
    rest = [k for k in state if not k.startswith((CLS, BOX))]
    assert len(rest) > 80
    for k in rest:
        assert torch.equal(state[k], src[k]), k


def test_class_map_copies_the_mapped_rows(source):
    path, src = source
    overrides = [
        f"model.weights={path}",
        "model.roi_heads.num_classes=3",
        "model.class_map={circle: round, star: star}",
    ]
    model, fresh = build_pair(overrides, TARGET)
    state = model.state_dict()
    assert_rest_loaded(state, src)
    # rows: background 0 <- 0, round 1 <- circle 1, star 2 <- star 4; box 3 keeps its init
    for suffix in ("weight", "bias"):
        got, want, init = state[CLS + suffix], src[CLS + suffix], fresh[CLS + suffix]
        assert torch.equal(got[:3], want[[0, 1, 4]])
        assert torch.equal(got[3], init[3])
        assert not torch.isclose(got[3], want[3]).all()
        got, want, init = state[BOX + suffix], src[BOX + suffix], fresh[BOX + suffix]
        assert torch.equal(got[0:8], want[0:8])
        assert torch.equal(got[8:12], want[16:20])
        assert torch.equal(got[12:16], init[12:16])
    report = model.weights_report
    assert report.class_rows == [("circle", "round"), ("star", "star")]
    assert report.reinitialised == {} and report.ignored == []
    assert "rows re-initialised for box" in report.predictor
    assert "circle -> round, star -> star" in str(report)


def test_other_classes_reinitialise_the_predictor(source):
    path, src = source
    overrides = [f"model.weights={path}", "model.roi_heads.num_classes=3"]
    model, fresh = build_pair(overrides, TARGET)
    state = model.state_dict()
    assert_rest_loaded(state, src)
    predictor = [k for k in state if k.startswith((CLS, BOX))]
    for k in predictor:
        assert torch.equal(state[k], fresh[k]), k
    report = model.weights_report
    assert sorted(report.reinitialised) == sorted(predictor)
    assert report.predictor == "re-initialised (5 classes in the checkpoint, 3 here)"
    assert report.class_rows == []
    # `star` is in both: the report shows the class map that would keep its rows
    assert any("model.class_map: {star: star}" in n for n in report.notes)


def test_same_classes_give_the_same_detector(source):
    path, src = source
    torch.manual_seed(1)
    original = build_model(config(), class_names=SOURCE)
    original.load_state_dict(src)
    torch.manual_seed(0)
    model = build_model(config(f"model.weights={path}"), class_names=SOURCE)
    state = model.state_dict()
    assert state.keys() == src.keys()
    assert all(torch.equal(state[k], src[k]) for k in state)
    assert model.weights_report.predictor == "copied" and not model.weights_report.reinitialised
    image = [torch.rand(3, 96, 120)]
    with torch.no_grad():
        want, got = original.eval()(image)[0], model.eval()(image)[0]
    assert len(want["boxes"]) > 0, "no detections: the comparison would be vacuous"
    for key in ("boxes", "scores", "labels"):
        assert torch.equal(got[key], want[key])


def test_same_count_other_names_copies_by_position(source):
    path, src = source
    model = build_model(config(f"model.weights={path}"), class_names=SOURCE[::-1])
    state = model.state_dict()
    assert all(torch.equal(state[k], src[k]) for k in state)
    report = model.weights_report
    assert report.predictor == "copied by position (class names differ)"
    assert any("model.class_map" in n for n in report.notes)


def test_heads_of_another_shape_are_reinitialised(source):
    path, src = source
    overrides = [f"model.weights={path}", "model.anchors.aspect_ratios=[0.5, 1.0]"]
    model, fresh = build_pair(overrides, SOURCE)
    state = model.state_dict()
    changed = [k for k in state if k.startswith(("rpn.head.objectness.", "rpn.head.deltas."))]
    assert sorted(model.weights_report.reinitialised) == sorted(changed)
    assert "shape (3, 128, 1, 1) in the checkpoint, (2, 128, 1, 1) here" in str(
        model.weights_report
    )
    for k in state:
        assert torch.equal(state[k], fresh[k] if k in changed else src[k]), k


def test_another_box_head_width_reinitialises_the_predictor(source):
    path, src = source
    overrides = [f"model.weights={path}", "model.roi_heads.fc_dim=256"]
    model, fresh = build_pair(overrides, SOURCE)
    report = model.weights_report
    assert "box head width 1024 in the checkpoint, 256 here" in report.predictor
    assert torch.equal(model.state_dict()[CLS + "weight"], fresh[CLS + "weight"])
    assert "roi_heads.box_head.fc7.weight" in report.reinitialised


def test_another_backbone_is_refused_naming_the_tensors(source):
    path, _ = source
    cfg = config(f"model.weights={path}", "model.backbone.name=resnet50")
    with pytest.raises(ConfigError) as err:
        build_model(cfg, class_names=SOURCE)
    msg = str(err.value)
    assert "backbone.bottom_up.res2.0.conv1.weight ((64, 64, 3, 3) in the checkpoint" in msg
    assert "backbone.bottom_up.res2.0.conv3.weight (not in the checkpoint)" in msg
    assert "... and " in msg and "more" in msg
    assert "resnet18 with neck fpn" in msg and "resnet50 with neck fpn" in msg


@pytest.mark.parametrize(
    "class_map, message",
    [
        (
            "{circel: round}",
            "source class 'circel' is not a class of model.weights=.*"
            "Did you mean 'circle'.*circle, square, triangle, star, ellipse",
        ),
        (
            "{circle: rond}",
            "target class 'rond' is not a class of the training set.*"
            "Did you mean 'round'.*round, star, box",
        ),
        (
            "{circle: round, ellipse: round}",
            "target class 'round' is given by two source classes, 'circle' and 'ellipse'",
        ),
    ],
)
def test_class_map_names_are_checked(source, class_map, message):
    path, _ = source
    cfg = config(
        f"model.weights={path}", "model.roi_heads.num_classes=3", f"model.class_map={class_map}"
    )
    with pytest.raises(ConfigError, match=message):
        build_model(cfg, class_names=TARGET)


def test_ambiguous_source_names_are_refused(tmp_path):
    path = tmp_path / "na.pth"
    save_source(path, config(), ["circle", "N/A", "N/A", "star", "ellipse"])
    cfg = config(
        f"model.weights={path}", "model.roi_heads.num_classes=3", "model.class_map={N/A: box}"
    )
    with pytest.raises(ConfigError, match="source class 'N/A' names 2 classes"):
        build_model(cfg, class_names=TARGET)


def test_class_map_without_weights_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="model.class_map .*model.weights is null"):
        build_model(config("model.class_map={circle: round}"), class_names=SOURCE)
    missing = tmp_path / "gone.pth"
    with pytest.raises(FileNotFoundError, match=f"model.weights: checkpoint not found: {missing}"):
        build_model(config(f"model.weights={missing}"), class_names=SOURCE)
    not_a_checkpoint = tmp_path / "state.pth"
    torch.save({"weight": torch.zeros(1)}, not_a_checkpoint)
    with pytest.raises(ValueError, match="model.weights: .*not a resdet checkpoint"):
        build_model(config(f"model.weights={not_a_checkpoint}"), class_names=SOURCE)


def test_backbone_weights_are_not_read_with_model_weights(source, tmp_path):
    path, src = source
    imagenet = tmp_path / "imagenet_missing.pth"  # would raise FileNotFoundError if read
    cfg = config(f"model.weights={path}", f"model.backbone.weights={imagenet}")
    model = build_model(cfg, class_names=SOURCE)
    assert all(torch.equal(v, src[k]) for k, v in model.state_dict().items())
    assert f"model.backbone.weights={imagenet} was not read" in str(model.weights_report)


def test_load_model_does_not_read_model_weights(source, tmp_path):
    """A checkpoint trained from model.weights loads after its start point is gone."""
    path, _ = source
    start = tmp_path / "start.pth"
    start.write_bytes(path.read_bytes())
    cfg = config(
        f"model.weights={start}", "model.roi_heads.num_classes=3", "model.class_map={star: star}"
    )
    model = build_model(cfg, class_names=TARGET)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)  # "trained": differs from the start point
    trained = tmp_path / "model_final.pth"
    save_atomic(model_checkpoint(model.state_dict(), cfg, TARGET), trained)
    start.unlink()
    loaded = load_model(trained)
    assert loaded.weights_report is None
    assert loaded.class_names == TARGET
    state = model.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in loaded.state_dict().items())
    assert build_model(cfg, load_weights=False).weights_report is None


def test_settings_the_weights_depend_on_are_reported(source, caplog):
    path, src = source
    cfg = config(f"model.weights={path}", "model.pixel_std=[1.0, 1.0, 1.0]")
    with caplog.at_level("INFO", logger="detection.modeling.finetune"):
        model = build_model(cfg, class_names=SOURCE)
    assert all(torch.equal(v, src[k]) for k, v in model.state_dict().items())
    note = "the checkpoint was trained with model.pixel_std=[0.229, 0.224, 0.225] (here [1.0, 1.0"
    assert any(note in n for n in model.weights_report.notes)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(note in w for w in warnings)
    infos = [r.getMessage() for r in caplog.records if r.levelname == "INFO"]
    assert infos == [str(model.weights_report)]
