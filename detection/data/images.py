"""Image decoding: JPEG/PNG (anything Pillow reads) to RGB uint8, EXIF orientation applied."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# the file extensions read as images when a folder is listed
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")


class ImageReadError(OSError):
    """An image file is missing or cannot be decoded."""


def read_image(path: str | os.PathLike, image_id: int | None = None) -> np.ndarray:
    """Decode an image file into an HxWx3 uint8 RGB array (grayscale, palette and RGBA
    converted, alpha dropped; the EXIF orientation tag applied, as cameras intend)."""
    path = Path(path)
    where = f"{path}" + (f" (image id {image_id})" if image_id is not None else "")
    try:
        with Image.open(path) as img:
            img.load()  # decode now, so truncated files fail here and not in a transform
            img = ImageOps.exif_transpose(img)
            if img.mode != "RGB":
                # 16-bit grayscale would be clipped by a plain convert: scale to 8 bits first
                if img.mode in ("I", "I;16", "I;16B", "I;16L"):
                    arr = np.asarray(img, dtype=np.float64)
                    arr = np.clip(arr / 257.0 if arr.max() > 255 else arr, 0, 255)
                    img = Image.fromarray(arr.astype(np.uint8), mode="L")
                img = img.convert("RGB")
            return np.asarray(img, dtype=np.uint8).copy()
    except FileNotFoundError:
        raise ImageReadError(
            f"image file not found: {where}; check the dataset's images folder "
            "(data.train.images / data.test.images or $RESDET_DATASETS), or set "
            "data.skip_bad_images=true to skip it in training"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ImageReadError(
            f"cannot decode image {where}: {e}; the file is corrupt or not an image "
            "(re-download or remove it, or set data.skip_bad_images=true to skip it in training)"
        ) from e
