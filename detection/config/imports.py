"""A config's `imports:` the Python modules to import before the rest of it is checked, so that
what they register (a backbone: backbones.register_backbone) can be named in it.

An entry is a module name on the Python path (`my_project.backbones`) or a path to a .py file,
relative to the config file that lists it (to the working directory in an override) and stored
resolved, so that the saved config.yaml and the checkpoints name the same file. A config read
from a checkpoint or a dict imports nothing (loading a checkpoint runs no code): its modules
must be imported already, or named again in an override.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from .checks import ConfigError

KEY = "imports"


def _is_path(entry: str) -> bool:
    return entry.endswith(".py") or "/" in entry or "\\" in entry


def _resolve(entry: str, source: str) -> Path:
    """A .py entry as an absolute path: relative to the file `source` names, or to the working
    directory (overrides, defaults)."""
    path = Path(entry).expanduser()
    if not path.is_absolute() and Path(source).is_file():
        path = Path(source).parent / path
    return path.resolve()


def _module_name(path: Path) -> str:
    """The name a .py file is imported under: the same for the same file, whoever imports it."""
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
    return f"resdet_imports.{path.stem}_{digest}"


def _import_file(path: Path, entry: str, source: str) -> None:
    name = _module_name(path)
    if name in sys.modules:
        return
    if not path.is_file():
        raise ConfigError(
            f"'{KEY}' (from {source}): no file {entry} (looked at {path}; a relative path starts "
            "at the folder of the config file that lists it, or at the working directory in an "
            "override)"
        )
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise


def _import_module(entry: str, source: str) -> None:
    try:
        importlib.import_module(entry)
    except ModuleNotFoundError as e:
        if e.name is None or not (entry == e.name or entry.startswith(e.name + ".")):
            raise  # the module was found; something it imports was not
        raise ConfigError(
            f"'{KEY}' (from {source}): no module {entry!r} on the Python path; give the path to "
            "its .py file instead, or add its folder to PYTHONPATH"
        ) from None


def _check_entries(entries: Any, source: str) -> list[str]:
    if not isinstance(entries, list) or not all(isinstance(e, str) and e for e in entries):
        raise ConfigError(
            f"'{KEY}' (from {source}) must be a list of module names or .py paths, got {entries!r}"
        )
    return entries


def import_modules(entries: Any, source: str) -> list[str]:
    """Import every entry (in order); the entries with .py paths resolved."""
    resolved = []
    for entry in _check_entries(entries, source):
        if _is_path(entry):
            path = _resolve(entry, source)
            _import_file(path, entry, source)
            resolved.append(str(path))
        else:
            _import_module(entry, source)
            resolved.append(entry)
    return resolved


def require_imported(entries: Any, source: str) -> None:
    """ConfigError unless every entry was imported already (a config from a checkpoint)."""
    missing = [
        e
        for e in _check_entries(entries, source)
        if (_module_name(Path(e)) if _is_path(e) else e) not in sys.modules
    ]
    if missing:
        raise ConfigError(
            f"{source} lists imports {missing} that are not imported: a config read from a "
            "checkpoint runs no code. Import them first (`import ...` in Python), or pass them "
            f"again as the override {KEY}=[...]"
        )


def import_listed(data: MutableMapping[str, Any], sources: dict[str, str], trusted: bool) -> None:
    """The imports of a config's raw `data` before it is built: imported (and their paths
    resolved in `data`) when `trusted` (files and overrides a user gives) or set by an override,
    else only required to be imported already."""
    entries = data.get(KEY)
    if not entries:
        return
    source = sources.get(KEY, "the config")
    if trusted or source.startswith("override"):
        data[KEY] = import_modules(entries, source)
    else:
        require_imported(entries, source)
