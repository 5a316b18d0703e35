"""The script's one argument: a dict, from the Sliders accordion or from an API call.

``alwayson_scripts: {"concept sliders": {"args": [{"sliders": [{"name": "age", "alpha": 2, "start": 0.2}]}]}}``

Each slider entry: ``name`` (required), ``alpha`` (number; ``"-2..2"`` spread or ``"-2|0|2"`` cycle over the
job's images; or a list of numbers = a cycle; default 1), optional ``start``, ``stop``, ``te``, ``unet``
(as in the prompt syntax). ``"enabled": false`` turns the whole dict off (the accordion's checkbox); a dict
without ``enabled`` is on. A JSON string of the same dict is accepted too. Nothing here touches files.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from ..apply.job_plan import SliderRequest
from ..prompt.prompt_tags import NAMED_ARGS, AlphaSpec, TagError, parse_alpha, parse_number

EMPTY_ARGS: dict[str, Any] = {"enabled": False, "sliders": []}


@dataclass
class ParsedArgs:
    requests: list[SliderRequest] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _alpha_spec(value: Any, where: str) -> AlphaSpec:
    if value is None:
        return AlphaSpec("value", (1.0,))
    if isinstance(value, bool):
        raise ValueError(f"{where}.alpha: expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError(f"{where}.alpha: {value!r} is not a finite number")
        return AlphaSpec("value", (float(value),))
    if isinstance(value, list) and value:
        numbers = [v for v in value if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
        if len(numbers) != len(value):
            raise ValueError(f"{where}.alpha: a list must hold only numbers")
        return AlphaSpec("cycle", tuple(float(v) for v in numbers))
    if isinstance(value, str) and value.strip():
        try:
            return parse_alpha(value.strip(), f"{where}.alpha")
        except TagError as err:
            raise ValueError(f"{where}.alpha: {err.problem}") from None
    raise ValueError(f"{where}.alpha: expected a number, 'A..B', 'A|B|C' or a list of numbers, got {value!r}")


def _number(entry: dict, key: str, where: str) -> float | None:
    value = entry.get(key)
    if value is None:
        return None
    number = parse_number(value) if isinstance(value, str) else value
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
        raise ValueError(f"{where}.{key}: expected a number, got {value!r}")
    if key in ("start", "stop") and number < 0:
        raise ValueError(f"{where}.{key}: must not be negative")
    return float(number)


def parse_args(value: Any) -> ParsedArgs:
    """Requests from the script argument; every unusable entry becomes a problem naming its field."""
    parsed = ParsedArgs()
    if value is None or value == "":
        return parsed
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as err:
            parsed.problems.append(f"script argument: not JSON ({err})")
            return parsed
    if not isinstance(value, dict):
        parsed.problems.append(f"script argument: expected a dict with 'sliders', got {type(value).__name__}")
        return parsed
    if not value.get("enabled", True):
        return parsed
    entries = value.get("sliders", [])
    if not isinstance(entries, list):
        parsed.problems.append("sliders: expected a list")
        return parsed
    for index, entry in enumerate(entries):
        where = f"sliders[{index}]"
        if not isinstance(entry, dict):
            parsed.problems.append(f"{where}: expected a dict with 'name' and 'alpha'")
            continue
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            if name in (None, ""):
                continue  # an empty UI row
            parsed.problems.append(f"{where}.name: expected a slider name, got {name!r}")
            continue
        unknown = sorted(set(entry) - {"name", "alpha", *NAMED_ARGS})
        try:
            if unknown:
                raise ValueError(f"{where}: unknown field {unknown[0]!r}")
            alpha = _alpha_spec(entry.get("alpha"), where)
            start, stop, te, unet = (_number(entry, key, where) for key in NAMED_ARGS)
        except ValueError as err:
            parsed.problems.append(str(err))
            continue
        source = f"Sliders row {index + 1} ({name.strip()}:{alpha})"
        parsed.requests.append(SliderRequest(name.strip(), alpha, start, stop, te, unet, source))
    return parsed

