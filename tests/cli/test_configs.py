"""Shipped configs by name: --config coco/faster_rcnn_R101_C4_1x.yaml from any directory, a
file path first, `_base_` among the shipped set, and `resdet configs`."""

from __future__ import annotations

import pytest
from helpers import ROOT
from setuptools import find_packages

from detection.cli.main import main
from detection.config import ConfigError, dump, load_config
from detection.config.loader import resolve_config_path, shipped_configs, shipped_configs_dir

NAME = "coco/faster_rcnn_R101_C4_1x.yaml"


def test_a_name_loads_the_shipped_config_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    expected = dump(load_config(ROOT / "configs" / NAME))
    assert dump(load_config(NAME)) == expected
    assert dump(load_config(f"configs/{NAME}")) == expected  # the checkout's spelling too
    assert resolve_config_path(NAME) == (ROOT / "configs" / NAME).resolve()


def test_a_file_here_comes_before_the_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "coco").mkdir()
    (tmp_path / NAME).write_text("_base_: coco/faster_rcnn_R50_FPN_1x.yaml\noutput_dir: mine\n")
    # not beside the local file: the _base_ is the shipped config of that name
    cfg = load_config(NAME)
    assert cfg.output_dir == "mine" and cfg.model.neck.name == "fpn"


def test_own_config_inherits_a_shipped_one_by_name(tmp_path):
    own = tmp_path / "mine.yaml"
    own.write_text("_base_: shapes/demo_R18_FPN.yaml\nsolver: {max_iter: 7}\n")
    cfg = load_config(own)
    assert cfg.solver.max_iter == 7 and cfg.model.neck.name == "fpn"
    assert cfg.model.roi_heads.num_classes == 5  # from shapes/Base-shapes.yaml, two bases up


def test_unknown_name_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="config file not found: coco/nope.yaml .*resdet configs"):
        load_config("coco/nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("_base_: nowhere/else.yaml\n")
    with pytest.raises(ConfigError, match="_base_ file not found: nowhere/else.yaml"):
        load_config(bad)


def test_resdet_configs_lists_shows_and_locates(capsys):
    assert main(["configs"]) == 0
    out = capsys.readouterr().out
    names = shipped_configs()
    assert NAME in names and "shapes/demo_R18_FPN.yaml" in names
    for name in names:
        assert f"  {name} " in out
    assert "set: " in out.split("shapes/ablations/shortcuts.yaml", 1)[1].splitlines()[0]
    assert main(["configs", NAME]) == 0
    assert capsys.readouterr().out == (ROOT / "configs" / NAME).read_text()
    assert main(["configs", "--path", NAME]) == 0
    assert capsys.readouterr().out.strip() == str(shipped_configs_dir() / NAME)
    with pytest.raises(SystemExit) as e:
        main(["configs", "coco/nope.yaml"])
    assert e.value.code == 2 and "no shipped config named" in capsys.readouterr().err


def test_pyproject_ships_every_package_and_config():
    """The package list is explicit (configs/ is mapped into detection/configs): a package
    missing from it would be left out of the wheel."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = find_packages(str(ROOT), include=["backbones*", "detection*"])
    missing = sorted(set(found) - set(tool["packages"]))
    assert not missing, f"add {missing} to [tool.setuptools] packages in pyproject.toml"
    assert tool["package-dir"] == {"detection.configs": "configs"}
    assert tool["package-data"]["detection.configs"] == ["**/*.yaml"]
    others = [p for p in (ROOT / "configs").rglob("*") if p.is_file() and p.suffix != ".yaml"]
    assert not others, f"{others} would not ship (package-data takes *.yaml)"


def test_resdet_overrides_from_the_environment(monkeypatch, caplog):
    monkeypatch.setenv("RESDET_OVERRIDES", "solver.max_iter=3 'input.min_size_train=[96, 112]'")
    cfg = load_config("shapes/demo_R18_FPN.yaml", ["solver.max_iter=9", "solver.base_lr=0.5"])
    assert cfg.solver.max_iter == 3 and cfg.input.min_size_train == [96, 112]  # after the given
    assert cfg.solver.base_lr == 0.5
    assert "RESDET_OVERRIDES is set: solver.max_iter=3" in caplog.text
    assert load_config(None).solver.max_iter != 3  # configs from files only (not converters')
    monkeypatch.setenv("RESDET_OVERRIDES", "solver.max_itr=3")
    with pytest.raises(ConfigError, match="did you mean solver.max_iter"):
        load_config(NAME)
