"""Typed YAML configs: schema with defaults, `_base_` inheritance, overrides, strict errors."""

from .loader import (
    ConfigError,
    all_keys,
    config_from_dict,
    dump,
    field_docs,
    load_config,
    parse_override,
    save_config,
    to_dict,
)
from .schema import Config

__all__ = [
    "Config",
    "ConfigError",
    "all_keys",
    "config_from_dict",
    "dump",
    "field_docs",
    "load_config",
    "parse_override",
    "save_config",
    "to_dict",
]
