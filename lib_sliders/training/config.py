"""The training configuration: typed dataclasses with validation that names the offending field.

The trainer, the webui tab and the HTTP API all build a ``TrainConfig``. ``validation_errors()`` lists
every problem as a ``ConfigError`` whose ``field`` is a path such as ``"prompts[0].target"`` or
``"rank"`` (the API turns them into a 422 body); ``validate()`` raises the first. ``to_dict()`` /
``TrainConfig.from_dict()`` are the JSON form used by UI presets and the API.

Values are normalised on construction: strings are stripped, integral floats become ints for integer
fields (Gradio numbers arrive as floats), a blank neutral prompt means "same as target" and blank
preservation lines are dropped. Values of the wrong type are left as they are for validation to report
(the value kinds are ``config_values``'s; what a name may be, ``slider_names``'s).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from ..prompt.presets import DEFAULT_PRESET, PRESETS
from .config_values import ConfigError, check_types, from_mapping, is_positive, normalise
from .slider_names import name_problem

MODES = ("text", "image")
ACTIONS = ("enhance", "erase")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# Image sliders need a much smaller step: users of the official trainer report 2e-4 "generates a mess"
# and 1e-5 works (rohitgandikota/sliders#47).
DEFAULT_LR = {"text": 2e-4, "image": 1e-5}
MAX_RANK = 1024


# --- the dataclasses --------------------------------------------------------------------------------

_PROMPT_KINDS = {
    "target": "str", "positive": "str", "negative": "str", "neutral": "str?", "preservation": "str[]",
    "action": "str", "guidance": "float", "weight": "float",
}
_PAIR_KINDS = {"before": "str", "after": "str"}
_CONFIG_KINDS = {
    "name": "str", "mode": "str", "image_prompt": "str", "scales": "float[]", "rank": "int", "alpha": "float",
    "preset": "str", "iterations": "int", "lr": "float?", "weight_decay": "float", "resolution": "int",
    "batch_size": "int", "seed": "int", "precision": "str", "gradient_checkpointing": "bool",
    "bidirectional": "bool", "max_denoising_steps": "int", "timesteps_per_trajectory": "int",
    "sampling_guidance": "float", "alpha_range": "float2",
    "default_start": "float", "estimate_start": "bool", "train_from_start": "bool", "checkpoint_every": "int",
    "train_among": "str[]", "among_alphas": "float[]",
}


@dataclass
class TextPrompt:
    """One prompt entry of a text slider (the official ``prompts.yaml`` entry, with its names fixed)."""

    target: str  # c_t: what the slider is applied to ("person"); may be empty = everything
    positive: str  # c+ ("person, very old")
    negative: str  # c- (the official YAML's "unconditional"; "person, very young")
    neutral: str | None = None  # the frozen base prompt; None (or blank) = target
    preservation: list[str] = field(default_factory=list)  # concepts P kept apart (["male", "female"])
    action: str = "enhance"  # "enhance" | "erase"
    guidance: float = 4.0  # η
    weight: float = 1.0  # sampling weight among several prompts

    def __post_init__(self) -> None:
        normalise(self, _PROMPT_KINDS)
        if self.neutral == "":
            self.neutral = None  # a blank UI field means "same as target"
        if isinstance(self.preservation, list) and all(isinstance(p, str) for p in self.preservation):
            self.preservation = [p for p in self.preservation if p]
        if isinstance(self.action, str):
            self.action = self.action.lower()

    @classmethod
    def from_dict(cls, data: Any, *, path: str = "") -> TextPrompt:
        return from_mapping(cls, data, _PROMPT_KINDS, path)

    def validation_errors(self, path: str = "") -> list[ConfigError]:
        prefix = f"{path}." if path else ""
        errors: list[ConfigError] = []
        ok = check_types(self, _PROMPT_KINDS, prefix, errors)

        def bad(name: str, problem: str) -> None:
            errors.append(ConfigError(prefix + name, problem))

        # An empty target is allowed: the empty prompt is a real conditioning, and the official
        # "details" slider and ai-toolkit's detail example use it to affect every image.
        if "positive" in ok and not self.positive:
            bad("positive", "must not be empty")
        # An empty negative is allowed too: it is the official default (c- = the empty prompt).
        if {"positive", "negative"} <= ok and self.positive and self.positive == self.negative:
            bad("negative", "is the same as positive, so the slider would learn nothing")
        if "action" in ok and self.action not in ACTIONS:
            bad("action", f"unknown action {self.action!r}; choose enhance or erase")
        if "guidance" in ok and not is_positive(self.guidance):
            bad("guidance", "must be a positive number (use action 'erase' to reverse the direction)")
        if "weight" in ok and not is_positive(self.weight):
            bad("weight", "must be a positive number")
        return errors


@dataclass
class ImagePair:
    """One before/after image pair of an image slider (same subject, the attribute low → high)."""

    before: str  # path of the "low"/negative image
    after: str  # path of the "high"/positive image

    def __post_init__(self) -> None:
        normalise(self, _PAIR_KINDS)

    @classmethod
    def from_dict(cls, data: Any, *, path: str = "") -> ImagePair:
        return from_mapping(cls, data, _PAIR_KINDS, path)

    def validation_errors(self, path: str = "") -> list[ConfigError]:
        prefix = f"{path}." if path else ""
        errors: list[ConfigError] = []
        ok = check_types(self, _PAIR_KINDS, prefix, errors)
        for name in ("before", "after"):
            if name in ok and not getattr(self, name):
                errors.append(ConfigError(prefix + name, "must not be empty"))
        if ok == {"before", "after"} and self.before and self.before == self.after:
            errors.append(ConfigError(prefix + "after", "is the same image as before"))
        return errors


@dataclass
class TrainConfig:
    """Everything a slider training run needs besides the model."""

    name: str
    mode: str = "text"  # "text" | "image"
    prompts: list[TextPrompt] = field(default_factory=list)
    pairs: list[ImagePair] = field(default_factory=list)
    image_prompt: str = ""  # conditioning for image sliders (official: empty)
    # Image sliders train at ±s: α = +s on the after images, −s on the before ones. One pair of folders makes one
    # scale; two scales on the same images would ask for the same image at α 1 and 2, and the slider learns
    # 0.6 of the change per unit α instead of all of it (the official two-folder setup: ±1).
    scales: list[float] = field(default_factory=lambda: [1.0])
    rank: int = 4
    alpha: float = 1.0
    preset: str = DEFAULT_PRESET
    iterations: int = 1000
    lr: float | None = None  # None = DEFAULT_LR for the mode
    weight_decay: float = 0.01
    resolution: int = 512
    batch_size: int = 1
    seed: int = 0
    precision: str = "auto"  # "auto" | "fp32" | "bf16" | "fp16"
    gradient_checkpointing: bool = False
    bidirectional: bool = True
    max_denoising_steps: int = 50
    # Text sliders: training timesteps taken from each denoising trajectory (1 = the official loop). More
    # share the cost of one trajectory among several training points.
    timesteps_per_trajectory: int = 1
    sampling_guidance: float = 3.0  # CFG while denoising to the training latents (official: 3)
    alpha_range: tuple[float, float] = (-3.0, 3.0)  # recommended α range saved in the file
    default_start: float = 0.0  # recommended start (fraction of steps) saved in the file
    # Save the start estimated from the model instead (``start_estimate``): text sliders probe the base model
    # with their prompts before training, image sliders (no prompt pair) the slider they became after it.
    estimate_start: bool = True
    # Train only the steps the slider acts on: from the start saved in the file (a text slider's estimate, known
    # before training; else ``default_start``), with the slider off before it while denoising to the training
    # latents, as it will be when used. Off by default: on the toy benchmark it made a size slider trained alone
    # cleaner, but not one trained among others (README → Performance → Training from the start).
    train_from_start: bool = False
    checkpoint_every: int = 0  # iterations between resumable checkpoints; 0 = none
    # Sliders this one will be used with (names the caller resolves, e.g. the webui's slider list): on while
    # it trains, each at an α drawn per iteration from ``among_alphas``, so that it learns its change among
    # theirs rather than alone (sliders trained apart interact when used together). The default covers the
    # recommended α range (``alpha_range``): companions drawn from a narrower one compose worse at its ends.
    train_among: list[str] = field(default_factory=list)
    among_alphas: list[float] = field(default_factory=lambda: [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0])

    def __post_init__(self) -> None:
        normalise(self, _CONFIG_KINDS)

    @property
    def learning_rate(self) -> float:
        """``lr``, or the default for the mode when it is None."""
        return self.lr if self.lr is not None else DEFAULT_LR.get(self.mode, DEFAULT_LR["text"])

    @classmethod
    def from_dict(cls, data: Any) -> TrainConfig:
        """The inverse of ``to_dict``; missing fields take their defaults. Raises ConfigError for unknown
        fields and wrong types (values are checked by ``validate``)."""
        return from_mapping(cls, data, _CONFIG_KINDS, "", nested={"prompts": TextPrompt, "pairs": ImagePair})

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (tuples as lists) that ``from_dict`` reads back."""
        data = dataclasses.asdict(self)
        data["alpha_range"] = list(data["alpha_range"])
        return data

    def validate(self) -> None:
        """Raise the first problem as a ConfigError."""
        errors = self.validation_errors()
        if errors:
            raise errors[0]

    def validation_errors(self) -> list[ConfigError]:
        """Every problem, in field order."""
        errors: list[ConfigError] = []
        ok = check_types(self, _CONFIG_KINDS, "", errors)

        def bad(name: str, problem: str) -> None:
            errors.append(ConfigError(name, problem))

        if "name" in ok and (problem := name_problem(self.name)):
            bad("name", problem)
        if "mode" in ok and self.mode not in MODES:
            bad("mode", f"unknown mode {self.mode!r}; choose text or image")
        if self.mode == "text":
            self._check_items("prompts", TextPrompt, "add at least one prompt for a text slider", errors)
        if self.mode == "image":
            self._check_items("pairs", ImagePair, "add at least one before/after pair for an image slider", errors)
            if "scales" in ok:
                if not self.scales:
                    bad("scales", "must not be empty")
                for i, scale in enumerate(self.scales):
                    if not is_positive(scale):
                        bad(f"scales[{i}]", "must be a positive number (the slider trains at ±scale)")
        if "rank" in ok and not 1 <= self.rank <= MAX_RANK:
            bad("rank", f"must be between 1 and {MAX_RANK}")
        if "alpha" in ok and not is_positive(self.alpha):
            bad("alpha", "must be a positive number")
        if "preset" in ok and self.preset not in PRESETS:
            bad("preset", f"unknown layer preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        if "iterations" in ok and self.iterations < 1:
            bad("iterations", "must be at least 1")
        if "lr" in ok and self.lr is not None and not is_positive(self.lr):
            bad("lr", "must be a positive number (leave it empty for the default: 2e-4 text, 1e-5 image)")
        if "weight_decay" in ok and not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            bad("weight_decay", "must be zero or a positive number")
        # What a model allows depends on its latent scale and UNet depth (64 for SD's; see resolution_step).
        if "resolution" in ok and not (8 <= self.resolution <= 4096 and self.resolution % 8 == 0):
            bad("resolution", "must be a multiple of 8 between 8 and 4096")
        if "batch_size" in ok and self.batch_size < 1:
            bad("batch_size", "must be at least 1")
        if "precision" in ok and self.precision not in PRECISIONS:
            bad("precision", f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        # k is drawn from [1, N) and t = k·1000/N must stay a distinct training timestep.
        if "max_denoising_steps" in ok and not 2 <= self.max_denoising_steps <= 1000:
            bad("max_denoising_steps", "must be between 2 and 1000")
        if {"timesteps_per_trajectory", "max_denoising_steps"} <= ok and not (
                1 <= self.timesteps_per_trajectory < max(self.max_denoising_steps, 2)):
            bad("timesteps_per_trajectory", "must be at least 1 and below max_denoising_steps")
        if "sampling_guidance" in ok and not (math.isfinite(self.sampling_guidance) and self.sampling_guidance >= 1):
            bad("sampling_guidance", "must be at least 1 (1 = no classifier-free guidance)")
        if "alpha_range" in ok:
            low, high = self.alpha_range
            if not (math.isfinite(low) and math.isfinite(high)):
                bad("alpha_range", "must be finite numbers")
            elif low >= high:
                bad("alpha_range", "low must be below high")
        if "default_start" in ok and not 0 <= self.default_start < 1:
            bad("default_start", "must be a fraction of the steps in [0, 1)")
        if "checkpoint_every" in ok and self.checkpoint_every < 0:
            bad("checkpoint_every", "must be zero (no checkpoints) or a positive number of iterations")
        if "train_among" in ok:
            seen: set[str] = set()
            for i, other in enumerate(self.train_among):
                if not other:
                    bad(f"train_among[{i}]", "must not be empty")
                elif other in seen:
                    bad(f"train_among[{i}]", f"{other!r} is listed twice")
                elif other == self.name:
                    bad(f"train_among[{i}]", "a slider can't be trained among itself")
                seen.add(other)
        if "among_alphas" in ok and self.train_among:
            if not self.among_alphas:
                bad("among_alphas", "give at least one α for the sliders it is trained among")
            elif not all(math.isfinite(a) for a in self.among_alphas):
                bad("among_alphas", "must be finite numbers")
        return errors

    def _check_items(self, name: str, item_cls: type, empty: str, errors: list[ConfigError]) -> None:
        items = getattr(self, name)
        if not isinstance(items, list):
            errors.append(ConfigError(name, "expected a list"))
            return
        if not items:
            errors.append(ConfigError(name, empty))
        for i, item in enumerate(items):
            if isinstance(item, item_cls):
                errors.extend(item.validation_errors(f"{name}[{i}]"))
            else:
                errors.append(ConfigError(f"{name}[{i}]", f"expected a {item_cls.__name__}"))
