"""Where config files come from: the configs that ship with resdet (a name such as
coco/faster_rcnn_R50_FPN_1x.yaml works from any directory) and the overrides of the
environment ($RESDET_OVERRIDES)."""

from __future__ import annotations

import logging
import os
import shlex
from pathlib import Path

from .checks import ConfigError

logger = logging.getLogger("detection.config.loader")


# ---------------------------------------------------------------------------------------------
# The shipped configs: a name such as coco/faster_rcnn_R50_FPN_1x.yaml works from any directory


def shipped_configs_dir() -> Path:
    """The folder of the configs that ship with resdet: detection/configs in an installed wheel
    (pyproject maps the top-level configs/ there), the checkout's configs/ otherwise."""
    package = Path(__file__).resolve().parent.parent
    installed = package / "configs"
    return installed if installed.is_dir() else package.parent / "configs"


def shipped_configs() -> list[str]:
    """The names of the shipped configs (paths relative to shipped_configs_dir), sorted."""
    root = shipped_configs_dir()
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.yaml"))


def shipped_config(name: str | os.PathLike) -> Path | None:
    """The shipped config `name` (e.g. coco/faster_rcnn_R50_FPN_1x.yaml, with or without a
    leading configs/), or None."""
    path = Path(name)
    if path.is_absolute():
        return None
    root = shipped_configs_dir()
    candidates = [root / path]
    if len(path.parts) > 1 and path.parts[0] == "configs":
        candidates.append(root.joinpath(*path.parts[1:]))
    return next((c for c in candidates if c.is_file()), None)


def resolve_config_path(path: str | os.PathLike) -> Path:
    """A config file: `path` itself when it is a file, else the shipped config of that name
    (`coco/faster_rcnn_R50_FPN_1x.yaml`, or `configs/coco/...` as in a checkout). A path that
    is neither is a ConfigError naming both places."""
    given = Path(path)
    if given.is_file():
        return given
    shipped = shipped_config(given)
    if shipped is not None:
        return shipped
    raise ConfigError(
        f"config file not found: {path} (not a file here, nor the name of a shipped config in "
        f"{shipped_configs_dir()}; `resdet configs` lists them)"
    )


# ---------------------------------------------------------------------------------------------
# Overrides from the environment

ENV_OVERRIDES = "RESDET_OVERRIDES"


def env_overrides() -> list[str]:
    """KEY=VALUE overrides from $RESDET_OVERRIDES (words split as a shell would), which
    load_config applies after the given ones to every detection config read from a file: one
    setting for every command of a session (the README test shortens the schedules with it).
    Announced by a warning whenever it is used, so it is never silent."""
    text = os.environ.get(ENV_OVERRIDES, "").strip()
    if not text:
        return []
    words = shlex.split(text)
    logger.warning("%s is set: %s applied after the command line's overrides", ENV_OVERRIDES, text)
    return words
