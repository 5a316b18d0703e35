"""The value kinds of a training config's fields: one checker/normaliser shared by construction, validation
and ``from_dict``, and ``ConfigError``, the problem with one field (named by its path, e.g. ``prompts[0].target``).

A kind is a short string (``"str"``, ``"int"``, ``"float?"``, ``"str[]"``, ``"float2"`` …). ``coerce`` normalises a
value to its kind (strings stripped, integral floats to ints) or raises ``ConfigError(path, "expected ...")``;
``normalise`` applies it to a dataclass's fields on construction, leaving wrong types for validation to report;
``check_types`` reports them; ``from_mapping`` builds a dataclass from JSON-like data.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import MISSING
from typing import Any

from ..errors import SliderError


class ConfigError(SliderError):
    """One problem with one field of a training configuration."""

    def __init__(self, field: str, problem: str):
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


_EXPECTED = {
    "str": "expected a string",
    "str?": "expected a string or null",
    "int": "expected an integer",
    "float": "expected a number",
    "float?": "expected a number or null",
    "bool": "expected true or false",
    "str[]": "expected a list of strings",
    "float[]": "expected a list of numbers",
    "float2": "expected a pair of numbers [low, high]",
}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def coerce(value: Any, kind: str, path: str) -> Any:
    """``value`` normalised to ``kind``, or ConfigError(path, "expected ...")."""
    if kind.endswith("?"):
        if value is None:
            return None
        try:
            return coerce(value, kind[:-1], path)
        except ConfigError:
            raise ConfigError(path, _EXPECTED[kind]) from None
    if kind == "str" and isinstance(value, str):
        return value.strip()
    if kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    if kind == "float" and _is_number(value):
        return float(value)
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "str[]" and isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value]
    if kind == "float[]" and isinstance(value, (list, tuple)) and all(_is_number(v) for v in value):
        return [float(v) for v in value]
    if kind == "float2" and isinstance(value, (list, tuple)) and len(value) == 2 and all(map(_is_number, value)):
        return (float(value[0]), float(value[1]))
    raise ConfigError(path, _EXPECTED[kind])


def normalise(obj: Any, kinds: dict[str, str]) -> None:
    for name, kind in kinds.items():
        try:
            setattr(obj, name, coerce(getattr(obj, name), kind, name))
        except ConfigError:
            pass  # validation reports it with the full path


def check_types(obj: Any, kinds: dict[str, str], prefix: str, errors: list[ConfigError]) -> set[str]:
    """Names of the fields of ``obj`` that have the right type; the others are added to ``errors``."""
    ok = set()
    for name, kind in kinds.items():
        try:
            coerce(getattr(obj, name), kind, prefix + name)
            ok.add(name)
        except ConfigError as error:
            errors.append(error)
    return ok


def from_mapping(cls: type, data: Any, kinds: dict[str, str], path: str, nested: dict[str, type] | None = None):
    """Build ``cls`` from a JSON-like mapping: unknown fields and wrong types raise, missing ones default."""
    if not isinstance(data, Mapping):
        raise ConfigError(path or "config", "expected an object")
    prefix = f"{path}." if path else ""
    nested = nested or {}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{prefix}{key}"
        if key in nested:
            if not isinstance(value, (list, tuple)):
                raise ConfigError(where, "expected a list")
            kwargs[key] = [nested[key].from_dict(item, path=f"{where}[{i}]") for i, item in enumerate(value)]
        elif key in kinds:
            kwargs[key] = coerce(value, kinds[key], where)
        else:
            raise ConfigError(where, f"unknown field {key!r}")
    for f in dataclasses.fields(cls):
        if f.name not in kwargs and f.default is MISSING and f.default_factory is MISSING:
            raise ConfigError(f"{prefix}{f.name}", "required")
    return cls(**kwargs)


def is_positive(value: float) -> bool:
    return math.isfinite(value) and value > 0
