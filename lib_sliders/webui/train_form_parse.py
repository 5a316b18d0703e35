"""Form values → a training request: ``form_to_request`` turns them into the config dict ``TrainingJobs.create``
takes plus ``TrainOptions``, raising ``SubmitError`` with TrainConfig's field names (``scales``, ``pairs``,
``prompts[0].positive`` …); ``build_request`` stages an image slider's uploads first, and ``form_to_json``
writes our own preset JSON (``import_file`` reads it back).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import SliderError
from ..training.config import ImagePair, TextPrompt, TrainConfig
from ..training.pairs import match_pairs
from ..training.slider_names import name_problem
from .train_form import ADVANCED_KEYS, DEFAULT_CONFIG, DEFAULT_PROMPT, FIELDS, PROMPT_WEIGHT_KEY, mode_of
from .train_jobs import SubmitError, TrainOptions
from .train_uploads import stage_uploads


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
        "action": _text(values, "action").lower() or DEFAULT_PROMPT.action,
        "guidance": _number(values, "guidance", "prompts[0].guidance", errors),
        "weight": DEFAULT_PROMPT.weight if weight is None else weight,
    }
    if prompt["guidance"] is None:
        prompt["guidance"] = DEFAULT_PROMPT.guidance
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
        scales = list(DEFAULT_CONFIG.scales)
        if mode == "image":  # the image fields are hidden for a text slider: keep the default quietly
            errors.extend(err.errors)
    if mode == "image":
        config["pairs"] = _pair_dicts([*_folder_pairs(values, errors), *(uploaded_pairs or [])])
    config["image_prompt"] = _text(values, "image_prompt")
    config["scales"] = scales
    for name, integer in (("rank", True), ("alpha", False), ("iterations", True), ("resolution", True),
                          ("batch_size", True), ("seed", True), ("default_start", False)):
        number = _number(values, name, name, errors, integer=integer)
        config[name] = getattr(DEFAULT_CONFIG, name) if number is None else number
    config["preset"] = _text(values, "preset") or DEFAULT_CONFIG.preset
    lr = _number(values, "lr", "lr", errors, empty_ok=True)
    config["lr"] = lr or None  # 0 and empty: the mode's default
    config["precision"] = _text(values, "precision") or DEFAULT_CONFIG.precision
    config["gradient_checkpointing"] = _flag(values, "gradient_checkpointing")
    config["estimate_start"] = _flag(values, "estimate_start")
    config["train_from_start"] = _flag(values, "train_from_start")
    config["train_among"] = parse_slider_names(_get(values, "train_among"))
    low = _number(values, "alpha_low", "alpha_range", errors)
    high = _number(values, "alpha_high", "alpha_range", errors)
    config["alpha_range"] = [DEFAULT_CONFIG.alpha_range[0] if low is None else low,
                             DEFAULT_CONFIG.alpha_range[1] if high is None else high]
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


def preset_file_name(values: Mapping) -> str:
    name = _text(values, "name")
    return f"{name}.json" if name and name_problem(name) is None else "slider.json"
