"""Reading YAML config files into typed dataclasses, with one clear sentence for an unknown key, a wrong type, a
section that is not a mapping, or a value out of its range.

A dataclass declares the ranges of its numeric fields in a class attribute `LIMITS` ({field: Limit}); `from_mapping`
checks them (NaN and infinity are out of every range), and `override` checks command-line overrides the same way.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from havana.errors import HavanaError

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Limit:
    """A closed or half-open numeric interval a config value must lie in (None: unbounded on that side)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # the value must be strictly above `low`
    high_open: bool = False  # the value must be strictly below `high`

    def allows(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        if self.high is None:
            return f"{'above' if self.low_open else 'at least'} {self.low:g}"
        if self.low is None:
            return f"{'below' if self.high_open else 'at most'} {self.high:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


def at_least(low: float) -> Limit:
    return Limit(low=low)


def above(low: float) -> Limit:
    return Limit(low=low, low_open=True)


def between(low: float, high: float, *, high_open: bool = False, low_open: bool = False) -> Limit:
    return Limit(low=low, high=high, low_open=low_open, high_open=high_open)


def check_limits(obj: T, where: str = "config") -> T:
    """`obj` itself when every field named in its class's LIMITS (and every nested dataclass) is in range."""
    limits = getattr(type(obj), "LIMITS", {})
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            check_limits(value, f"{where}.{f.name}")
        limit = limits.get(f.name)
        if limit is None or value is None:
            continue
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(item, (int, float)) and not isinstance(item, bool) and not limit.allows(item):
                raise HavanaError(f"config value {where}.{f.name}={value!r} is out of range; it must be {limit}.")
    return obj


def override(obj: T, overrides: dict[str, Any], where: str = "config") -> T:
    """`obj` with command-line `overrides` applied (None values ignored), range-checked like the config itself."""
    return check_limits(
        dataclasses.replace(obj, **{k: v for k, v in overrides.items() if v is not None}),
        f"{where} (with command-line overrides)",
    )


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`base` with `over` merged in, key by key: mappings recursively, anything else replaced by `over`'s value."""
    merged = dict(base)
    for key, value in over.items():
        both = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = merge(merged[key], value) if both else value
    return merged


def with_defaults(config: dict[str, Any], folder: str | os.PathLike) -> dict[str, Any]:
    """`config` merged over the files its top-level `defaults:` lists (paths relative to `folder`, each loaded with
    its own defaults, later files over earlier ones), without the `defaults` key: how config.yaml and demo.yaml share
    config/rows.yaml. A config without `defaults` is returned as it is."""
    if "defaults" not in config:
        return config
    files = config["defaults"]
    if not isinstance(files, list) or not all(isinstance(name, str) for name in files):
        raise HavanaError(f"config 'defaults' must be a list of YAML file names, not {files!r}.")
    merged: dict[str, Any] = {}
    for name in files:
        merged = merge(merged, load_yaml(Path(folder) / name))
    return merge(merged, {key: value for key, value in config.items() if key != "defaults"})


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Load a YAML mapping from `path` with its `defaults:` merged in (with_defaults), or raise HavanaError saying why
    it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise HavanaError(f"config file {path} does not exist; pass an existing YAML file (e.g. config/config.yaml).")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise HavanaError(f"config file {path} is not valid YAML ({exc.__class__.__name__}); fix its syntax.") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise HavanaError(f"config file {path} must hold a mapping at the top level, not a {type(data).__name__}.")
    return with_defaults(data, path.parent)


def section(config: dict[str, Any], *keys: str) -> Any:
    """`config[k1][k2]...`, or HavanaError naming the missing key path and the keys that exist."""
    node: Any = config
    for depth, key in enumerate(keys):
        if not isinstance(node, dict) or key not in node:
            where = ".".join(keys[:depth]) or "the top level"
            known = ", ".join(sorted(node)) if isinstance(node, dict) else "none"
            raise HavanaError(f"config has no '{key}' under {where} (known: {known}); add it or pick a known name.")
        node = node[key]
    return node


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        others = [arg for arg in args if arg is not type(None)]
        if len(others) == 1:  # `X | None` with a value: X's own error says what is wrong
            return _coerce(value, others[0], where)
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except HavanaError:
                continue
        raise HavanaError(f"config value {where}={value!r} has the wrong type; expected {annotation}.")
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise HavanaError(f"config value {where} must be a mapping, not {value!r}.")
        return from_mapping(annotation, value, where)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise HavanaError(f"config value {where}={value!r} must be a list.")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise HavanaError(f"config value {where}={value!r} must have {len(args)} items.")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        coerced = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(coerced) if origin is tuple else coerced
    if origin is dict:
        if not isinstance(value, dict):
            raise HavanaError(f"config value {where} must be a mapping, not {value!r}.")
        return dict(value)
    if annotation is Any:
        return value
    if annotation is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str):
        try:
            return float(value)  # YAML reads "1e-5" as a string
        except ValueError:
            pass
    if annotation is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if annotation is bool and isinstance(value, bool):
        return value
    if annotation is str and isinstance(value, str):
        return value
    raise HavanaError(
        f"config value {where}={value!r} has the wrong type; expected {getattr(annotation, '__name__', annotation)}."
    )


def from_mapping(cls: type[T], mapping: dict[str, Any], where: str = "config") -> T:
    """Build dataclass `cls` from `mapping`; missing keys take the field defaults, unknown keys are an error."""
    if mapping is None:
        raise HavanaError(f"config {where} is empty (null); give it its keys, or {{}} for every default.")
    if not isinstance(mapping, dict):
        raise HavanaError(
            f"config {where} must be a mapping of keys to values, not the {type(mapping).__name__} "
            f"{mapping!r}; indent its keys under it."
        )
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(mapping) - set(fields))
    if unknown:
        raise HavanaError(
            f"config {where} has unknown key(s) {', '.join(unknown)}; valid keys are {', '.join(fields)}."
        )
    values = {name: _coerce(value, hints[name], f"{where}.{name}") for name, value in mapping.items()}
    try:
        built = cls(**values)
    except TypeError as exc:
        raise HavanaError(f"config {where} is incomplete: {exc}.") from None
    return check_limits(built, where)
