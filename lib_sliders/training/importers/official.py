"""The official Concept Sliders format (LECO uses the same): a ``prompts.yaml`` list of entries and an optional
``config.yaml``, imported with the official trainer's defaults where they change the slider, each with a note."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...prompt.presets import DEFAULT_PRESET
from ..config import TextPrompt, TrainConfig
from ..config_values import ConfigError
from .foreign_values import EntryNotes, read_flag, read_integer, read_number, read_precision, read_section, read_text

_OFFICIAL_METHODS = ("noxattn", "innoxattn", "selfattn", "xattn", "xattn-strict", "full")
_OFFICIAL_PROMPT_KEYS = {
    "target", "positive", "unconditional", "neutral", "action", "guidance_scale", "guidance", "resolution",
    "dynamic_resolution", "batch_size", "dynamic_crops", "weight", "multiplier", "rank",
}


def from_official(
    prompts: list[dict] | Mapping,
    config: Mapping | None = None,
    *,
    name: str,
    attributes: list[str] | str | None = None,
) -> tuple[TrainConfig, list[str]]:
    """Import an official ``prompts.yaml`` (a list of entries, or a mapping with ``prompts``) and an
    optional ``config.yaml``. ``attributes`` (the official ``--attributes 'male, female'``) become every
    prompt's preservation set instead of the official prefix duplication ("male male person")."""
    if isinstance(prompts, Mapping) and "prompts" in prompts:
        prompts = prompts["prompts"]
    if not isinstance(prompts, list) or not prompts:
        raise ConfigError("prompts", "expected a non-empty list of prompt entries (target, positive, unconditional, ...)")
    notes: list[str] = []
    preservation = _attribute_list(attributes)
    if preservation:
        notes.append(f"attributes {', '.join(preservation)} became each prompt's preservation set "
                     "(the paper's sum over P) instead of the official prefix duplication")
    entry_notes = EntryNotes()
    entries = [_official_entry(entry, i, preservation, entry_notes) for i, entry in enumerate(prompts)]
    notes += entry_notes.lines(len(entries))

    resolution, batch_size = entries[0][1], entries[0][2]
    if len({e[1] for e in entries}) > 1:
        notes.append(f"prompts use different resolutions ({', '.join(map(str, sorted({e[1] for e in entries})))}); "
                     f"training at {resolution} (the first)")
    if len({e[2] for e in entries}) > 1:
        notes.append(f"prompts use different batch sizes; using {batch_size} (the first)")
    settings: dict[str, Any] = {"resolution": resolution, "batch_size": batch_size}
    if config is not None:
        settings.update(_official_settings(config, notes))
    return TrainConfig(name=name, mode="text", prompts=[e[0] for e in entries], **settings), notes


def _attribute_list(attributes: list[str] | str | None) -> list[str]:
    if attributes is None:
        return []
    if isinstance(attributes, str):
        attributes = attributes.split(",")  # the official CLI form 'male, female'
    if not isinstance(attributes, (list, tuple)) or not all(isinstance(a, str) for a in attributes):
        raise ConfigError("attributes", "expected a list of strings")
    return [a.strip() for a in attributes if a.strip()]


def _official_entry(entry: Any, i: int, preservation: list[str], notes: EntryNotes) -> tuple[TextPrompt, int, int]:
    """One official prompt entry → (TextPrompt, resolution, batch_size), with the official defaults:
    positive = target, unconditional = "", neutral = unconditional, action erase, guidance_scale 1."""
    path = f"prompts[{i}]"
    if not isinstance(entry, Mapping):
        raise ConfigError(path, "expected a mapping with target, positive, unconditional, neutral, ...")
    if entry.get("target") is None:
        raise ConfigError(f"{path}.target", "required")
    target = read_text(entry, "target", path)
    positive = read_text(entry, "positive", path, target)
    negative = read_text(entry, "unconditional", path, "")
    neutral = read_text(entry, "neutral", path, negative)
    if neutral == "" and target:
        notes.add(i, "an empty neutral prompt can't be set here; the neutral is the target")

    action = read_text(entry, "action", path)
    if action is None:
        action = "erase"
        notes.add(i, "no action given; used the official default 'erase'")
    guidance = read_number(entry, "guidance_scale", path)
    gpt_guidance = read_number(entry, "guidance", path)  # written by the official GPT helper
    if guidance is None and gpt_guidance is not None:
        # The official trainer ignores this key and trains at η = 1 (sliders#88); we honour it.
        guidance = gpt_guidance
        notes.add(i, f"used 'guidance: {gpt_guidance:g}' as η (the official trainer ignores it and uses 1)")
    elif guidance is not None and gpt_guidance is not None and gpt_guidance != guidance:
        notes.add(i, f"both guidance_scale and guidance given; used guidance_scale {guidance:g}")
    elif guidance is None:
        guidance = 1.0
        notes.add(i, "no guidance_scale given; used the official default 1 (sliders usually use 4)")
    if guidance < 0 and action.lower() in ("enhance", "erase"):
        # enhance at -η is erase at η (the official age-disentangled file trains the other side this way)
        action = "erase" if action.lower() == "enhance" else "enhance"
        guidance = -guidance
        notes.add(i, f"negative guidance_scale became action {action!r} with η {guidance:g}")

    if read_flag(entry, "dynamic_resolution", path):
        notes.add(i, "dynamic_resolution is not supported; training at a fixed resolution")
    if read_flag(entry, "dynamic_crops", path):
        notes.add(i, "dynamic_crops (SDXL) is not supported")
    multiplier = read_number(entry, "multiplier", path, 1.0)
    if multiplier != 1.0:
        notes.add(i, f"multiplier {multiplier:g} is not supported; text sliders train at ±1")
    unknown = sorted(str(k) for k in entry if k not in _OFFICIAL_PROMPT_KEYS)
    if unknown:  # `rank` (the GPT helper writes it) is known and silently ignored
        notes.add(i, f"ignored unknown key(s) {', '.join(unknown)}")

    prompt = TextPrompt(
        target=target, positive=positive, negative=negative, neutral=None if neutral == target else neutral,
        preservation=list(preservation), action=action, guidance=guidance,
        weight=read_number(entry, "weight", path, 1.0),
    )
    return prompt, read_integer(entry, "resolution", path, 512), read_integer(entry, "batch_size", path, 1)


def _official_settings(config: Mapping, notes: list[str]) -> dict[str, Any]:
    """TrainConfig fields from an official ``config.yaml``; absent keys take the official class defaults
    (``type: lierla``, ``training_method: full``, 500 iterations, lr 1e-4), noted when they differ from ours."""
    if not isinstance(config, Mapping):
        raise ConfigError("config", "expected a mapping (network, train, ...)")
    network, train = read_section(config, "network", ""), read_section(config, "train", "")
    defaulted = [key for section, key in (("network", "type"), ("network", "training_method"),
                                          ("train", "iterations"), ("train", "lr"))
                 if read_section(config, section, "").get(key) is None]
    if defaulted:
        notes.append(f"config.yaml does not set {', '.join(defaulted)}; used the official defaults "
                     "(type lierla, training_method full, iterations 500, lr 1e-4)")
    rank = read_integer(network, "rank", "network", 4)
    alpha = read_number(network, "alpha", "network", 1.0)
    if alpha == 0:
        alpha = float(rank)  # the official LoRA treats alpha 0 as alpha = rank
        notes.append(f"network.alpha 0 means alpha = rank in the official trainer; using {rank}")
    preset = _official_preset(read_text(network, "type", "network", "lierla"),
                              read_text(network, "training_method", "network", "full"), notes)
    settings = {
        "rank": rank, "alpha": alpha, "preset": preset,
        "iterations": read_integer(train, "iterations", "train", 500),
        "lr": read_number(train, "lr", "train", 1e-4),
        "max_denoising_steps": read_integer(train, "max_denoising_steps", "train", 50),
        "precision": read_precision(read_text(train, "precision", "train"), "train.precision", notes),
    }
    optimizer = read_text(train, "optimizer", "train", "adamw")
    if optimizer.lower() != "adamw":
        notes.append(f"train.optimizer {optimizer!r} is not supported; training with AdamW")
    scheduler = read_text(train, "lr_scheduler", "train", "constant")
    if scheduler.lower() != "constant":
        notes.append(f"train.lr_scheduler {scheduler!r} is not supported; the learning rate is constant")
    noise_scheduler = read_text(train, "noise_scheduler", "train", "ddim")
    if noise_scheduler.lower() != "ddim":
        notes.append(f"train.noise_scheduler {noise_scheduler!r} is not supported; training latents use DDIM")
    model = read_text(read_section(config, "pretrained_model", ""), "name_or_path", "pretrained_model")
    if model:
        notes.append(f"pretrained_model {model!r} is not used: sliders train on the model loaded in the webui")
    return settings


def _official_preset(network_type: str, method: str, notes: list[str]) -> str:
    """Our layer preset for an official (network.type, training_method) pair. c3lier adds resnet and
    sampler convs to the attention layers lierla wraps; the method then filters by parent name."""
    network_type, method = network_type.lower(), method.lower()
    if method not in _OFFICIAL_METHODS:
        notes.append(f"training_method {method!r} is not supported; using {DEFAULT_PRESET}")
        return DEFAULT_PRESET
    if network_type not in ("lierla", "c3lier"):
        notes.append(f"network.type {network_type!r} is not known; treated as c3lier")
        network_type = "c3lier"
    if network_type == "c3lier" or method in ("selfattn", "xattn", "xattn-strict"):
        return method  # those three filters drop every conv, so the type doesn't matter
    if method in ("noxattn", "innoxattn"):
        return "selfattn"  # attention only, minus cross-attention
    notes.append("lierla + full trains self- and cross-attention only; no preset matches, so 'full' "
                 "(which also trains the resnet and sampler convs) is used")
    return "full"
