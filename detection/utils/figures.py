"""Matplotlib figures written to files (the Agg backend: no display needed)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .io import atomic_path


def pyplot(purpose: str = "plotting"):
    """matplotlib.pyplot on the Agg backend (files only: servers have no display); a missing
    matplotlib is an error that says what needed it."""
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError(f"{purpose} needs matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Lay out, write (creating the folder) and close a matplotlib figure; returns the path.

    The file is written atomically: a crash leaves the previous file or the complete new one.
    The format follows the suffix of `path` (.png, .pdf, .svg).
    """
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        fig.tight_layout()
        # the temporary keeps the suffix, from which savefig picks the format
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120)
    finally:
        plt.close(fig)
    return path


def safe_file_name(name: str, fallback: str = "unnamed") -> str:
    """`name` reduced to letters, digits, '-', '_' and '.' (other runs become '_'), for use in a
    file name on any OS; `fallback` when nothing is left ("traffic light" -> "traffic_light")."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return cleaned or fallback
