"""Hostile files: a checkpoint whose pickle would run code, a YAML file with a python object
tag, image paths out of the image folder. None runs anything; each is a clear error."""

import json

import pytest
import torch
from helpers import ROOT, run_tool
from PIL import Image

from backbones import build_backbone, load_pretrained
from detection.modeling import load_model


class Payload:
    """Unpickling this creates the marker file: what an attacker's checkpoint would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


@pytest.fixture
def hostile_checkpoint(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "model_final.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "config": {}, "x": Payload(marker)}, path)
    return path, marker


def test_the_payload_really_runs_code_when_unpickled(hostile_checkpoint):
    path, marker = hostile_checkpoint
    torch.load(path, weights_only=False)  # what an unsafe loader would do
    assert marker.read_text() == "pwned"


@pytest.mark.slow  # five loaders, three of them tool subprocesses: ~30 s on 2 cores
def test_checkpoint_loaders_refuse_code(hostile_checkpoint, tiny_config):
    path, marker = hostile_checkpoint
    with pytest.raises(ValueError, match="weights_only=True"):
        load_model(path)
    with pytest.raises(ValueError, match="weights_only=True"):
        load_pretrained(build_backbone("resnet18"), path)
    # the tools a user points at a downloaded file
    r = run_tool([ROOT / "tools/evaluate.py", "--checkpoint", path, "--device", "cpu"], check=False)
    assert r.returncode == 2 and "weights_only=True" in r.stderr and "Traceback" not in r.stderr
    Image.new("RGB", (32, 24)).save(path.parent / "image.png")
    r = run_tool(
        [
            ROOT / "tools/infer.py",
            "--checkpoint",
            path,
            "--input",
            path.parent / "image.png",
            "--output",
            path.parent / "out",
            "--device",
            "cpu",
        ],
        check=False,
    )
    assert r.returncode == 2 and "weights_only=True" in r.stderr and "Traceback" not in r.stderr
    # --resume from a folder where someone planted the file
    cfg_path, _ = tiny_config
    (path.parent / "last_checkpoint").write_text(path.name + "\n")
    r = run_tool(
        [ROOT / "tools/train.py", "--config", cfg_path, "--output-dir", path.parent, "--resume"]
        + ["--device", "cpu"],
        check=False,
    )
    assert r.returncode == 2 and "weights_only=True" in r.stderr and "Traceback" not in r.stderr
    assert not marker.exists(), "the checkpoint's payload ran"


def test_yaml_python_tags_are_refused(tmp_path):
    marker = tmp_path / "marker"
    cfg = tmp_path / "evil.yaml"
    cfg.write_text(
        f"_base_: {ROOT}/configs/shapes/demo_R18_C4.yaml\n"
        f"seed: !!python/object/apply:os.system ['touch {marker}']\n"
    )
    r = run_tool([ROOT / "tools/train.py", "--config", cfg, "--device", "cpu"], check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "python/object" in r.stderr or "could not determine a constructor" in r.stderr
    assert not marker.exists()


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "ok/../../x.jpg"])
def test_image_paths_out_of_the_image_folder_are_refused(tmp_path, tiny_config, name):
    images = tmp_path / "images"
    images.mkdir()
    ann = tmp_path / "train.json"
    ann.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": name, "width": 10, "height": 10}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}],
                "categories": [{"id": 1, "name": "thing"}],
            }
        )
    )
    cfg_path, _ = tiny_config
    overrides = [f"data.train.annotations={ann}", f"data.train.images={images}"]
    # check_dataset.py has no --device: it runs no model
    for tool, device in (("train.py", ["--device", "cpu"]), ("check_dataset.py", [])):
        argv = [ROOT / "tools" / tool, "--config", cfg_path, *device, *overrides]
        r = run_tool(argv, check=False)
        assert r.returncode == 2, r.stderr[-2000:]
        assert "leaves the image folder" in r.stderr and "Traceback" not in r.stderr
