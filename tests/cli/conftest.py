"""The installed package of the install and README tests: a wheel of this tree installed into a
fresh venv, built once per session."""

from __future__ import annotations

import shutil
import sys
import sysconfig
from pathlib import Path

import pytest
from cli_helpers import check, run
from helpers import ROOT


@pytest.fixture(scope="session")
def installed(tmp_path_factory) -> dict:
    """A wheel of this tree installed into a fresh venv: {"bin": venv/bin, "python", "wheel"}."""
    root = tmp_path_factory.mktemp("install")
    src = root / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("backbones", "detection", "configs"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    check(
        run(
            [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", root / "wheel", src],
            root,
            None,
        ),
        "pip wheel",
    )
    (wheel,) = (root / "wheel").glob("resdet-*.whl")
    venv = root / "venv"
    check(run([sys.executable, "-m", "venv", "--without-pip", venv], root, None), "venv")
    python = venv / "bin" / "python"
    site = run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], root, None
    )
    # this environment's packages after the venv's own: torch & co. without a download
    Path(check(site, "venv site").stdout.strip(), "_reuse_test_env.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n"
    )
    check(
        run([*pip, "--python", python, "install", "--no-deps", "--no-index", wheel], root, None),
        "pip install",
    )
    return {"bin": venv / "bin", "python": python, "wheel": wheel}
