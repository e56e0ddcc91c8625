"""Typed configuration: dataclasses with help strings, a YAML/JSON file, then ``key=value`` overrides.

Why: a typo in a threshold name must fail loudly, and every run stores its fully resolved
config next to its results so any number can be traced to its settings.

Ranges: a field's ``min``/``max``/``choices`` metadata bounds it. A number knob whose default
is not negative (a count, a size, a weight, a rate) is also refused below 0 unless its
metadata says ``"signed": True`` or gives its own ``min``: ``prompt.shots=-1`` is an error
naming the key, while a knob whose default is negative (a log-probability threshold, layer
``-1``) keeps its sign.

>>> from dataclasses import dataclass, field
>>> @dataclass
... class Knobs:
...     theta: float = field(default=1.2, metadata={"help": "threshold"})
>>> apply_overrides(Knobs(), ["theta=0.5"]).theta
0.5
"""
from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

import yaml

C = TypeVar("C")


class ConfigError(ValueError):
    """A config key that does not exist, or a value of the wrong type or range; names the key."""


class Choice(dict):
    """A component choice: a name with knob values, ``{"name": "rind", "theta": 0.8}``.

    As a field type it accepts a bare name (``trigger=rind`` becomes ``{"name": "rind"}``), a
    mapping, and dotted knob overrides (``trigger.theta=0.8``); the component's own dataclass
    checks the knobs when the choice is resolved.
    """


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Convert ``value`` (often a string from the command line) to ``annotation`` or raise."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(key, value, arg)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: cannot be {value!r}")
    if origin is typing.Literal:
        for choice in args:
            if str(choice) == str(value):
                return choice
        raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v != ""] if not value.startswith("[") else yaml.safe_load(value)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(key, v, inner) for v in value]
        return tuple(items) if origin is tuple else items
    if annotation is Choice:
        if isinstance(value, str):
            loaded = yaml.safe_load(value) if value.strip() else None
            value = loaded if isinstance(loaded, Mapping) else {"name": value.strip()}
        if value is None:
            return Choice()
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a name or a mapping of knobs, got {value!r}")
        return Choice(value)
    if origin is dict or annotation is dict:
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if annotation is Any:
        return yaml.safe_load(value) if isinstance(value, str) else value
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if isinstance(value, Mapping):
            return from_dict(annotation, value, prefix=f"{key}.")
        raise ConfigError(f"{key}: expected a mapping for {annotation.__name__}, got {value!r}")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        try:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if math.isnan(number):
            raise ConfigError(f"{key}: expected a number, got NaN")
        return number
    if annotation is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    if annotation is Path:
        return Path(value)
    return value


def from_dict(cls: type[C], data: Mapping[str, Any], prefix: str = "") -> C:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys by name."""
    hints = _field_types(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(
            f"unknown config key {prefix}{unknown[0]!r}; valid keys: {', '.join(sorted(names))}"
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in data.items():
        kwargs[k] = _coerce(prefix + k, v, hints[k])
        check_range(prefix + k, kwargs[k], fields[k].metadata, fields[k].default)
    return cls(**kwargs)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_range(key: str, value: Any, metadata: Mapping[str, Any], default: Any = None) -> None:
    """Enforce a field's ``min``/``max``/``choices`` metadata; the message names the key.

    With the field's ``default``, a number knob whose default is not negative gets ``min`` 0
    unless the metadata has ``"signed": True`` (see the module docstring).
    """
    if value is None:
        return
    choices = metadata.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{key}: {value!r} is not one of {list(choices)}")
    low, high = metadata.get("min"), metadata.get("max")
    if low is None and _number(value) and _number(default) and default >= 0 and not metadata.get("signed"):
        low = 0
    if low is not None and value < low:
        raise ConfigError(f"{key}: must be >= {low}, got {value!r}")
    if high is not None and value > high:
        raise ConfigError(f"{key}: must be <= {high}, got {value!r}")


def check_ranges(obj: Any, prefix: str = "") -> None:
    """:func:`check_range` over every field of a (nested) dataclass instance."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_ranges(value, f"{prefix}{f.name}.")
        else:
            check_range(prefix + f.name, value, f.metadata, f.default)


def to_dict(obj: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) dataclass config."""
    def convert(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, Path):
            return str(value)
        return value
    return convert(obj)


def parse_overrides(pairs: Sequence[str]) -> dict[str, str]:
    """``["a.b=1", "c=x"]`` -> ``{"a.b": "1", "c": "x"}``; a pair without '=' is an error."""
    out: dict[str, str] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"override {pair!r} is not of the form key=value")
        key, value = pair.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def apply_overrides(config: C, pairs: Sequence[str] | Mapping[str, Any]) -> C:
    """Return a copy of ``config`` with dotted ``key=value`` overrides applied and type-checked."""
    items = parse_overrides(pairs) if not isinstance(pairs, Mapping) else dict(pairs)
    for dotted, raw in items.items():
        config = _set(config, dotted.split("."), raw, dotted)
    return config


def _set(obj: Any, path: list[str], raw: Any, dotted: str) -> Any:
    head, rest = path[0], path[1:]
    if isinstance(obj, dict):
        if rest:
            return type(obj)({**obj, head: _set_in_mapping(obj.get(head, {}), rest, raw)})
        return type(obj)({**obj, head: yaml.safe_load(raw) if isinstance(raw, str) else raw})
    if not dataclasses.is_dataclass(obj):
        raise ConfigError(f"unknown config key {dotted!r}")
    names = {f.name for f in dataclasses.fields(obj)}
    if head not in names:
        raise ConfigError(f"unknown config key {dotted!r}; valid keys here: {', '.join(sorted(names))}")
    hint = _field_types(type(obj))[head]
    if rest:
        value = _set(getattr(obj, head), rest, raw, dotted)
    else:
        value = _coerce(dotted, raw, hint)
        spec = next(f for f in dataclasses.fields(obj) if f.name == head)
        check_range(dotted, value, spec.metadata, spec.default)
    return dataclasses.replace(obj, **{head: value})


def _set_in_mapping(mapping: Any, path: list[str], raw: Any) -> dict:
    mapping = dict(mapping or {})
    if len(path) == 1:
        mapping[path[0]] = yaml.safe_load(raw) if isinstance(raw, str) else raw
    else:
        mapping[path[0]] = _set_in_mapping(mapping.get(path[0], {}), path[1:], raw)
    return mapping


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON config file into a mapping, naming the file on error."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg.removesuffix(' at')} at column "
                          f"{exc.colno})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        column = f" at column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{where}: not valid YAML ({problem}{column})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
    return data
