"""Import other trainers' slider configs into a ``TrainConfig``.

Sources: the official Concept Sliders ``prompts.yaml`` (+ optional ``config.yaml``; LECO uses the same
format), ai-toolkit slider jobs (``type: slider`` and the newer ``concept_slider`` extension), and this
extension's own JSON (``TrainConfig.to_dict``). Each importer takes already-parsed data and returns
``(config, notes)``: the notes say, one line each, what could not be carried over or was changed on
purpose. Importers raise for data they cannot read (wrong structure or type, naming the key path) but
do not ``validate()`` the result: the UI shows it for editing, and validation runs before training.

Missing keys take the *source trainer's* default where that changes the slider (the official entry
default ``action: erase``, ``guidance_scale: 1``; ai-toolkit's fixed guidance 1), each with a note;
precision and gradient checkpointing are hardware choices and only follow explicit settings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ..errors import SliderError
from ..prompt.presets import DEFAULT_PRESET
from .config import ConfigError, TextPrompt, TrainConfig, sanitize_name

_PRECISIONS = {
    "bf16": "bf16", "bfloat16": "bf16",
    "fp16": "fp16", "float16": "fp16", "half": "fp16",
    "fp32": "fp32", "float32": "fp32", "float": "fp32", "full": "fp32",
}
_OFFICIAL_METHODS = ("noxattn", "innoxattn", "selfattn", "xattn", "xattn-strict", "full")
_OFFICIAL_PROMPT_KEYS = {
    "target", "positive", "unconditional", "neutral", "action", "guidance_scale", "guidance", "resolution",
    "dynamic_resolution", "batch_size", "dynamic_crops", "weight", "multiplier", "rank",
}


# --- reading foreign values -------------------------------------------------------------------------


def _section(data: Mapping, key: str, path: str) -> Mapping:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(_join(path, key), "expected a mapping")
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _text(data: Mapping, key: str, path: str, default: str | None = None) -> str | None:
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


def _to_int(value: Any, path: str) -> int:
    number = _to_number(value, path)
    if not number.is_integer():
        raise ConfigError(path, "expected an integer")
    return int(number)


def _number(data: Mapping, key: str, path: str, default: float | None = None) -> float | None:
    value = data.get(key)
    return default if value is None else _to_number(value, _join(path, key))


def _integer(data: Mapping, key: str, path: str, default: int | None = None) -> int | None:
    value = data.get(key)
    return default if value is None else _to_int(value, _join(path, key))


def _flag(data: Mapping, key: str, path: str, default: bool = False) -> bool:
    value = data.get(key)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    raise ConfigError(_join(path, key), "expected true or false")


def _precision(value: str | None, where: str, notes: list[str]) -> str:
    if value is None:
        return "auto"
    precision = _PRECISIONS.get(value.lower())
    if precision is None:
        notes.append(f"{where} {value!r} is not a known precision; using auto")
        return "auto"
    return precision


class _EntryNotes:
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


# --- the official Concept Sliders / LECO format -----------------------------------------------------


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
    entry_notes = _EntryNotes()
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


def _official_entry(entry: Any, i: int, preservation: list[str], notes: _EntryNotes) -> tuple[TextPrompt, int, int]:
    """One official prompt entry → (TextPrompt, resolution, batch_size), with the official defaults:
    positive = target, unconditional = "", neutral = unconditional, action erase, guidance_scale 1."""
    path = f"prompts[{i}]"
    if not isinstance(entry, Mapping):
        raise ConfigError(path, "expected a mapping with target, positive, unconditional, neutral, ...")
    if entry.get("target") is None:
        raise ConfigError(f"{path}.target", "required")
    target = _text(entry, "target", path)
    positive = _text(entry, "positive", path, target)
    negative = _text(entry, "unconditional", path, "")
    neutral = _text(entry, "neutral", path, negative)
    if neutral == "" and target:
        notes.add(i, "an empty neutral prompt can't be set here; the neutral is the target")

    action = _text(entry, "action", path)
    if action is None:
        action = "erase"
        notes.add(i, "no action given; used the official default 'erase'")
    guidance = _number(entry, "guidance_scale", path)
    gpt_guidance = _number(entry, "guidance", path)  # written by the official GPT helper
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

    if _flag(entry, "dynamic_resolution", path):
        notes.add(i, "dynamic_resolution is not supported; training at a fixed resolution")
    if _flag(entry, "dynamic_crops", path):
        notes.add(i, "dynamic_crops (SDXL) is not supported")
    multiplier = _number(entry, "multiplier", path, 1.0)
    if multiplier != 1.0:
        notes.add(i, f"multiplier {multiplier:g} is not supported; text sliders train at ±1")
    unknown = sorted(str(k) for k in entry if k not in _OFFICIAL_PROMPT_KEYS)
    if unknown:  # `rank` (the GPT helper writes it) is known and silently ignored
        notes.add(i, f"ignored unknown key(s) {', '.join(unknown)}")

    prompt = TextPrompt(
        target=target, positive=positive, negative=negative, neutral=None if neutral == target else neutral,
        preservation=list(preservation), action=action, guidance=guidance,
        weight=_number(entry, "weight", path, 1.0),
    )
    return prompt, _integer(entry, "resolution", path, 512), _integer(entry, "batch_size", path, 1)


def _official_settings(config: Mapping, notes: list[str]) -> dict[str, Any]:
    """TrainConfig fields from an official ``config.yaml``; absent keys take the official class defaults
    (``type: lierla``, ``training_method: full``, 500 iterations, lr 1e-4), noted when they differ from ours."""
    if not isinstance(config, Mapping):
        raise ConfigError("config", "expected a mapping (network, train, ...)")
    network, train = _section(config, "network", ""), _section(config, "train", "")
    defaulted = [key for section, key in (("network", "type"), ("network", "training_method"),
                                          ("train", "iterations"), ("train", "lr"))
                 if _section(config, section, "").get(key) is None]
    if defaulted:
        notes.append(f"config.yaml does not set {', '.join(defaulted)}; used the official defaults "
                     "(type lierla, training_method full, iterations 500, lr 1e-4)")
    rank = _integer(network, "rank", "network", 4)
    alpha = _number(network, "alpha", "network", 1.0)
    if alpha == 0:
        alpha = float(rank)  # the official LoRA treats alpha 0 as alpha = rank
        notes.append(f"network.alpha 0 means alpha = rank in the official trainer; using {rank}")
    preset = _official_preset(_text(network, "type", "network", "lierla"),
                              _text(network, "training_method", "network", "full"), notes)
    settings = {
        "rank": rank, "alpha": alpha, "preset": preset,
        "iterations": _integer(train, "iterations", "train", 500),
        "lr": _number(train, "lr", "train", 1e-4),
        "max_denoising_steps": _integer(train, "max_denoising_steps", "train", 50),
        "precision": _precision(_text(train, "precision", "train"), "train.precision", notes),
    }
    optimizer = _text(train, "optimizer", "train", "adamw")
    if optimizer.lower() != "adamw":
        notes.append(f"train.optimizer {optimizer!r} is not supported; training with AdamW")
    scheduler = _text(train, "lr_scheduler", "train", "constant")
    if scheduler.lower() != "constant":
        notes.append(f"train.lr_scheduler {scheduler!r} is not supported; the learning rate is constant")
    noise_scheduler = _text(train, "noise_scheduler", "train", "ddim")
    if noise_scheduler.lower() != "ddim":
        notes.append(f"train.noise_scheduler {noise_scheduler!r} is not supported; training latents use DDIM")
    model = _text(_section(config, "pretrained_model", ""), "name_or_path", "pretrained_model")
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


# --- ai-toolkit -------------------------------------------------------------------------------------

_MULTIPLIER_FLAG = re.compile(r"--m\s+(-?\d+(?:\.\d+)?)")


def from_ai_toolkit(config: Mapping, *, name: str | None = None) -> tuple[TrainConfig, list[str]]:
    """Import an ai-toolkit slider job (``config.process[]`` with a ``slider`` section: classic
    ``targets``, or the ``concept_slider`` extension's ``positive_prompt``/``negative_prompt``)."""
    if not isinstance(config, Mapping):
        raise ConfigError("config", "expected an ai-toolkit job (a mapping with config.process)")
    job = _section(config, "config", "")
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
        name = sanitize_name(_text(job, "name", "config") or "", fallback="slider")

    network = _section(process, "network", path)
    rank = _integer(network, "rank", f"{path}.network") or _integer(network, "linear", f"{path}.network", 4)
    alpha = _number(network, "linear_alpha", f"{path}.network")
    alpha = alpha if alpha is not None else _number(network, "alpha", f"{path}.network", 1.0)
    if network.get("conv"):
        notes.append("ai-toolkit trains every linear layer of the transformer blocks plus the resnet convs; "
                     "the nearest preset is 'full' (attention and convs; no feed-forward or projections)")
    else:
        notes.append("ai-toolkit trains every linear layer of the transformer blocks; the nearest preset is "
                     "'full' (self- and cross-attention, plus resnet convs; no feed-forward or projections)")

    train = _section(process, "train", path)
    tpath = f"{path}.train"
    lr = _number(train, "lr", tpath)
    if lr is None:
        lr = 1e-6
        notes.append("train.lr not set: used ai-toolkit's default 1e-6, which barely trains; consider 2e-4")
    settings: dict[str, Any] = {
        "rank": rank, "alpha": alpha, "preset": "full", "lr": lr,
        "iterations": _integer(train, "steps", tpath, 1000),
        "max_denoising_steps": _integer(train, "max_denoising_steps", tpath, 50),
        "batch_size": _integer(train, "batch_size", tpath, 1),
        "precision": _precision(_text(train, "dtype", tpath), "train.dtype", notes),
        "bidirectional": True,  # ai-toolkit always trains both directions (multiplier ±1)
    }
    if "gradient_checkpointing" in train:
        settings["gradient_checkpointing"] = _flag(train, "gradient_checkpointing", tpath)
    _ai_toolkit_train_notes(train, tpath, notes)
    alpha_range = _sample_range(_section(process, "sample", path))
    if alpha_range:
        settings["alpha_range"] = alpha_range
    model = _text(_section(process, "model", path), "name_or_path", f"{path}.model")
    if model:
        notes.append(f"model {model!r} is not used: sliders train on the model loaded in the webui")

    slider = _section(process, "slider", path)
    spath = f"{path}.slider"
    if "targets" in slider or "positive_prompt" not in slider:
        prompts, resolution = _ai_toolkit_targets(slider, spath, notes)
    else:
        prompts, resolution = _concept_slider(process, slider, spath, notes)
    return TrainConfig(name=name, mode="text", prompts=prompts, resolution=resolution, **settings), notes


def _ai_toolkit_train_notes(train: Mapping, path: str, notes: list[str]) -> None:
    optimizer = _text(train, "optimizer", path, "adamw")
    if optimizer.lower() != "adamw":
        notes.append(f"train.optimizer {optimizer!r} is not supported; training with AdamW")
    scheduler = _text(train, "lr_scheduler", path, "constant")
    if scheduler.lower() != "constant":
        notes.append(f"train.lr_scheduler {scheduler!r} is not supported; the learning rate is constant")
    if (_number(train, "min_snr_gamma", path) or 0) > 0:
        notes.append("train.min_snr_gamma is not supported; the loss is not SNR-weighted")
    if (_number(train, "noise_offset", path) or 0) != 0:
        notes.append("train.noise_offset is not supported")
    if _flag(train, "train_text_encoder", path):
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
        width, height = _to_int(first[0], f"{path}[0][0]"), _to_int(first[1], f"{path}[0][1]")
        if width != height:
            notes.append(f"{path}[0] is {width}×{height}; training square at {max(width, height)}")
        return max(width, height)
    return _to_int(first, f"{path}[0]")


def _ai_toolkit_targets(slider: Mapping, path: str, notes: list[str]) -> tuple[list[TextPrompt], int]:
    targets = slider.get("targets")
    if not isinstance(targets, list) or not targets:
        raise ConfigError(f"{path}.targets", "expected a non-empty list of targets")
    entry_notes = _EntryNotes()
    prompts = []
    for i, target in enumerate(targets):
        tpath = f"{path}.targets[{i}]"
        if not isinstance(target, Mapping):
            raise ConfigError(tpath, "expected a mapping with target_class, positive, negative")
        if _flag(target, "shuffle", tpath):
            entry_notes.add(i, "shuffle is not supported; the prompts are used as written")
        multiplier = _number(target, "multiplier", tpath, 1.0)
        if multiplier != 1.0:
            entry_notes.add(i, f"multiplier {multiplier:g} is not supported; sliders train at ±1")
        prompts.append(TextPrompt(
            target=_text(target, "target_class", tpath, ""), positive=_text(target, "positive", tpath, ""),
            negative=_text(target, "negative", tpath, ""), action="enhance",
            guidance=1.0,  # ai-toolkit's slider process hard-codes guidance 1 in its loss
            weight=_number(target, "weight", tpath, 1.0),
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
        target=_text(slider, "target_class", path, ""), positive=_text(slider, "positive_prompt", path, ""),
        negative=_text(slider, "negative_prompt", path, ""), action="enhance",
        guidance=_number(slider, "guidance_strength", path, 3.0),
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


# --- files ------------------------------------------------------------------------------------------


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
