"""A slider config file, whatever trainer wrote it: read (YAML or JSON, errors naming the file) and imported by
its detected format (``import_file``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ...errors import SliderError
from ..config import TrainConfig
from ..slider_names import sanitize_name
from .ai_toolkit import from_ai_toolkit
from .official import from_official


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SliderError(f"{path}: not a UTF-8 text file") from None
    except OSError as error:
        raise SliderError(f"{path}: cannot read the file ({error.strerror or error})") from None


def load_yaml(path: str | Path) -> Any:
    """``yaml.safe_load`` of a file; unreadable files and bad YAML raise SliderError naming the file."""
    path = Path(path)
    text = _read_text(path)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise SliderError(f"{path}: not valid YAML{where}: {problem}") from None


def _load_json(path: Path) -> Any:
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as error:
        raise SliderError(f"{path}: not valid JSON at line {error.lineno}, column {error.colno}: {error.msg}") from None


def _is_own_format(data: Mapping) -> bool:
    """Our JSON always has a name; official/kohya prompt dicts don't, and their entries say "unconditional"."""
    prompts = data.get("prompts")
    official_keys = {"unconditional", "guidance_scale"}
    entries = prompts if isinstance(prompts, list) else []
    return "name" in data and not any(isinstance(e, Mapping) and official_keys & set(e) for e in entries)


def import_file(path: str | Path) -> tuple[TrainConfig, list[str]]:
    """Import a config file, detecting its format: a YAML list (or a mapping with ``prompts``) is an
    official prompts file (named after the file; a sibling config.yaml is not read), a mapping with
    ``config.process`` an ai-toolkit job, and a mapping with ``name`` this extension's JSON.
    Every error is a SliderError whose message starts with the file's path."""
    path = Path(path)
    data = _load_json(path) if path.suffix.lower() == ".json" else load_yaml(path)
    try:
        if isinstance(data, list):
            return from_official(data, name=sanitize_name(path.stem))
        if isinstance(data, Mapping):
            job = data.get("config")
            if isinstance(job, Mapping) and "process" in job:
                return from_ai_toolkit(data)
            if _is_own_format(data):
                return TrainConfig.from_dict(data), []
            if "prompts" in data:
                return from_official(data["prompts"], name=sanitize_name(path.stem))
    except SliderError as error:
        raise SliderError(f"{path}: {error}") from error
    if data is None:
        raise SliderError(f"{path}: the file is empty")
    raise SliderError(f"{path}: not a slider config (expected an official prompts list, an ai-toolkit job "
                      "with config.process, or a saved training preset)")
