"""Building the index of a COCO-scale annotation file: memory and time."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

NUM_IMAGES, NUM_BOXES = 118_287, 860_001  # COCO train2017


def write_coco_scale_json(path) -> None:
    rng = np.random.default_rng(0)
    widths = rng.integers(200, 641, NUM_IMAGES)
    heights = rng.integers(200, 641, NUM_IMAGES)
    image_of = np.sort(rng.integers(0, NUM_IMAGES, NUM_BOXES))
    xy = rng.uniform(0, 0.8, (NUM_BOXES, 2)) * np.stack([widths, heights], 1)[image_of]
    wh = rng.uniform(1, 150, (NUM_BOXES, 2))
    cats = np.array([*range(1, 12), *range(13, 26), *range(27, 29), *range(31, 45)])
    cats = np.concatenate([cats, np.arange(46, 91)[: 80 - len(cats)]])
    # the json is written as text directly: building 860k dicts here would double the test time
    images = ",".join(
        f'{{"id":{i + 1},"file_name":"{i + 1:012d}.jpg","width":{w},"height":{h}}}'
        for i, (w, h) in enumerate(zip(widths.tolist(), heights.tolist(), strict=True))
    )
    boxes = np.round(np.concatenate([xy, wh], 1), 2).tolist()
    crowd = (rng.random(NUM_BOXES) < 0.01).astype(int).tolist()
    category = rng.choice(cats, NUM_BOXES).tolist()
    anns = ",".join(
        f'{{"id":{k + 1},"image_id":{i + 1},"category_id":{c},"bbox":{b},'
        f'"area":{b[2] * b[3]:.2f},"iscrowd":{z}}}'
        for k, (i, c, b, z) in enumerate(
            zip(image_of.tolist(), category, boxes, crowd, strict=True)
        )
    )
    categories = json.dumps([{"id": int(c), "name": f"class{c}"} for c in cats])
    path.write_text(f'{{"images":[{images}],"annotations":[{anns}],"categories":{categories}}}')


CHILD = textwrap.dedent(
    """
    import re, sys, time
    from pathlib import Path
    from detection.data import COCODataset

    def high_water_kib():
        # VmHWM belongs to this process image (ru_maxrss would carry the parent's across exec)
        status = Path("/proc/self/status").read_text()
        return int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1))

    before = high_water_kib()
    t = time.perf_counter()
    ds = COCODataset(sys.argv[1], "missing-images", train=True, check_files=False)
    elapsed = time.perf_counter() - t
    peak = high_water_kib()
    print(len(ds), len(ds.records["boxes"]), ds.records.nbytes, before, peak, elapsed)
    """
)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_coco_scale_index_memory_and_time(tmp_path):
    ann = tmp_path / "instances_big.json"
    write_coco_scale_json(ann)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(ann)], capture_output=True, text=True, check=True
    )
    images, boxes, nbytes, before_kib, peak_kib, seconds = out.stdout.split()
    print(
        f"index of {images} images / {boxes} boxes: {float(seconds):.1f} s, peak RSS "
        f"{int(peak_kib) / 2**20:.2f} GiB (imports {int(before_kib) / 2**20:.2f} GiB), "
        f"records {int(nbytes) / 2**20:.1f} MiB"
    )
    assert int(images) > 0.95 * NUM_IMAGES and int(boxes) > 0.95 * NUM_BOXES
    # KiB; most of the peak is json.load's Python objects, freed once the records are built
    assert int(peak_kib) - int(before_kib) < 2**20
    assert int(peak_kib) < 1.75 * 2**20
    assert float(seconds) < 60
    assert int(nbytes) < 64 * 2**20  # the record store itself is compact
