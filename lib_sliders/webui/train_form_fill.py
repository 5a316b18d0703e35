"""A config → form values: ``config_to_form`` (the inverse of ``form_to_request``) for imported files and JSON
presets, ``form_notes`` for what the form shows differently, and ``import_preset`` doing both for a file."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from ..training.config import ImagePair, TrainConfig
from .train_form import ADVANCED_KEYS, DEFAULT_CONFIG, DEFAULT_PROMPT, MODE_LABELS, PROMPT_WEIGHT_KEY, scales_text


def _pair_folders(pairs: list[ImagePair]) -> tuple[str, str]:
    befores = {os.path.dirname(p.before) for p in pairs}
    afters = {os.path.dirname(p.after) for p in pairs}
    if len(befores) == 1 and len(afters) == 1:
        return befores.pop(), afters.pop()
    return "", ""


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0].lower()


def _advanced_text(config: TrainConfig) -> str:
    data = {k: getattr(config, k) for k in ADVANCED_KEYS if getattr(config, k) != getattr(DEFAULT_CONFIG, k)}
    if config.prompts and config.prompts[0].weight != DEFAULT_PROMPT.weight:
        data[PROMPT_WEIGHT_KEY] = config.prompts[0].weight
    return json.dumps(data) if data else ""


def config_to_form(config: TrainConfig) -> dict[str, Any]:
    """Form values for ``config`` (every field but the options overwrite/preview)."""
    first = config.prompts[0] if config.prompts else DEFAULT_PROMPT
    before_dir, after_dir = _pair_folders(config.pairs)
    more = [dataclasses.asdict(p) for p in config.prompts[1:]]
    return {
        "name": config.name, "mode": MODE_LABELS.get(config.mode, config.mode),
        "target": first.target, "positive": first.positive, "negative": first.negative,
        "neutral": first.neutral or "", "preservation": "\n".join(first.preservation), "action": first.action,
        "guidance": first.guidance, "more_prompts": json.dumps(more, indent=1, ensure_ascii=False) if more else "",
        "before_dir": before_dir, "after_dir": after_dir, "image_prompt": config.image_prompt,
        "scales": scales_text(config.scales), "rank": config.rank, "alpha": config.alpha, "preset": config.preset,
        "iterations": config.iterations, "lr": config.lr, "resolution": config.resolution,
        "batch_size": config.batch_size, "seed": config.seed, "precision": config.precision,
        "gradient_checkpointing": config.gradient_checkpointing, "alpha_low": config.alpha_range[0],
        "alpha_high": config.alpha_range[1], "default_start": config.default_start,
        "estimate_start": config.estimate_start, "train_from_start": config.train_from_start,
        "train_among": list(config.train_among),
        "advanced": _advanced_text(config),
    }


def form_notes(config: TrainConfig) -> list[str]:
    """What the form shows differently from ``config`` (said after an import)."""
    notes = []
    if len(config.prompts) > 1:
        notes.append(f"{len(config.prompts)} prompts: the first is on the form, the others under “More prompts”")
    if config.mode == "image" and config.pairs:
        before_dir, after_dir = _pair_folders(config.pairs)
        if not before_dir:
            notes.append("the image pairs come from several folders; put them into one before and one after "
                         "folder (same file names) and enter those")
        elif any(_stem(p.before) != _stem(p.after) for p in config.pairs):
            notes.append("some image pairs have different file names; rename them so before and after match")
        else:
            count = len(config.pairs)
            notes.append(f"{count} image pair{'s' if count != 1 else ''}: every matching image in the two folders "
                         "is used")
    if config.mode == "text" and config.pairs:
        notes.append("image pairs in a text slider's config are not used")
    return notes


def import_preset(path: str) -> tuple[dict[str, Any], list[str]]:
    """(form values, notes) for a config file: our JSON, an official prompts.yaml or an ai-toolkit job."""
    from ..training.importers.config_file import import_file

    config, notes = import_file(path)
    return config_to_form(config), [*notes, *form_notes(config)]
