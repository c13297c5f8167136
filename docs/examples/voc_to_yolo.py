"""Make a YOLO copy of a Pascal VOC folder (for trying `resdet convert-yolo` on known data).

    python docs/examples/voc_to_yolo.py VOC_ROOT OUT_ROOT [SPLIT ...]

For each SPLIT (default: trainval test) listed in VOC_ROOT/ImageSets/Main/SPLIT.txt it links the
images into OUT_ROOT/images/SPLIT/ and writes OUT_ROOT/labels/SPLIT/<id>.txt, one
`class cx cy w h` line per object (normalised, classes from 0 in sorted name order), and
OUT_ROOT/data.yaml. Independent of resdet: it reads the XML itself, so converting the copy back
checks resdet's YOLO import against its VOC import. VOC corners are 1-based inclusive pixels:
x1 = xmin - 1, x2 = xmax. Degenerate boxes are written as they are (the import counts them).
"""

import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def objects(xml: Path) -> tuple[str, int, int, list[tuple[str, float, float, float, float]]]:
    root = ET.parse(xml).getroot()
    size = root.find("size")
    w, h = int(size.findtext("width")), int(size.findtext("height"))
    boxes = []
    for obj in root.iter("object"):
        b = obj.find("bndbox")
        x1, y1, x2, y2 = (float(b.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append((obj.findtext("name").strip(), x1 - 1, y1 - 1, x2, y2))
    return root.findtext("filename"), w, h, boxes


def main(voc: Path, out: Path, splits: list[str]) -> None:
    parsed = {}
    for split in splits:
        ids = (voc / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
        parsed[split] = {i: objects(voc / "Annotations" / f"{i}.xml") for i in ids}
    names = sorted({b[0] for p in parsed.values() for _, _, _, bs in p.values() for b in bs})
    for split, entries in parsed.items():
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        for file_name, w, h, boxes in entries.values():
            link = out / "images" / split / file_name
            if not link.exists():
                os.symlink((voc / "JPEGImages" / file_name).resolve(), link)
            # full precision (repr): the boxes read back equal the VOC ones to ~1e-13 px
            lines = [
                f"{names.index(n)} {(x1 + x2) / 2 / w!r} {(y1 + y2) / 2 / h!r} "
                f"{(x2 - x1) / w!r} {(y2 - y1) / h!r}"
                for n, x1, y1, x2, y2 in boxes
            ]
            label = out / "labels" / split / f"{Path(file_name).stem}.txt"
            label.write_text("".join(line + "\n" for line in lines))
    yaml_splits = "".join(f"{s}: images/{s}\n" for s in splits)
    names_yaml = "".join(f"  {i}: {n}\n" for i, n in enumerate(names))
    (out / "data.yaml").write_text(f"path: .\n{yaml_splits}names:\n{names_yaml}")
    print(f"wrote {out}: splits {', '.join(splits)}; classes {', '.join(names)}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:] or ["trainval", "test"])
