"""ai-toolkit slider jobs: ``config.process[]`` with a ``slider`` section, either the classic ``targets`` or the
newer ``concept_slider`` extension's ``positive_prompt``/``negative_prompt``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..config import TextPrompt, TrainConfig
from ..config_values import ConfigError
from ..slider_names import sanitize_name
from .foreign_values import (
    EntryNotes,
    read_flag,
    read_integer,
    read_number,
    read_precision,
    read_section,
    read_text,
    to_int,
)

_MULTIPLIER_FLAG = re.compile(r"--m\s+(-?\d+(?:\.\d+)?)")


def from_ai_toolkit(config: Mapping, *, name: str | None = None) -> tuple[TrainConfig, list[str]]:
    """Import an ai-toolkit slider job (``config.process[]`` with a ``slider`` section: classic
    ``targets``, or the ``concept_slider`` extension's ``positive_prompt``/``negative_prompt``)."""
    if not isinstance(config, Mapping):
        raise ConfigError("config", "expected an ai-toolkit job (a mapping with config.process)")
    job = read_section(config, "config", "")
    processes = job.get("process")
    if not isinstance(processes, list):
        raise ConfigError("config.process", "expected a list of processes")
    found = [(i, p) for i, p in enumerate(processes) if isinstance(p, Mapping) and isinstance(p.get("slider"), Mapping)]
    if not found:
        raise ConfigError("config.process", "no slider process (one with a 'slider' section)")
    index, process = found[0]
    path = f"config.process[{index}]"
    notes: list[str] = []
    if len(processes) > 1:
        notes.append(f"only {path} (the first slider process) was imported")
    if name is None:
        name = sanitize_name(read_text(job, "name", "config") or "", fallback="slider")

    network = read_section(process, "network", path)
    rank = read_integer(network, "rank", f"{path}.network") or read_integer(network, "linear", f"{path}.network", 4)
    alpha = read_number(network, "linear_alpha", f"{path}.network")
    alpha = alpha if alpha is not None else read_number(network, "alpha", f"{path}.network", 1.0)
    if network.get("conv"):
        notes.append("ai-toolkit trains every linear layer of the transformer blocks plus the resnet convs; "
                     "the nearest preset is 'full' (attention and convs; no feed-forward or projections)")
    else:
        notes.append("ai-toolkit trains every linear layer of the transformer blocks; the nearest preset is "
                     "'full' (self- and cross-attention, plus resnet convs; no feed-forward or projections)")

    train = read_section(process, "train", path)
    tpath = f"{path}.train"
    lr = read_number(train, "lr", tpath)
    if lr is None:
        lr = 1e-6
        notes.append("train.lr not set: used ai-toolkit's default 1e-6, which barely trains; consider 2e-4")
    settings: dict[str, Any] = {
        "rank": rank, "alpha": alpha, "preset": "full", "lr": lr,
        "iterations": read_integer(train, "steps", tpath, 1000),
        "max_denoising_steps": read_integer(train, "max_denoising_steps", tpath, 50),
        "batch_size": read_integer(train, "batch_size", tpath, 1),
        "precision": read_precision(read_text(train, "dtype", tpath), "train.dtype", notes),
        "bidirectional": True,  # ai-toolkit always trains both directions (multiplier ±1)
    }
    if "gradient_checkpointing" in train:
        settings["gradient_checkpointing"] = read_flag(train, "gradient_checkpointing", tpath)
    _ai_toolkit_train_notes(train, tpath, notes)
    alpha_range = _sample_range(read_section(process, "sample", path))
    if alpha_range:
        settings["alpha_range"] = alpha_range
    model = read_text(read_section(process, "model", path), "name_or_path", f"{path}.model")
    if model:
        notes.append(f"model {model!r} is not used: sliders train on the model loaded in the webui")

    slider = read_section(process, "slider", path)
    spath = f"{path}.slider"
    if "targets" in slider or "positive_prompt" not in slider:
        prompts, resolution = _ai_toolkit_targets(slider, spath, notes)
    else:
        prompts, resolution = _concept_slider(process, slider, spath, notes)
    return TrainConfig(name=name, mode="text", prompts=prompts, resolution=resolution, **settings), notes


def _ai_toolkit_train_notes(train: Mapping, path: str, notes: list[str]) -> None:
    optimizer = read_text(train, "optimizer", path, "adamw")
    if optimizer.lower() != "adamw":
        notes.append(f"train.optimizer {optimizer!r} is not supported; training with AdamW")
    scheduler = read_text(train, "lr_scheduler", path, "constant")
    if scheduler.lower() != "constant":
        notes.append(f"train.lr_scheduler {scheduler!r} is not supported; the learning rate is constant")
    if (read_number(train, "min_snr_gamma", path) or 0) > 0:
        notes.append("train.min_snr_gamma is not supported; the loss is not SNR-weighted")
    if (read_number(train, "noise_offset", path) or 0) != 0:
        notes.append("train.noise_offset is not supported")
    if read_flag(train, "train_text_encoder", path):
        notes.append("train.train_text_encoder is ignored: sliders only train the UNet")


def _sample_range(sample: Mapping) -> tuple[float, float] | None:
    """The α range of ai-toolkit's sample prompts (``... --m -5``), as the recommended range."""
    prompts = sample.get("prompts")
    if not isinstance(prompts, list):
        return None
    values = [float(m) for p in prompts if isinstance(p, str) for m in _MULTIPLIER_FLAG.findall(p)]
    if len(values) < 2 or min(values) >= max(values):
        return None
    return (min(values), max(values))


def _first_resolution(value: Any, path: str, notes: list[str]) -> int:
    """ai-toolkit resolutions are ``[[w, h], ...]`` (datasets: ``[512, 768]`` = several square sizes);
    we train square at one size."""
    if value is None:
        return 512
    items = value if isinstance(value, list) else [value]
    if not items:
        return 512
    if len(items) > 1:
        notes.append(f"{path} lists {len(items)} resolutions; training at the first only")
    first = items[0]
    if isinstance(first, list) and len(first) == 2:
        width, height = to_int(first[0], f"{path}[0][0]"), to_int(first[1], f"{path}[0][1]")
        if width != height:
            notes.append(f"{path}[0] is {width}×{height}; training square at {max(width, height)}")
        return max(width, height)
    return to_int(first, f"{path}[0]")


def _ai_toolkit_targets(slider: Mapping, path: str, notes: list[str]) -> tuple[list[TextPrompt], int]:
    targets = slider.get("targets")
    if not isinstance(targets, list) or not targets:
        raise ConfigError(f"{path}.targets", "expected a non-empty list of targets")
    entry_notes = EntryNotes()
    prompts = []
    for i, target in enumerate(targets):
        tpath = f"{path}.targets[{i}]"
        if not isinstance(target, Mapping):
            raise ConfigError(tpath, "expected a mapping with target_class, positive, negative")
        if read_flag(target, "shuffle", tpath):
            entry_notes.add(i, "shuffle is not supported; the prompts are used as written")
        multiplier = read_number(target, "multiplier", tpath, 1.0)
        if multiplier != 1.0:
            entry_notes.add(i, f"multiplier {multiplier:g} is not supported; sliders train at ±1")
        prompts.append(TextPrompt(
            target=read_text(target, "target_class", tpath, ""), positive=read_text(target, "positive", tpath, ""),
            negative=read_text(target, "negative", tpath, ""), action="enhance",
            guidance=1.0,  # ai-toolkit's slider process hard-codes guidance 1 in its loss
            weight=read_number(target, "weight", tpath, 1.0),
        ))
    notes.append("ai-toolkit trains sliders with a fixed guidance (η) of 1; kept, raise it for a stronger effect "
                 "(the official trainer uses 4)")
    if any(p.target for p in prompts):
        notes.append("ai-toolkit anchors the target class to the empty prompt; imported with neutral = target "
                     "(the Concept Sliders formulation)")
    notes += entry_notes.lines(len(prompts), name="targets")
    anchors = slider.get("anchors")
    if isinstance(anchors, list) and anchors:
        notes.append(f"{len(anchors)} anchor(s) are not supported and were dropped")
    if slider.get("prompt_file"):
        notes.append("slider.prompt_file (extra neutral prompts) is not supported")
    return prompts, _first_resolution(slider.get("resolutions"), f"{path}.resolutions", notes)


def _concept_slider(process: Mapping, slider: Mapping, path: str, notes: list[str]) -> tuple[list[TextPrompt], int]:
    """ai-toolkit's ``concept_slider`` extension: one target, guidance ``guidance_strength`` (default 3),
    neutral = target class, trained on noisy latents of a dataset's images."""
    prompt = TextPrompt(
        target=read_text(slider, "target_class", path, ""), positive=read_text(slider, "positive_prompt", path, ""),
        negative=read_text(slider, "negative_prompt", path, ""), action="enhance",
        guidance=read_number(slider, "guidance_strength", path, 3.0),
    )
    if slider.get("anchor_class"):
        notes.append("slider.anchor_class is not supported and was dropped")
    resolution = 512
    datasets = process.get("datasets")
    if isinstance(datasets, list) and datasets:
        notes.append("the datasets are not used: training latents come from partial denoising of the prompts, "
                     "not from dataset images")
        if isinstance(datasets[0], Mapping):
            resolution = _first_resolution(datasets[0].get("resolution"), "datasets[0].resolution", notes)
    return [prompt], resolution
