import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def shapes_val(tmp_path_factory):
    """(annotation json, image folder) of shapes_val, generated once per session."""
    from detection.data import ensure_shapes

    return ensure_shapes("shapes_val", tmp_path_factory.mktemp("datasets"))


@pytest.fixture
def subset(tmp_path, shapes_val):
    """A COCO json of the first `n` shapes_val images (and their boxes); returns a factory."""

    def make(n: int, name: str) -> Path:
        data = json.loads(Path(shapes_val[0]).read_text())
        images = data["images"][:n]
        ids = {im["id"] for im in images}
        data["images"] = images
        data["annotations"] = [a for a in data["annotations"] if a["image_id"] in ids]
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(data))
        return path

    return make


@pytest.fixture
def image_dir(tmp_path):
    """Three random 64x80 RGB images (short side 64: --size 64 leaves them unresized)."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        pixels = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i}.png")
    return folder
