"""The webui's per-file user metadata (``<file stem>.json`` beside the file, written by the card editor):
what a user set overrides what the file's header recommends. Plain JSON, no webui import."""

from __future__ import annotations

import json
import math
import os
from typing import Any

ALPHA_RANGE_KEY = "alpha range"
DEFAULT_START_KEY = "default start"
DESCRIPTION_KEY = "description"


def user_metadata_path(slider_path: str) -> str:
    return os.path.splitext(slider_path)[0] + ".json"


def read_user_metadata(slider_path: str) -> dict[str, Any]:
    try:
        with open(user_metadata_path(slider_path), encoding="utf8") as file:
            data = json.load(file)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def merged_info(info: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    """``SliderLibrary.info`` with the user's valid overrides applied."""
    merged = dict(info)
    alpha_range = user.get(ALPHA_RANGE_KEY)
    if isinstance(alpha_range, list) and len(alpha_range) == 2 and all(_finite(v) for v in alpha_range) \
            and alpha_range[0] < alpha_range[1]:
        merged["alpha_range"] = (float(alpha_range[0]), float(alpha_range[1]))
    start = user.get(DEFAULT_START_KEY)
    if _finite(start) and 0 <= start <= 1:
        merged["default_start"] = float(start)
    description = user.get(DESCRIPTION_KEY)
    if isinstance(description, str) and description.strip():
        merged["description"] = description
    return merged
