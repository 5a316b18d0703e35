"""The Train page's form as plain data: its fields, form values → a training request, a config → form values.

No gradio and no webui here: ``train_tab`` builds widgets from ``FORM_FIELDS`` (in that order) and hands
the widgets' values over as a dict keyed by field name. ``form_to_request`` turns them into the config dict
``TrainingJobs.create`` takes plus ``TrainOptions``, raising ``SubmitError`` with TrainConfig's field names
(``scales``, ``pairs``, ``prompts[0].positive`` …); ``config_to_form`` is its inverse for imported files and
JSON presets, ``form_to_json`` writes our own preset JSON (``import_file`` reads it back).

The form shows one text prompt. A config with several keeps the others in "More prompts" (JSON, our
``TextPrompt`` fields); TrainConfig fields without a widget live in "Other settings" (a JSON object).
"""

from __future__ import annotations

import dataclasses
import html
import json
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import SliderError
from ..prompt.presets import PRESETS
from ..prompt.prompt_tags import format_number
from ..training.config import ACTIONS, DEFAULT_LR, PRECISIONS, ImagePair, TextPrompt, TrainConfig, name_problem
from ..training.pairs import IMAGE_SUFFIXES, match_pairs
from .train_jobs import STATE_FOLDER, SubmitError, TrainJob, TrainOptions

MODE_LABELS = {"text": "Text slider", "image": "Image slider"}
_MODE_BY_LABEL = {label: mode for mode, label in MODE_LABELS.items()}
UPLOADS_FOLDER = "uploads"

# TrainConfig fields without a widget (set in "Other settings"), and the first prompt's sampling weight.
ADVANCED_KEYS = ("weight_decay", "bidirectional", "max_denoising_steps", "timesteps_per_trajectory",
                 "sampling_guidance", "checkpoint_every", "among_alphas")
PROMPT_WEIGHT_KEY = "weight"

_CONFIG = TrainConfig(name="")
_PROMPT = TextPrompt(target="", positive="", negative="")
_OPTIONS = TrainOptions()


@dataclass(frozen=True)
class FormField:
    name: str
    default: Any
    kind: str  # text | lines | json | radio | dropdown | sliders | number | int | checkbox
    label: str
    info: str = ""
    choices: tuple = ()


def _scales_text(scales: Iterable[float]) -> str:
    return ", ".join(format_number(s) for s in scales)


FORM_FIELDS: list[FormField] = [
    FormField("name", _CONFIG.name, "text", "Slider name",
              "File name of the slider (letters, digits, spaces, - _ . ( ))"),
    FormField("mode", MODE_LABELS[_CONFIG.mode], "radio", "Kind of slider",
              "Text: learned from prompts. Image: learned from before/after image pairs", tuple(MODE_LABELS.values())),
    # --- text slider
    FormField("target", _PROMPT.target, "text", "Target",
              "What the slider acts on, e.g. \"person\" (empty = every image)"),
    FormField("positive", _PROMPT.positive, "text", "Positive prompt",
              "The + end of the slider, e.g. \"person, very old\""),
    FormField("negative", _PROMPT.negative, "text", "Negative prompt",
              "The − end, e.g. \"person, very young\" (empty = the empty prompt)"),
    FormField("neutral", "", "text", "Neutral prompt", "The unchanged base prompt; empty = same as the target"),
    FormField("preservation", "\n".join(_PROMPT.preservation), "lines", "Preserve",
              "Concepts kept apart, one per line (e.g. male / female), so the slider doesn't change them"),
    FormField("action", _PROMPT.action, "radio", "Action",
              "enhance: + adds the positive concept; erase: reverses the direction", ACTIONS),
    FormField("guidance", _PROMPT.guidance, "number", "Guidance",
              "How strongly the target is pushed toward positive/negative (η; official default 4)"),
    FormField("more_prompts", "", "json", "More prompts",
              "Further prompt entries as a JSON list of {target, positive, negative, neutral, preservation, "
              "action, guidance, weight}; filled by imports with several prompts"),
    # --- image slider
    FormField("before_dir", "", "text", "Before images folder",
              "The low/− images; paired with the after folder by file name (03.png ↔ 03.jpg). More pairs make a "
              "cleaner slider: with few, it learns the scenes as well as the change"),
    FormField("after_dir", "", "text", "After images folder", "The high/+ images, same file names as before"),
    FormField("image_prompt", _CONFIG.image_prompt, "text", "Image prompt",
              "Prompt used while training on the pairs (official: empty)"),
    FormField("scales", _scales_text(_CONFIG.scales), "text", "Scales",
              "The α the after images stand for (the before images: −α). Smaller = stronger per unit α"),
    # --- settings
    FormField("rank", _CONFIG.rank, "int", "Rank", "LoRA rank: 4 is plenty for most sliders; higher = bigger file"),
    FormField("alpha", _CONFIG.alpha, "number", "Network alpha", "LoRA alpha (scale = alpha / rank); 1 as official"),
    FormField("preset", _CONFIG.preset, "dropdown", "Layers",
              "Which UNet layers learn: noxattn (official default) leaves cross-attention alone", PRESETS),
    FormField("iterations", _CONFIG.iterations, "int", "Iterations", "Training steps; 500–1000 is typical"),
    FormField("lr", _CONFIG.lr, "number", "Learning rate",
              f"Empty or 0 = the default ({format_number(DEFAULT_LR['text'])} text, "
              f"{format_number(DEFAULT_LR['image'])} image)"),
    FormField("resolution", _CONFIG.resolution, "int", "Resolution",
              "Training size in pixels (multiple of 64): 512 for SD 1.x, 1024 for SDXL"),
    FormField("batch_size", _CONFIG.batch_size, "int", "Batch size", "Images per step; more needs more memory"),
    FormField("seed", _CONFIG.seed, "int", "Seed", "Same seed and settings = same slider"),
    FormField("precision", _CONFIG.precision, "dropdown", "Precision",
              "auto follows the model; fp32 is safest, bf16/fp16 use less memory", PRECISIONS),
    FormField("gradient_checkpointing", _CONFIG.gradient_checkpointing, "checkbox", "Gradient checkpointing",
              "Less memory, slower steps (try it on out-of-memory errors)"),
    FormField("alpha_low", _CONFIG.alpha_range[0], "number", "Recommended α from",
              "Saved in the file: the α range the UI offers for this slider"),
    FormField("alpha_high", _CONFIG.alpha_range[1], "number", "Recommended α to", "Upper end of that range"),
    FormField("default_start", _CONFIG.default_start, "number", "Recommended start",
              "Saved in the file: fraction of the steps before the slider acts (0–1; 0 = from the start)"),
    FormField("estimate_start", _CONFIG.estimate_start, "checkbox", "Estimate the start from the model",
              "Probe where the model decides the attribute (image sliders: where the trained slider acts) and save "
              "that start instead of the number beside (colour-like attributes start late, layout-like ones early)"),
    FormField("train_from_start", _CONFIG.train_from_start, "checkbox", "Train from the start",
              "Train only the steps the slider acts on, from the start it is saved with (the estimate, or the number "
              "beside), with it off before that as when used. Off: every step (a slider you may use from 0)"),
    FormField("train_among", (), "sliders", "Train among these sliders",
              "Sliders you will use together with this one: they are on at random strengths while it trains "
              "(α −3…3; among_alphas in Other settings), so that it keeps its effect among them. "
              "Empty = trained alone"),
    FormField("advanced", "", "json", "Other settings",
              "JSON object for the rest, e.g. {\"max_denoising_steps\": 50, \"sampling_guidance\": 3, "
              "\"checkpoint_every\": 100}; keys: " + ", ".join(ADVANCED_KEYS) + ", weight"),
    # --- options
    FormField("overwrite", _OPTIONS.overwrite, "checkbox", "Overwrite an existing slider",
              "Without it, a name that is taken is refused"),
    FormField("preview", _OPTIONS.preview, "checkbox", "Preview strip when done",
              "Generates five images from −α to +α and saves them as the slider's preview"),
]
FIELDS = {f.name: f for f in FORM_FIELDS}
FIELD_NAMES = [f.name for f in FORM_FIELDS]
TEXT_FIELDS = ("target", "positive", "negative", "neutral", "preservation", "action", "guidance", "more_prompts")
IMAGE_FIELDS = ("before_dir", "after_dir", "image_prompt", "scales")
OPTION_FIELDS = ("overwrite", "preview")


def defaults() -> dict[str, Any]:
    return {f.name: f.default for f in FORM_FIELDS}


def mode_of(value: Any) -> str:
    """"text"/"image" from the radio's label (or the mode itself); anything else is returned for validation."""
    text = str(value or "").strip()
    return _MODE_BY_LABEL.get(text, text.lower())


def mode_visibility(value: Any) -> tuple[bool, bool]:
    """(text group visible, image group visible)."""
    image = mode_of(value) == "image"
    return not image, image


# ---------------------------------------------------------------------------------------------- parsing


class _Errors(list):
    def add(self, field: str, problem: str) -> None:
        self.append((field, problem))


def _get(values: Mapping, name: str) -> Any:
    return values.get(name, FIELDS[name].default)


def _text(values: Mapping, name: str) -> str:
    value = _get(values, name)
    return "" if value is None else str(value).strip()


def _number(values: Mapping, name: str, field: str, errors: _Errors, *, integer=False, empty_ok=False):
    value = _get(values, name)
    if isinstance(value, str):
        value = value.strip()
        if value:
            try:
                value = float(value)
            except ValueError:
                errors.add(field, f"{value!r} is not a number")
                return None
    if value is None or value == "":
        if not empty_ok:
            errors.add(field, "must not be empty")
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        errors.add(field, "expected a number")
        return None
    if integer:
        if not float(value).is_integer():
            errors.add(field, "expected a whole number")
            return None
        return int(value)
    return float(value)


def _flag(values: Mapping, name: str) -> bool:
    return bool(_get(values, name))


def parse_scales(text: Any) -> list[float]:
    """"1, 2" → [1.0, 2.0] (commas, semicolons or spaces); SubmitError on ``scales`` for anything else."""
    if isinstance(text, (list, tuple)):
        text = ", ".join(str(v) for v in text)
    scales = []
    for part in re.split(r"[,;\s]+", str(text or "").strip()):
        if not part:
            continue
        try:
            scales.append(float(part))
        except ValueError:
            raise SubmitError([("scales", f"{part!r} is not a number; write scales like \"1, 2\"")]) from None
    return scales


def parse_preservation(text: Any) -> list[str]:
    """One concept per line; blank lines dropped."""
    if isinstance(text, (list, tuple)):
        return [str(t).strip() for t in text if str(t).strip()]
    return [line.strip() for line in str(text or "").splitlines() if line.strip()]


def parse_slider_names(value: Any) -> list[str]:
    """The multiselect's list, or names separated by commas (the API, a pasted list); blanks dropped."""
    items = value if isinstance(value, (list, tuple)) else str(value or "").split(",")
    return [str(item).strip() for item in items if str(item).strip()]


def _json_value(values: Mapping, name: str, field: str, expected: type, errors: _Errors):
    text = _text(values, name)
    if not text:
        return expected()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        errors.add(field, f"not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})")
        return expected()
    if not isinstance(value, expected):
        errors.add(field, f"expected a JSON {'list' if expected is list else 'object'}")
        return expected()
    return value


def _more_prompts(values: Mapping, errors: _Errors) -> list[dict]:
    entries = _json_value(values, "more_prompts", "prompts", list, errors)
    out = []
    for i, entry in enumerate(entries, start=1):
        if isinstance(entry, Mapping):  # an empty target or negative prompt may be left out
            entry = {"target": "", "negative": "", **entry}
        try:
            out.append(dataclasses.asdict(TextPrompt.from_dict(entry, path=f"prompts[{i}]")))
        except SliderError as err:
            errors.add(getattr(err, "field", f"prompts[{i}]"), getattr(err, "problem", str(err)))
    return out


def _advanced(values: Mapping, errors: _Errors) -> dict:
    data = _json_value(values, "advanced", "advanced", dict, errors)
    for key in data:
        if key not in ADVANCED_KEYS and key != PROMPT_WEIGHT_KEY:
            where = "is set on the form" if key in FIELDS or key in TrainConfig.__dataclass_fields__ else "is unknown"
            errors.add("advanced", f"{key!r} {where}; allowed here: {', '.join((*ADVANCED_KEYS, PROMPT_WEIGHT_KEY))}")
    return {k: v for k, v in data.items() if k in ADVANCED_KEYS or k == PROMPT_WEIGHT_KEY}


def _first_prompt(values: Mapping, weight: Any, errors: _Errors) -> dict:
    prompt = {
        "target": _text(values, "target"), "positive": _text(values, "positive"),
        "negative": _text(values, "negative"), "neutral": _text(values, "neutral") or None,
        "preservation": parse_preservation(_get(values, "preservation")),
        "action": _text(values, "action").lower() or _PROMPT.action,
        "guidance": _number(values, "guidance", "prompts[0].guidance", errors),
        "weight": _PROMPT.weight if weight is None else weight,
    }
    if prompt["guidance"] is None:
        prompt["guidance"] = _PROMPT.guidance
    return prompt


def _folder_pairs(values: Mapping, errors: _Errors) -> list[ImagePair]:
    before, after = _text(values, "before_dir"), _text(values, "after_dir")
    if not before and not after:
        return []
    if not before or not after:
        errors.add("pairs", "give both the before and the after images folder")
        return []
    try:
        return match_pairs(os.path.expanduser(before), os.path.expanduser(after))
    except SliderError as err:
        errors.add("pairs", str(err))
        return []


def _pair_dicts(pairs: Iterable) -> list[dict]:
    """JSON pairs, each pair once (a folder that is also the uploads' folder gives them twice)."""
    out = []
    for pair in pairs or ():
        if isinstance(pair, ImagePair):
            out.append({"before": pair.before, "after": pair.after})
        elif isinstance(pair, Mapping):
            out.append({"before": pair.get("before", ""), "after": pair.get("after", "")})
        else:
            before, after = pair
            out.append({"before": str(before), "after": str(after)})
    seen: set[tuple[str, str]] = set()
    unique = []
    for pair in out:
        key = (os.path.normpath(pair["before"]), os.path.normpath(pair["after"]))
        if key not in seen:
            seen.add(key)
            unique.append(pair)
    return unique


def _options(values: Mapping, resume: bool) -> TrainOptions:
    return TrainOptions(overwrite=_flag(values, "overwrite"), resume=resume, preview=_flag(values, "preview"))


def _parse(values: Mapping, uploaded_pairs, errors: _Errors) -> dict[str, Any]:
    mode = mode_of(_get(values, "mode"))
    advanced = _advanced(values, errors)
    weight = advanced.pop(PROMPT_WEIGHT_KEY, None)
    config: dict[str, Any] = {"name": _text(values, "name"), "mode": mode, "prompts": [], "pairs": []}
    if mode == "text":
        config["prompts"] = [_first_prompt(values, weight, errors), *_more_prompts(values, errors)]
    try:
        scales = parse_scales(_get(values, "scales"))
    except SubmitError as err:
        scales = list(_CONFIG.scales)
        if mode == "image":  # the image fields are hidden for a text slider: keep the default quietly
            errors.extend(err.errors)
    if mode == "image":
        config["pairs"] = _pair_dicts([*_folder_pairs(values, errors), *(uploaded_pairs or [])])
    config["image_prompt"] = _text(values, "image_prompt")
    config["scales"] = scales
    for name, integer in (("rank", True), ("alpha", False), ("iterations", True), ("resolution", True),
                          ("batch_size", True), ("seed", True), ("default_start", False)):
        number = _number(values, name, name, errors, integer=integer)
        config[name] = getattr(_CONFIG, name) if number is None else number
    config["preset"] = _text(values, "preset") or _CONFIG.preset
    lr = _number(values, "lr", "lr", errors, empty_ok=True)
    config["lr"] = lr or None  # 0 and empty: the mode's default
    config["precision"] = _text(values, "precision") or _CONFIG.precision
    config["gradient_checkpointing"] = _flag(values, "gradient_checkpointing")
    config["estimate_start"] = _flag(values, "estimate_start")
    config["train_from_start"] = _flag(values, "train_from_start")
    config["train_among"] = parse_slider_names(_get(values, "train_among"))
    low = _number(values, "alpha_low", "alpha_range", errors)
    high = _number(values, "alpha_high", "alpha_range", errors)
    config["alpha_range"] = [_CONFIG.alpha_range[0] if low is None else low,
                             _CONFIG.alpha_range[1] if high is None else high]
    config.update(advanced)
    return config


def _covered(field: str, fields: set[str]) -> bool:
    return any(field == f or field.startswith((f + "[", f + ".")) for f in fields)


def _config_errors(config: dict, skip: set[str]) -> list[tuple[str, str]]:
    try:
        built = TrainConfig.from_dict(config)
    except SliderError as err:
        field = getattr(err, "field", "config")
        return [] if _covered(field, skip) else [(field, getattr(err, "problem", str(err)))]
    return [(e.field, e.problem) for e in built.validation_errors() if not _covered(e.field, skip)]


def form_to_request(values: Mapping, uploaded_pairs=None, *, resume: bool = False) -> tuple[dict, TrainOptions]:
    """(config dict for ``TrainingJobs.create``, options). Every problem (the form's own and the config's
    validation) raises one SubmitError listing each under TrainConfig's field name; ``create`` then only adds
    what depends on files and jobs (a taken name, nothing to resume)."""
    errors = _Errors()
    config = _parse(values, uploaded_pairs, errors)
    errors.extend(_config_errors(config, {f for f, _ in errors}))
    if errors:
        raise SubmitError(list(errors))
    return config, _options(values, resume)


def form_to_json(values: Mapping, uploaded_pairs=None) -> str:
    """Our own TrainConfig JSON (a preset), as ``import_file`` reads it; the form's parse errors raise."""
    errors = _Errors()
    config = _parse(values, uploaded_pairs, errors)
    if errors:
        raise SubmitError(list(errors))
    try:
        built = TrainConfig.from_dict(config)
    except SliderError as err:
        raise SubmitError([(getattr(err, "field", "config"), getattr(err, "problem", str(err)))]) from None
    return json.dumps(built.to_dict(), indent=2, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------------------------------------- config → form


def _pair_folders(pairs: list[ImagePair]) -> tuple[str, str]:
    befores = {os.path.dirname(p.before) for p in pairs}
    afters = {os.path.dirname(p.after) for p in pairs}
    if len(befores) == 1 and len(afters) == 1:
        return befores.pop(), afters.pop()
    return "", ""


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0].lower()


def _advanced_text(config: TrainConfig) -> str:
    data = {k: getattr(config, k) for k in ADVANCED_KEYS if getattr(config, k) != getattr(_CONFIG, k)}
    if config.prompts and config.prompts[0].weight != _PROMPT.weight:
        data[PROMPT_WEIGHT_KEY] = config.prompts[0].weight
    return json.dumps(data) if data else ""


def config_to_form(config: TrainConfig) -> dict[str, Any]:
    """Form values for ``config`` (every field but the options overwrite/preview)."""
    first = config.prompts[0] if config.prompts else _PROMPT
    before_dir, after_dir = _pair_folders(config.pairs)
    more = [dataclasses.asdict(p) for p in config.prompts[1:]]
    return {
        "name": config.name, "mode": MODE_LABELS.get(config.mode, config.mode),
        "target": first.target, "positive": first.positive, "negative": first.negative,
        "neutral": first.neutral or "", "preservation": "\n".join(first.preservation), "action": first.action,
        "guidance": first.guidance, "more_prompts": json.dumps(more, indent=1, ensure_ascii=False) if more else "",
        "before_dir": before_dir, "after_dir": after_dir, "image_prompt": config.image_prompt,
        "scales": _scales_text(config.scales), "rank": config.rank, "alpha": config.alpha, "preset": config.preset,
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


# ---------------------------------------------------------------------------------------------- uploads


def uploads_folder(sliders_dir: str, name: str) -> str:
    return os.path.join(sliders_dir, STATE_FOLDER, UPLOADS_FOLDER, name)


def upload_path(item: Any) -> tuple[str, str]:
    """(path on disk, original file name) of a gradio upload (a tempfile wrapper), a dict or a path."""
    if isinstance(item, Mapping):
        path = item.get("name") or item.get("path") or ""
        return str(path), os.path.basename(str(item.get("orig_name") or path))
    if isinstance(item, (str, os.PathLike)):
        return str(item), os.path.basename(str(item))
    path = str(getattr(item, "name", ""))
    return path, os.path.basename(str(getattr(item, "orig_name", None) or path))


def _copy_uploads(files: list, folder: str, side: str) -> None:
    names: dict[str, str] = {}
    sources = []
    for item in files:
        path, original = upload_path(item)
        stem, suffix = os.path.splitext(original)
        if suffix.lower() not in IMAGE_SUFFIXES:
            raise SubmitError([("pairs", f"{side} upload {original!r} is not an image ({', '.join(IMAGE_SUFFIXES)})")])
        if stem.lower() in names:
            raise SubmitError([("pairs", f"two {side} uploads named {stem!r} ({names[stem.lower()]}, {original})")])
        names[stem.lower()] = original
        sources.append((path, original))
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder, exist_ok=True)
    for path, original in sources:
        shutil.copyfile(path, os.path.join(folder, original))


def stage_uploads(sliders_dir: str, name: str, before_files, after_files) -> list[ImagePair]:
    """Copy uploaded before/after images to ``<sliders dir>/.training/uploads/<name>/{before,after}/`` (each
    side replaced as a whole) and pair them by file stem. Nothing uploaded: no pairs, nothing touched."""
    before_files, after_files = list(before_files or []), list(after_files or [])
    if not before_files and not after_files:
        return []
    if not before_files or not after_files:
        missing = "before" if not before_files else "after"
        raise SubmitError([("pairs", f"upload the {missing} images too (pairs match by file name)")])
    name = str(name or "").strip()
    if problem := name_problem(name):
        raise SubmitError([("name", f"{problem} (uploads are kept in a folder of that name)")])
    root = uploads_folder(sliders_dir, name)
    try:
        _copy_uploads(before_files, os.path.join(root, "before"), "before")
        _copy_uploads(after_files, os.path.join(root, "after"), "after")
        return match_pairs(os.path.join(root, "before"), os.path.join(root, "after"))
    except OSError as err:
        raise SubmitError([("pairs", f"couldn't copy the uploads to {root}: {err}")]) from None
    except SliderError as err:
        if isinstance(err, SubmitError):
            raise
        raise SubmitError([("pairs", f"uploaded images: {err}")]) from None


# ---------------------------------------------------------------------------------------------- the tab's steps


def build_request(values: Mapping, sliders_dir: str, before_files=None, after_files=None, *,
                  resume: bool = False) -> tuple[dict, TrainOptions]:
    """``form_to_request`` after staging an image slider's uploads; all problems in one SubmitError."""
    errors: list[tuple[str, str]] = []
    uploaded: list[ImagePair] = []
    if mode_of(_get(values, "mode")) == "image":
        try:
            uploaded = stage_uploads(sliders_dir, _text(values, "name"), before_files, after_files)
        except SubmitError as err:
            errors.extend(err.errors)
    try:
        request = form_to_request(values, uploaded, resume=resume)
    except SubmitError as err:
        taken = {field for field, _ in errors}
        errors.extend(e for e in err.errors if not _covered(e[0], taken))
    if errors:
        raise SubmitError(errors)
    return request


def import_preset(path: str) -> tuple[dict[str, Any], list[str]]:
    """(form values, notes) for a config file: our JSON, an official prompts.yaml or an ai-toolkit job."""
    from ..training.importers import import_file

    config, notes = import_file(path)
    return config_to_form(config), [*notes, *form_notes(config)]


def preset_file_name(values: Mapping) -> str:
    name = _text(values, "name")
    return f"{name}.json" if name and name_problem(name) is None else "slider.json"


# ---------------------------------------------------------------------------------------------- messages

_LABELS = {**{f.name: f.label for f in FORM_FIELDS}, "alpha_range": "Recommended α range",
           "pairs": "Image pairs", "prompts": "More prompts", "resume": "Resume", "advanced": "Other settings"}


def field_label(field: str) -> str:
    """The form's label for a TrainConfig field path (``prompts[0].positive`` → "Positive prompt")."""
    match = re.fullmatch(r"prompts\[(\d+)\]\.(\w+)", field)
    if match:
        index, key = int(match.group(1)), match.group(2)
        if index == 0 and key in FIELDS:
            return FIELDS[key].label
        return f"More prompts, entry {index}" if index else "First prompt"
    base = re.split(r"[\[.]", field, maxsplit=1)[0]
    if base in ADVANCED_KEYS:
        return f"Other settings ({base})"
    return _LABELS.get(base, field)


def error_lines(errors: Iterable[tuple[str, str]]) -> list[str]:
    """"Label (field): problem" for each refusal."""
    lines = []
    for field, problem in errors:
        label = field_label(field)
        lines.append(f"{label} ({field}): {problem}" if label != field else f"{field}: {problem}")
    return lines


def errors_html(errors: Iterable[tuple[str, str]], title: str = "Training did not start:") -> str:
    errors = list(errors)
    items = "".join(f"<li>{html.escape(line)}</li>" for line in error_lines(errors))
    hint = ""
    if any(f == "name" and "exists" in p for f, p in errors):
        hint = "<p>Tick “Overwrite an existing slider” to replace it.</p>"
    return f"<div class='sliders-train-refused error'><p>{html.escape(title)}</p><ul>{items}</ul>{hint}</div>"


def name_hint_html(name: str, exists: bool) -> str:
    if not exists:
        return ""
    return (f"<p class='sliders-train-warning'>A slider named <b>{html.escape(name)}</b> exists: choose another "
            "name, or tick “Overwrite an existing slider” to replace it.</p>")


def notes_html(title: str, notes: Iterable[str]) -> str:
    notes = list(notes)
    if not notes:
        return f"<p>{html.escape(title)}</p>"
    items = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    return f"<div class='sliders-train-notes'><p>{html.escape(title)}</p><ul>{items}</ul></div>"


def _effect_html(job: TrainJob) -> str:
    effect = job.effect
    if not effect:
        return ""
    text = (f"Effect score: cosine {effect.get('cosine', 0.0):.2f}, gain {effect.get('gain', 0.0):.2f} per unit α "
            f"(α = −1: cosine {effect.get('cosine_negative', 0.0):.2f}, gain {effect.get('gain_negative', 0.0):.2f})")
    if job.does_nothing:
        return (f"<p class='sliders-train-warning' style='color: var(--color-accent, #e65100); font-weight: bold'>"
                f"⚠ This slider does nothing measurable. {html.escape(text)}<br>Try more iterations, a higher "
                f"learning rate, or prompts that differ more.</p>")
    return f"<p>{html.escape(text)}</p>"


def job_html(job: TrainJob) -> str:
    """The result area after a run: outcome, effect score (warning when it does nothing), file, messages, error."""
    name = html.escape(job.config.name)
    headline = {
        "done": f"Trained slider <b>{name}</b> ({job.iteration} iterations).",
        "cancelled": f"Cancelled <b>{name}</b> at iteration {job.iteration} of {job.total}.",
        "failed": f"Training <b>{name}</b> failed.",
    }.get(job.state, f"{name}: {html.escape(job.state)}")
    parts = [f"<p>{headline}</p>", _effect_html(job)]
    if job.output:
        parts.append(f"<p>Saved to <code>{html.escape(job.output)}</code></p>")
    if job.state == "cancelled" and job.iteration:
        parts.append("<p>Resume continues this run with the same settings.</p>")
    if job.messages:
        parts.append("<ul>" + "".join(f"<li>{html.escape(m)}</li>" for m in job.messages) + "</ul>")
    if job.error:
        parts.append(f"<p class='error'>{html.escape(job.error)}</p>")
    return "<div class='sliders-train-result'>" + "".join(p for p in parts if p) + "</div>"
