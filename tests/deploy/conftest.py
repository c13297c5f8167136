"""The small detectors of deploy_helpers as checkpoints, written once per session."""

import pytest
from deploy_helpers import DESIGNS, NAMES, small_model

from detection.utils.checkpoint import model_checkpoint, save_atomic


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """{design: checkpoint path} of the small detectors."""
    root = tmp_path_factory.mktemp("deploy_checkpoints")
    out = {}
    for design in DESIGNS:
        model = small_model(design)
        path = root / f"{design}.pth"
        save_atomic(model_checkpoint(model.state_dict(), model.cfg, NAMES), path)
        out[design] = path
    return out
