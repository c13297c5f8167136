"""Fixtures of the classification tests: a tiny ImageFolder set and a seconds-long classifier
config on it."""

from __future__ import annotations

from pathlib import Path

import pytest
from classification_helpers import write_image_folder


@pytest.fixture
def image_folder(tmp_path) -> Path:
    return write_image_folder(tmp_path / "images")


TINY = """\
model: {{name: {name}, shortcut: {shortcut}}}
data: {{dataset: imagefolder, root: {root}, num_workers: 0}}
input: {{train_scale: [32, 40], crop: 32, test_scale: 36, test_crop: 32}}
solver: {{ims_per_batch: 4, base_lr: 0.05, max_epochs: null, max_iter: {iters}, steps: [3],
          checkpoint_period: 2, log_period: 1}}
test: {{eval_period: -1, ims_per_batch: 4}}
output_dir: {out}
"""


@pytest.fixture
def tiny_classifier(tmp_path, image_folder):
    """make(**fields) -> path of a seconds-long classifier config on the tiny ImageFolder set."""

    def make(name="resnet18", shortcut="B", iters=4, out="out", root=image_folder, **extra):
        text = TINY.format(name=name, shortcut=shortcut, iters=iters, root=root, out=tmp_path / out)
        path = tmp_path / f"{out}.yaml"
        path.write_text(text + "".join(f"{k}: {v}\n" for k, v in extra.items()))
        return path

    return make
