"""Reading values out of other trainers' parsed YAML/JSON: each reader names the key path in its ConfigError,
accepts what YAML turns a value into (``1990s`` a string, ``2e-4`` a string, ``2000`` an int), and returns the
given default for a missing key. ``EntryNotes`` merges per-entry notes so that ten identical entries give one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..config_values import ConfigError

_PRECISIONS = {
    "bf16": "bf16", "bfloat16": "bf16",
    "fp16": "fp16", "float16": "fp16", "half": "fp16",
    "fp32": "fp32", "float32": "fp32", "float": "fp32", "full": "fp32",
}


def read_section(data: Mapping, key: str, path: str) -> Mapping:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(_join(path, key), "expected a mapping")
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def read_text(data: Mapping, key: str, path: str, default: str | None = None) -> str | None:
    value = data.get(key)
    if value is None:
        return default
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value).strip()  # YAML turns a bare `1990s` into a string but `2000` into an int
    raise ConfigError(_join(path, key), "expected a string")


def _to_number(value: Any, path: str) -> float:
    if isinstance(value, str):
        try:  # PyYAML reads `2e-4` (no dot) as a string
            return float(value)
        except ValueError:
            pass
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise ConfigError(path, "expected a number")


def to_int(value: Any, path: str) -> int:
    number = _to_number(value, path)
    if not number.is_integer():
        raise ConfigError(path, "expected an integer")
    return int(number)


def read_number(data: Mapping, key: str, path: str, default: float | None = None) -> float | None:
    value = data.get(key)
    return default if value is None else _to_number(value, _join(path, key))


def read_integer(data: Mapping, key: str, path: str, default: int | None = None) -> int | None:
    value = data.get(key)
    return default if value is None else to_int(value, _join(path, key))


def read_flag(data: Mapping, key: str, path: str, default: bool = False) -> bool:
    value = data.get(key)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    raise ConfigError(_join(path, key), "expected true or false")


def read_precision(value: str | None, where: str, notes: list[str]) -> str:
    if value is None:
        return "auto"
    precision = _PRECISIONS.get(value.lower())
    if precision is None:
        notes.append(f"{where} {value!r} is not a known precision; using auto")
        return "auto"
    return precision


class EntryNotes:
    """Per-entry notes, merged so ten identical entries give one line."""

    def __init__(self) -> None:
        self._where: dict[str, list[int]] = {}

    def add(self, index: int, message: str) -> None:
        self._where.setdefault(message, []).append(index)

    def lines(self, count: int, name: str = "prompts") -> list[str]:
        out = []
        for message, indexes in self._where.items():
            where = f"all {name}" if len(indexes) == count > 1 else ", ".join(f"{name}[{i}]" for i in indexes)
            out.append(f"{where}: {message}")
        return out
