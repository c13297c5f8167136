"""Lazy package exports: a tool that needs the config (or the comparison table) does not import
the detector, torchvision's ops and torch._dynamo at start-up."""

import subprocess
import sys

import pytest

import detection
import detection.evaluation as evaluation


def _imports_torchvision(statement: str) -> bool:
    code = f"import sys; {statement}; print('torchvision' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip() == "True"


@pytest.mark.parametrize(
    "statement",
    ["import detection.config", "import detection.evaluation.compare", "import detection"],
)
def test_light_imports_do_not_import_torchvision(statement):
    assert not _imports_torchvision(statement)


def test_public_names_resolve_on_first_use():
    assert _imports_torchvision("from detection import Predictor")
    from detection.evaluation.evaluator import evaluate_model
    from detection.predictor import Predictor

    assert detection.Predictor is Predictor
    assert evaluation.evaluate_model is evaluate_model
    assert {"Predictor", "load_config"} <= set(dir(detection))
    assert set(evaluation.__all__) <= set(dir(evaluation))
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        evaluation.nope  # noqa: B018
