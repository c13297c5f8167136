"""Config loading: every shipped file, inheritance, overrides, strict errors."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from detection.config import (
    Config,
    ConfigError,
    config_from_dict,
    dump,
    field_docs,
    load_config,
    save_config,
    to_dict,
)
from detection.data.catalog import resolve_dataset

ROOT = Path(__file__).resolve().parents[2]
# configs/classification/ holds tools/train_classifier.py's configs (another schema)
CLASSIFIER_CONFIGS = sorted((ROOT / "configs/classification").rglob("*.yaml"))
# ablation set files (a `members` list, read by tools/run_ablation.py) are not configs
CONFIGS = sorted(
    p
    for p in set((ROOT / "configs").rglob("*.yaml")) - set(CLASSIFIER_CONFIGS)
    if "members" not in yaml.safe_load(p.read_text())
)
SETS = sorted(set((ROOT / "configs").rglob("*.yaml")) - set(CONFIGS) - set(CLASSIFIER_CONFIGS))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def override_error(override: str, match: str | None = None) -> str:
    """The message of the ConfigError that `override` on the default config raises."""
    with pytest.raises(ConfigError, match=match) as e:
        load_config(None, [override])
    return str(e.value)


def test_there_are_configs():
    names = {p.name for p in CONFIGS}
    assert {"faster_rcnn_R101_C4_1x.yaml", "faster_rcnn_VGG16_1x.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_config_loads_and_round_trips(path, tmp_path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    dumped = tmp_path / "config.yaml"
    dump(cfg, dumped)
    assert load_config(dumped) == cfg
    assert config_from_dict(yaml.safe_load(dumped.read_text())) == cfg


@pytest.mark.parametrize("path", CLASSIFIER_CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_classifier_config_loads_and_round_trips(path, tmp_path):
    from detection.classification.config import ClassifierConfig, load_classifier_config

    # ImageNet and CIFAR configs name their data folder on the command line
    overrides = [] if "shapes" in path.name else [f"data.root={tmp_path / 'data'}"]
    cfg = load_classifier_config(path, overrides)
    assert isinstance(cfg, ClassifierConfig)
    dumped = tmp_path / "config.yaml"
    dump(cfg, dumped)
    assert load_classifier_config(dumped) == cfg


@pytest.mark.parametrize("path", SETS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_ablation_set_loads(path, tmp_path):
    from detection.analysis.ablation import load_ablation_set

    ablation = load_ablation_set(path, tmp_path)
    # a comparison: two members at least, or one against torchvision's anchor (configs/real/)
    assert len(ablation.members) >= (1 if path.parent.name == "real" else 2)
    for member in ablation.members:
        ablation.member_config(member)  # every member's config resolves


def test_defaults_without_file():
    cfg = load_config()
    assert cfg == Config()
    assert cfg.model.backbone.name == "resnet50"
    assert cfg.solver.base_lr == 0.02 and cfg.solver.ims_per_batch == 16


def test_three_level_base_chain(tmp_path):
    write(
        tmp_path / "a.yaml",
        "model:\n  backbone: {name: resnet18, freeze_at: 1}\n"
        "solver: {steps: [10, 20, 30], max_iter: 40}\n"
        "seed: 1\n",
    )
    write(
        tmp_path / "sub/b.yaml",
        "_base_: ../a.yaml\nmodel:\n  backbone: {name: resnet34}\nsolver: {steps: [5]}\nseed: 2\n",
    )
    c = write(tmp_path / "sub/deeper/c.yaml", "_base_: ../b.yaml\nseed: 3\n")
    cfg = load_config(c)
    assert cfg.seed == 3  # the child wins
    assert cfg.model.backbone.name == "resnet34"  # from the middle
    assert cfg.model.backbone.freeze_at == 1  # kept from the root: children set only their keys
    assert cfg.solver.steps == [5]  # lists are replaced, not merged
    assert cfg.solver.max_iter == 40
    assert cfg.model.backbone.norm == "FrozenBN"  # schema default
    # an override beats every file
    cfg = load_config(c, ["seed=4", "model.backbone.freeze_at=0", "solver.steps=[7, 8]"])
    assert (cfg.seed, cfg.model.backbone.freeze_at, cfg.solver.steps) == (4, 0, [7, 8])


def test_override_value_types():
    cfg = load_config(
        None,
        [
            "solver.base_lr=0.01",
            "solver.weight_decay=1e-5",  # YAML 1.1 reads this as a string
            "solver.clip_grad_norm=5",
            "input.min_size_train=[640, 800]",
            "model.backbone.weights=null",
            "model.anchors.sizes=[[32], [64]]",
        ],
    )
    assert cfg.solver.base_lr == 0.01 and cfg.solver.weight_decay == 1e-5
    assert cfg.solver.clip_grad_norm == 5.0 and isinstance(cfg.solver.clip_grad_norm, float)
    assert cfg.input.min_size_train == [640, 800]
    assert cfg.model.backbone.weights is None
    assert cfg.model.anchors.sizes == [[32], [64]]


def test_swap_backbone_with_one_key():
    path = ROOT / "configs/coco/faster_rcnn_R50_C4_1x.yaml"
    cfg = load_config(path, ["model.backbone.name=resnet101"])
    assert cfg.model.backbone.name == "resnet101"
    assert to_dict(cfg)["model"]["roi_heads"] == to_dict(load_config(path))["model"]["roi_heads"]


def test_unknown_key_in_file_names_key_file_and_suggestion(tmp_path):
    bad = write(tmp_path / "bad.yaml", "model:\n  backbone:\n    nmae: resnet101\n")
    start = time.perf_counter()
    with pytest.raises(ConfigError) as e:
        load_config(bad)
    assert time.perf_counter() - start < 1.0
    msg = str(e.value)
    assert "'model.backbone.nmae'" in msg and str(bad) in msg
    assert "did you mean model.backbone.name?" in msg


def test_unknown_key_in_base_names_the_base_file(tmp_path):
    write(tmp_path / "base.yaml", "solver:\n  max_itr: 10\n")
    child = write(tmp_path / "child.yaml", "_base_: base.yaml\nseed: 1\n")
    with pytest.raises(
        ConfigError, match=r"'solver.max_itr' in .*base\.yaml; did you mean solver.max_iter"
    ):
        load_config(child)


@pytest.mark.parametrize(
    "override, match, expected",
    [
        # unknown keys: the closest valid key is suggested
        ("model.backbon.name=resnet101", "unknown config key", "did you mean model.backbone.name?"),
        ("model.rpn.nms_thres=0.5", "unknown config key", "did you mean model.rpn.nms_thresh?"),
        (
            "solver.lr=0.1",
            "unknown config key",
            "unknown config key 'solver.lr' in override 'solver.lr=0.1'",
        ),
        # wrong types: the key, the override and the expected type
        (
            "solver.max_iter=abc",
            None,
            "'solver.max_iter' (from override 'solver.max_iter=abc') "
            "must be of type int, got 'abc'",
        ),
        ("solver.max_iter=1.5", None, "must be of type int, got 1.5"),
        (
            "input.flip=3",
            None,
            "'input.flip' (from override 'input.flip=3') must be of type bool, got 3",
        ),
        (
            "solver.steps=5",
            None,
            "'solver.steps' (from override 'solver.steps=5') must be of type list[int]",
        ),
        (
            "model.backbone=resnet50",
            None,
            "'model.backbone' in override 'model.backbone=resnet50' is a section",
        ),
        # enumerations: the allowed values
        (
            "model.backbone.name=resnet5",
            "allowed values",
            "resnet18, resnet34, resnet50, resnet101, resnet152, vgg16, vgg16_bn",
        ),
        ("model.roi_heads.pooler_type=roi_max", "allowed values", "roi_pool, roi_align"),
        ("model.backbone.shortcut=D", "allowed values", "A, B, C, none"),
        ("model.roi_heads.box_head=fc", "allowed values", "res5, 2fc, vgg_fc"),
    ],
)
def test_bad_override_says_what_and_where(override, match, expected):
    assert expected in override_error(override, match=match)


def test_wrong_type_in_file_names_the_file(tmp_path):
    bad = write(tmp_path / "bad.yaml", "solver:\n  ims_per_batch: sixteen\n")
    with pytest.raises(
        ConfigError, match=rf"'solver.ims_per_batch' \(from {bad}\) must be of type int"
    ):
        load_config(bad)


def test_malformed_override_and_yaml(tmp_path):
    with pytest.raises(ConfigError, match="must look like section.key=value"):
        load_config(None, ["model.backbone.name"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = write(tmp_path / "bad.yaml", "model: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)
    listy = write(tmp_path / "list.yaml", "- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(listy)


def test_python_tags_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = write(
        tmp_path / "evil.yaml",
        f"seed: !!python/object/apply:os.system ['touch {marker}']\n",
    )
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(evil)
    assert not marker.exists()


def test_base_cycle_and_missing_base(tmp_path):
    write(tmp_path / "a.yaml", "_base_: b.yaml\n")
    write(tmp_path / "b.yaml", "_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="_base_ cycle"):
        load_config(tmp_path / "a.yaml")
    write(tmp_path / "c.yaml", "_base_: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="_base_ file not found: nowhere.yaml"):
        load_config(tmp_path / "c.yaml")


def test_cross_field_checks():
    override_error("solver.steps=[3, 2]", match="solver.steps must be increasing")
    override_error("model.rpn.iou_thresholds=[0.7, 0.3]", match="iou_thresholds")


def test_datasets(tmp_path, monkeypatch):
    override_error(
        "data.train.name=my_set", match="data.train: name 'my_set' is not a registered dataset"
    )
    cfg = load_config(
        None, ["data.train.name=my_set", "data.train.annotations=a.json", "data.train.images=img"]
    )
    assert resolve_dataset(**to_dict(cfg.data.train)) == (Path("a.json"), Path("img"))
    monkeypatch.setenv("RESDET_DATASETS", str(tmp_path))
    ann, img = resolve_dataset("coco_2017_val")
    assert ann == tmp_path / "coco/annotations/instances_val2017.json"
    assert img == tmp_path / "coco/val2017"


def test_every_field_is_documented():
    docs = field_docs()
    assert len(docs) > 50
    assert all(doc.strip() for _, doc, _ in docs)
    assert any(k == "model.backbone.name" and "one of: resnet18" in d for k, d, _ in docs)


def test_config_from_dict_is_strict():
    data = to_dict(Config())
    data["solver"]["max_itr"] = 3
    with pytest.raises(ConfigError, match="did you mean solver.max_iter"):
        config_from_dict(data, "checkpoint.pth")


def test_save_config(tmp_path):
    cfg = load_config(None, [f"output_dir={tmp_path / 'run'}"])
    path = save_config(cfg)
    assert path == tmp_path / "run" / "config.yaml"
    assert load_config(path) == cfg


def run_tool(output_dir: Path, override: str) -> subprocess.CompletedProcess:
    """tools/print_config.py on the R101-C4 config with one override, writing to output_dir."""
    config = "configs/coco/faster_rcnn_R101_C4_1x.yaml"
    return subprocess.run(
        [sys.executable, str(ROOT / "tools/print_config.py"), "--config", config]
        + ["--output-dir", str(output_dir), override],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )


def test_tool_prints_config_and_writes_it(tmp_path):
    out = tmp_path / "out"
    r = run_tool(out, "model.backbone.name=resnet152")
    assert r.returncode == 0, r.stderr
    assert "name: resnet152" in r.stdout
    assert load_config(out / "config.yaml").model.backbone.name == "resnet152"


def test_tool_refuses_typo_before_writing(tmp_path):
    out = tmp_path / "out"
    r = run_tool(out, "model.backbone.nmae=resnet152")
    assert r.returncode == 2
    assert "did you mean model.backbone.name?" in r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists()


def test_yaml_booleans_of_word_choices():
    """YAML 1.1 reads `off` as False: a str key whose choices include "off" takes it as "off"."""
    cfg = load_config(ROOT / "configs/coco/faster_rcnn_R50_C4_1x.yaml", ["solver.amp=off"])
    assert cfg.solver.amp == "off"
    with pytest.raises(ConfigError, match="solver.memory_format"):
        load_config(ROOT / "configs/coco/faster_rcnn_R50_C4_1x.yaml", ["solver.memory_format=off"])


def test_mapping_fields_are_typed_merged_and_cleared(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("model:\n  weights: a.pth\n  class_map: {cat: feline}\n")
    child = tmp_path / "child.yaml"
    child.write_text("_base_: base.yaml\nmodel:\n  class_map: {dog: canine}\n")
    assert load_config(child).model.class_map == {"cat": "feline", "dog": "canine"}
    assert load_config(child, ["model.class_map.cat=tiger"]).model.class_map["cat"] == "tiger"
    assert load_config(child, ["model.class_map=null"]).model.class_map == {}
    with pytest.raises(ConfigError, match=r"'model.class_map' .* must be of type dict\[str, str\]"):
        load_config(child, ["model.class_map=[cat]"])
    with pytest.raises(ConfigError, match=r"'model.class_map.cat' .* must be of type str"):
        load_config(child, ["model.class_map.cat=[1]"])
