"""Loading configs: YAML files with `_base_` inheritance, `key=value` overrides, strict checks."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from ..utils.io import write_text
from .checks import ConfigError, validate
from .files import (  # noqa: F401 -- re-exported: the config API names them here
    ENV_OVERRIDES,
    env_overrides,
    resolve_config_path,
    shipped_config,
    shipped_configs,
    shipped_configs_dir,
)
from .imports import import_listed
from .schema import Config

BASE_KEY = "_base_"


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def all_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every dotted key of the schema, sections included."""
    keys = []
    hints = _hints(cls)
    for name in _fields(cls):
        key = prefix + name
        keys.append(key)
        if dataclasses.is_dataclass(hints[name]):
            keys.extend(all_keys(hints[name], key + "."))
    return keys


def field_docs(cls: type = Config, prefix: str = "") -> list[tuple[str, str, Any]]:
    """(dotted key, one-line description, default) for every leaf field."""
    out = []
    hints = _hints(cls)
    default = cls()
    for name, f in _fields(cls).items():
        key = prefix + name
        if dataclasses.is_dataclass(hints[name]):
            out.extend(field_docs(hints[name], key + "."))
        else:
            doc = f.metadata.get("doc", "")
            if f.metadata.get("choices"):
                doc += f" (one of: {', '.join(map(str, f.metadata['choices']))})"
            out.append((key, doc, getattr(default, name)))
    return out


def _suggest(key: str, schema: type = Config) -> str:
    """' Did you mean X?' for the closest valid dotted key (by full key, then by last part)."""
    every = all_keys(schema)
    keys = [k for k in every if k.count(".") == key.count(".")] or every
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    if not close:
        leaf = key.rsplit(".", 1)[-1]
        by_leaf = {k.rsplit(".", 1)[-1]: k for k in every}
        close = [by_leaf[m] for m in difflib.get_close_matches(leaf, list(by_leaf), n=1)]
    return f"; did you mean {close[0]}?" if close else ""


# ---------------------------------------------------------------------------------------------
# Reading files


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from None
    try:
        data = yaml.safe_load(text)  # the safe loader: python object tags are refused
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML (only plain values are allowed): {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ConfigError(f"{path}: a config must be a mapping of sections, got a {kind}")
    return data


def _check_keys(
    data: Mapping[str, Any], cls: type, prefix: str, source: str, schema: type = Config
) -> None:
    """Every key of `data` exists in the schema `cls` (recursively; `schema` is the top level
    dataclass, for the suggestion)."""
    fields = _fields(cls)
    hints = _hints(cls)
    for name, value in data.items():
        key = prefix + str(name)
        if name not in fields:
            # suggest from the deepest key given: model.backbon.name -> model.backbone.name
            full = key
            while isinstance(value, Mapping) and len(value) == 1:
                sub, value = next(iter(value.items()))
                full += f".{sub}"
            raise ConfigError(f"unknown config key '{full}' in {source}{_suggest(full, schema)}")
        if dataclasses.is_dataclass(hints[name]):
            if not isinstance(value, Mapping):
                raise ConfigError(
                    f"'{key}' in {source} is a section and must be a mapping of keys, got {value!r}"
                )
            _check_keys(value, hints[name], key + ".", source, schema)


def _merge(base: dict, child: Mapping, sources: dict, source: str, prefix: str = "") -> None:
    """Merge `child` into `base`: sections recursively, other values (lists too) replaced."""
    for name, value in child.items():
        key = prefix + name
        if isinstance(value, Mapping) and isinstance(base.get(name), dict):
            _merge(base[name], value, sources, source, key + ".")
        elif isinstance(value, Mapping):
            base[name] = {}
            _merge(base[name], value, sources, source, key + ".")
        else:
            base[name] = value
            sources[key] = source


def _load_file(
    path: Path, sources: dict, chain: tuple[Path, ...] = (), schema: type = Config
) -> dict[str, Any]:
    path = path.resolve()
    if path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise ConfigError(f"_base_ cycle: {cycle}")
    data = _read_yaml(path)
    bases = data.pop(BASE_KEY, None)
    if isinstance(bases, str):
        bases = [bases]
    if bases is not None and not (
        isinstance(bases, list) and all(isinstance(b, str) for b in bases)
    ):
        raise ConfigError(f"{path}: _base_ must be a relative path or a list, got {bases!r}")
    merged: dict[str, Any] = {}
    for base in bases or ():
        # relative to the file, or else a shipped config: a user's own file may say
        # `_base_: coco/faster_rcnn_R50_FPN_1x.yaml`
        base_path = path.parent / base
        if not base_path.exists():
            base_path = shipped_config(base) or base_path
        if not base_path.exists():
            raise ConfigError(
                f"{path}: _base_ file not found: {base} (looked at {path.parent / base} and the "
                "shipped configs)"
            )
        _merge(
            merged, _load_file(base_path, sources, (*chain, path), schema), sources, str(base_path)
        )
    _check_keys(data, schema, "", str(path), schema)
    # keys set by a file are credited to it; inherited ones keep their base file as source
    _merge(merged, data, sources, str(path))
    return merged


def parse_override(text: str) -> tuple[str, Any]:
    """'section.key=value' -> ('section.key', value parsed as YAML)."""
    if "=" not in text or text.startswith("="):
        raise ConfigError(
            f"override {text!r} must look like section.key=value, "
            "e.g. model.backbone.name=resnet101"
        )
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: value is not valid YAML: {e}") from None
    return key, value


def _apply_override(data: dict, text: str, sources: dict, schema: type = Config) -> None:
    key, value = parse_override(text)
    parts = key.split(".")
    nested: Any = value
    for part in reversed(parts):
        nested = {part: nested}
    _check_keys(nested, schema, "", f"override {text!r}", schema)
    _merge(data, nested, sources, f"override {text!r}")


# ---------------------------------------------------------------------------------------------
# Types


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _coerce_container(value: Any, tp: Any, key: str, source: str, fail) -> Any:
    """`value` checked against list[T] or dict[K, V], item by item."""
    if typing.get_origin(tp) is list:
        if not isinstance(value, list | tuple):
            fail()
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if value is None:  # null clears an inherited mapping (a child map adds to it)
        return {}
    if not isinstance(value, Mapping):
        fail()
    ktp, vtp = typing.get_args(tp)
    return {
        _coerce(k, ktp, f"{key} (a key)", source): _coerce(v, vtp, f"{key}.{k}", source)
        for k, v in value.items()
    }


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """`value` checked against (and converted to) the annotation `tp`."""

    def fail() -> typing.NoReturn:
        """Raise the type error of this key."""
        raise ConfigError(
            f"'{key}' (from {source}) must be of type {_type_name(tp)}, got {value!r} "
            f"({type(value).__name__})"
        )

    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, source)
            except ConfigError:
                pass
        fail()
    if origin in (list, dict):
        return _coerce_container(value, tp, key, source, fail)
    if tp is bool:
        if not isinstance(value, bool):
            fail()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail()
        return value
    if tp is float:
        if isinstance(value, bool):
            fail()
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                fail()
        fail()
    if tp is str:
        if not isinstance(value, str):
            fail()
        return value
    raise TypeError(f"schema type {tp!r} of {key} is not supported")  # a bug in schema.py


def _build(cls: type, data: Mapping[str, Any], sources: dict, prefix: str = "") -> Any:
    hints = _hints(cls)
    kwargs = {}
    for name, f in _fields(cls).items():
        if name not in data:
            continue
        key = prefix + name
        if dataclasses.is_dataclass(hints[name]):
            kwargs[name] = _build(hints[name], data[name], sources, key + ".")
            continue
        source = sources.get(key, "the defaults")
        choices = f.metadata.get("choices")
        value = data[name]
        if isinstance(value, bool) and hints[name] is str and choices:
            # YAML 1.1 reads off / on / yes / no as booleans: `solver.amp=off` means "off"
            words = ("on", "yes", "true") if value else ("off", "no", "false")
            value = next((w for w in words if w in choices), value)
        value = _coerce(value, hints[name], key, source)
        if choices and value not in choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(
                f"'{key}' (from {source}) is {value!r}{hint}; allowed values: "
                f"{', '.join(map(str, choices))}"
            )
        kwargs[name] = value
    return cls(**kwargs)


# ---------------------------------------------------------------------------------------------
# Public API


SchemaT = typing.TypeVar("SchemaT")


@typing.overload
def load_config(path: str | os.PathLike | None = None, overrides: Iterable[str] = ()) -> Config: ...


@typing.overload
def load_config(
    path: str | os.PathLike | None, overrides: Iterable[str], *, schema: type[SchemaT]
) -> SchemaT: ...


def load_config(
    path: str | os.PathLike | None = None,
    overrides: Iterable[str] = (),
    *,
    schema: type = Config,
) -> Any:
    """The config of YAML file `path` (defaults when None) with `overrides` applied; `path` may
    also name a shipped config (see resolve_config_path).

    Raises ConfigError naming the file or override for unknown keys, wrong types and
    values outside an enumeration. `schema` is the dataclass to build (the detection Config by
    default; the classifier's schema for resdet train-classifier); the checks across fields
    are the detection Config's own, other schemas check theirs after loading.
    """
    sources: dict[str, str] = {}
    data = _load_file(resolve_config_path(path), sources, schema=schema) if path is not None else {}
    extra = env_overrides() if schema is Config and path is not None else []
    for text in [*overrides, *extra]:
        _apply_override(data, text, sources, schema)
    import_listed(data, sources, trusted=True)  # before the names they register are checked
    cfg = _build(schema, data, sources)
    if schema is Config:
        validate(cfg)
    return cfg


def config_from_dict(
    data: Mapping[str, Any], source: str = "a dict", overrides: Iterable[str] = ()
) -> Config:
    """A Config from a nested dict (e.g. the one embedded in a checkpoint), checked strictly."""
    data = copy.deepcopy(dict(data))
    data.pop(BASE_KEY, None)
    _check_keys(data, Config, "", source)
    sources = {k: source for k in all_keys()}
    for text in overrides:
        _apply_override(data, text, sources)
    import_listed(data, sources, trusted=False)  # a checkpoint's config runs no code
    cfg = _build(Config, data, sources)
    validate(cfg)
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain nested dicts and lists (for YAML, JSON and checkpoints)."""
    return dataclasses.asdict(cfg)


class _Dumper(yaml.SafeDumper):
    """Sections as blocks, lists inline: `steps: [60000, 80000]`."""


_Dumper.add_representer(
    list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True)
)


def dump(cfg: Config, path: str | os.PathLike | None = None) -> str:
    """The config as YAML text; also written to `path` when given."""
    text = yaml.dump(to_dict(cfg), Dumper=_Dumper, sort_keys=False, width=100)
    if path is not None:
        write_text(path, text)
    return text


def save_config(cfg: Config, output_dir: str | os.PathLike | None = None) -> Path:
    """Write the resolved config as `<output_dir>/config.yaml` (output_dir from the config)."""
    path = Path(output_dir if output_dir is not None else cfg.output_dir) / "config.yaml"
    dump(cfg, path)
    return path
