"""Device `auto`: the commands and the Predictor take CUDA when it is available and the CPU
otherwise, say which, and --device still decides. CUDA is simulated (torch.cuda.is_available
patched) up to the first call that would need a GPU, which the test stops."""

from __future__ import annotations

import argparse

import pytest
import torch
from PIL import Image

from detection import Predictor
from detection.cli import evaluate, infer
from detection.cli._common import add_device_argument, chosen_device, say_device
from detection.cli.main import main
from detection.utils.device import describe_device, resolve_device


class Stop(Exception):
    """Raised by a stand-in once it has recorded what it was called with."""


@pytest.fixture
def fake_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "Test GPU")


def test_resolve_device_without_and_with_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu" and resolve_device(None) == "cpu"
    assert "auto: no CUDA device" in describe_device("cpu", "auto")
    with pytest.raises(ValueError, match="CUDA is not available here; use --device cpu"):
        resolve_device("cuda:1")
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        resolve_device("gpu")
    assert resolve_device("cpu") == "cpu"
    assert describe_device("cpu", "cpu").endswith("as asked")


def test_auto_takes_cuda_when_available(fake_cuda):
    assert resolve_device("auto") == "cuda"
    assert resolve_device("cpu") == "cpu"  # an explicit device still decides
    assert describe_device("cuda", "auto") == (
        "device: cuda (Test GPU); auto: found a CUDA device (--device overrides)"
    )


@pytest.mark.parametrize(
    "command",
    ["train", "evaluate", "infer", "benchmark", "train-classifier", "ablation", "benchmark-real"],
)
def test_commands_default_to_auto(command, capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["resdet"])
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--device DEVICE auto (default: cuda when a CUDA device is available, else cpu)" in text


def test_the_choice_is_said_once_the_inputs_are_checked(fake_cuda, capsys, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    parser = argparse.ArgumentParser(prog="resdet x")
    add_device_argument(parser)
    args = parser.parse_args([])
    assert chosen_device(parser, args) == "cuda"
    assert capsys.readouterr().err == ""
    say_device(args)
    assert capsys.readouterr().err == (
        "device: cuda (Test GPU); auto: found a CUDA device (--device overrides)\n"
    )
    monkeypatch.setenv("RANK", "1")  # under torchrun, the first process alone says it
    say_device(args)
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as e:
        chosen_device(parser, parser.parse_args(["--device", "cuda"]))
    assert e.value.code == 2
    assert "resdet x: error: device 'cuda' was asked for" in capsys.readouterr().err


def test_evaluate_runs_on_cuda_when_available_and_says_so(fake_cuda, monkeypatch, capsys):
    seen = []

    def init_distributed(device):
        seen.append(device)
        raise Stop

    monkeypatch.setattr(evaluate, "init_distributed", init_distributed)
    with pytest.raises(Stop):
        evaluate.main(["--checkpoint", "model.pth"])
    assert seen == ["cuda"]
    assert "device:" not in capsys.readouterr().err  # said once the inputs are checked
    seen.clear()
    with pytest.raises(Stop):
        evaluate.main(["--checkpoint", "model.pth", "--device", "cpu"])
    assert seen == ["cpu"]


def test_infer_and_predictor_run_on_cuda_when_available(fake_cuda, monkeypatch, tmp_path):
    seen = []

    def load_model(checkpoint, overrides, *, device, config=None):
        seen.append(device)
        raise Stop

    monkeypatch.setattr("detection.predictor.load_model", load_model)
    monkeypatch.setattr("detection.modeling.zoo.resolve_weights", lambda name: name)
    with pytest.raises(Stop):
        Predictor.from_checkpoint("model.pth")
    with pytest.raises(Stop):
        Predictor.from_pretrained("fasterrcnn_resnet50_fpn_coco", device="cpu")
    image = tmp_path / "a.png"
    Image.new("RGB", (32, 32)).save(image)
    with pytest.raises(Stop):
        infer.main(["--weights", "model.pth", "--input", str(image), "--output", str(tmp_path)])
    assert seen == ["cuda", "cpu", "cuda"]
