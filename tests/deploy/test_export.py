"""tools/export.py and detection.deploy: the exported detector (ONNX in onnxruntime,
TorchScript in torch.jit) gives the PyTorch model's detections, at any size, also none."""

import json
import os
import sys

import pytest
import torch
from deploy_helpers import DESIGNS, as_tensor, scene

from detection import Predictor
from detection.cli.benchmark import main as benchmark_main
from detection.cli.export import main as export_main
from detection.deploy import (
    FORMATS,
    compare_detections,
    export_checkpoint,
    load_exported,
    read_metadata,
)

SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}


def predictor(checkpoint, overrides=()):
    """The PyTorch model as users run it: the Predictor (fast path), fp32."""
    return Predictor.from_checkpoint(checkpoint, [*overrides, "test.precision=fp32"])


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("design", DESIGNS)
def test_export_equals_pytorch_at_two_sizes(design, fmt, checkpoints, tmp_path):
    """One dynamic export, run on two images of other sizes and aspect ratios than the one
    it was traced on: same detections as PyTorch (count, labels, boxes within 0.5 px,
    scores within 1e-3)."""
    out = tmp_path / f"model{SUFFIX[fmt]}"
    report = export_checkpoint(checkpoints[design], out, format=fmt)
    assert report.ok, str(report)
    assert report.comparison.reference > 0, "the export's own check compared nothing"
    assert leftovers(tmp_path) == [out.name]  # no temporary left
    run = load_exported(out, fmt)
    pytorch = predictor(checkpoints[design])
    # landscape ~300x380, and portrait 100x77, whose resized width is 96 px only when computed
    # in float64 as Python does (float32: 95)
    for image in (scene(1), scene(2, crop=(100, 77))):
        ref = pytorch(image)
        assert len(ref["boxes"]) >= 3, "too few detections for a meaningful comparison"
        got = run(as_tensor(image))
        comparison = compare_detections(ref, got)
        assert comparison.ok, f"{image.shape}: {comparison}"
        assert got["boxes"].dtype == torch.float32 and got["labels"].dtype == torch.int64
    meta = read_metadata(out)
    assert meta["class_names"] == ["circle", "square", "triangle"]
    assert meta["config"]["model"]["roi_heads"]["num_classes"] == 3


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_with_no_detection(fmt, checkpoints, tmp_path):
    """With a score threshold no softmax score passes, the score threshold leaves nothing,
    and NMS, top-k and the rescale run on empty tensors: the exported graph must return
    empty outputs, as PyTorch does, not fail. (That part of the graph is the same for every
    design; the FPN detector is the quickest.)"""
    out = tmp_path / f"empty{SUFFIX[fmt]}"
    thresh = ["model.roi_heads.score_thresh=1.0"]
    report = export_checkpoint(checkpoints["FPN"], out, format=fmt, overrides=thresh)
    assert report.ok and report.comparison.reference == 0
    image = scene(3, crop=(150, 220))
    ref = predictor(checkpoints["FPN"], thresh)(image)
    assert len(ref["boxes"]) == 0
    got = load_exported(out, fmt)(as_tensor(image))
    assert got["boxes"].shape == (0, 4) and got["scores"].shape == (0,)
    assert got["labels"].shape == (0,) and got["labels"].dtype == torch.int64


def test_fixed_size_onnx_from_the_command_line(checkpoints, tmp_path, capsys):
    """The tool's main (in process: a subprocess would add seconds of imports): --size fixes
    the ONNX input; the comparison is printed."""
    out = tmp_path / "fixed.onnx"
    assert _export(checkpoints["FPN"], out, "--size", "120", "160", "--opset", "16") == 0
    stdout = capsys.readouterr().out
    assert "OK: detections" in stdout and f"wrote {out}" in stdout, stdout
    import onnx

    dims = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [3, 120, 160]
    run = load_exported(out, "onnx")
    image = scene(4, crop=(120, 160))
    comparison = compare_detections(predictor(checkpoints["FPN"])(image), run(as_tensor(image)))
    assert comparison.ok and comparison.reference > 0, str(comparison)
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        run(torch.rand(3, 100, 160))
    # tools/benchmark.py --onnx times it against the fast path on the same image
    bench = ["--onnx", str(out), "--checkpoint", str(checkpoints["FPN"]), "--size", "120", "160"]
    record = tmp_path / "bench.json"
    assert benchmark_main([*bench, "--iters", "2", "--warmup", "0", "--json", str(record)]) == 0
    result = json.loads(record.read_text())
    assert len(result["pytorch"]["times_s"]) == len(result["onnxruntime"]["times_s"]) == 2
    assert result["same_detections"] is True, result["comparison"]
    with pytest.raises(SystemExit) as e:
        benchmark_main(["--onnx", str(out)])
    assert e.value.code == 2


def test_fp16_onnx(checkpoints, tmp_path):
    """fp16: backbone and heads in half precision, checked against PyTorch running the same
    fp16 graph, within the fp16 bounds (1 px, 1e-2)."""
    out = tmp_path / "half.onnx"
    report = export_checkpoint(checkpoints["FPN"], out, format="onnx", precision="fp16")
    assert report.ok and report.comparison.reference > 0, str(report)
    assert report.comparison.box_atol == 1.0 and report.comparison.score_atol == 1e-2
    assert out.stat().st_size < 0.6 * os.path.getsize(checkpoints["FPN"])  # half the weights


def _export(checkpoint, out, *extra):
    return export_main(
        ["--checkpoint", str(checkpoint), "--format", "onnx", "--output", str(out), *extra]
    )


def test_unreadable_checkpoint(tmp_path, capsys):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(SystemExit) as e:
        _export(bad, tmp_path / "out" / "m.onnx")
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "bad.pth" in err and "cannot be read as a checkpoint" in err
    assert not (tmp_path / "out").exists() or leftovers(tmp_path / "out") == []


def test_unsupported_opset(checkpoints, tmp_path, capsys):
    for opset in ("9", "21"):
        with pytest.raises(SystemExit) as e:
            _export(checkpoints["C4"], tmp_path / "m.onnx", "--opset", opset)
        assert e.value.code == 2
        assert f"--opset {opset} is not supported: use 11..20" in capsys.readouterr().err
    assert leftovers(tmp_path) == []


def test_missing_onnx_names_the_extra(checkpoints, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    with pytest.raises(SystemExit) as e:
        _export(checkpoints["C4"], tmp_path / "m.onnx")
    assert e.value.code == 2
    assert "pip install 'resdet[export]'" in capsys.readouterr().err
    assert leftovers(tmp_path) == []


def test_failed_check_leaves_no_file(checkpoints, tmp_path, capsys, monkeypatch):
    """When the exported file disagrees with PyTorch (simulated with bounds nothing meets),
    the tool prints the comparison, exits 1 and writes nothing."""
    import detection.deploy.export as export

    monkeypatch.setitem(export.TOLERANCES, "fp32", (-1.0, -1.0))
    assert _export(checkpoints["C4"], tmp_path / "m.onnx") == 1
    captured = capsys.readouterr()
    assert "FAILED: detections" in captured.out
    assert "nothing written" in captured.err
    assert leftovers(tmp_path) == []


def test_compare_detections_matches_swapped_and_catches_differences():
    ref = {
        "boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 20.0, 20.0]]),
        "scores": torch.tensor([0.9, 0.8999]),
        "labels": torch.tensor([1, 2]),
    }
    swapped = {k: v.flip(0) for k, v in ref.items()}  # near-equal scores, other order
    assert compare_detections(ref, swapped).ok
    moved = {**ref, "boxes": ref["boxes"] + torch.tensor([[0.0, 0.0, 0.6, 0.0], [0.0] * 4])}
    assert not compare_detections(ref, moved).ok
    relabelled = {**ref, "labels": torch.tensor([1, 3])}
    assert compare_detections(ref, relabelled).matched == 1
    assert not compare_detections(ref, relabelled).ok
    fewer = {k: v[:1] for k, v in ref.items()}
    assert not compare_detections(ref, fewer).ok
