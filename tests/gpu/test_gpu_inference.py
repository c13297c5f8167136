"""bf16 and fp16 inference on CUDA give the AP of fp32 (within 0.5) on a shapes detector trained
on the GPU here. Skipped without CUDA (conftest)."""

import pytest
from helpers import ROOT

from detection.config import load_config
from detection.engine.trainer import train
from detection.evaluation import evaluate_checkpoint


@pytest.fixture(scope="module")
def shapes_data(datasets_root):
    """RESDET_DATASETS pointing at the session's shapes data, for this module."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RESDET_DATASETS", str(datasets_root))
        yield datasets_root


@pytest.fixture(scope="module")
def shapes_detector(shapes_data, tmp_path_factory):
    """The make-demo ResNet-18 FPN detector, trained on the GPU with the demo's schedule
    (300 iterations: AP50 ~22 on the CPU in fp32; seconds here)."""
    out = tmp_path_factory.mktemp("demo_R18_FPN")
    cfg = load_config(
        ROOT / "configs/shapes/demo_R18_FPN.yaml",
        [f"output_dir={out}", "data.num_workers=4", "solver.checkpoint_period=1000"],
    )
    train(cfg, device="cuda")
    return out / "model_final.pth"


def evaluate(checkpoint, precision: str) -> dict:
    """The metrics record of shapes_val (200 images) with test.precision=`precision`."""
    return evaluate_checkpoint(
        checkpoint, overrides=[f"test.precision={precision}"], device="cuda", progress=False
    )


@pytest.fixture(scope="module")
def fp32_metrics(shapes_detector):
    metrics = evaluate(shapes_detector, "fp32")
    assert metrics["inference"]["precision"] == "fp32"
    # a detector that learned something: equal APs of one that did not would prove nothing
    assert metrics["bbox"]["AP50"] > 5, metrics["bbox"]
    return metrics


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_inference_matches_fp32(shapes_detector, fp32_metrics, precision):
    low = evaluate(shapes_detector, precision)
    assert low["inference"]["precision"] == precision
    assert low["num_images"] == fp32_metrics["num_images"] == 200
    for metric in ("AP", "AP50"):
        assert low["bbox"][metric] == pytest.approx(fp32_metrics["bbox"][metric], abs=0.5), (
            metric,
            fp32_metrics["bbox"],
            low["bbox"],
        )
