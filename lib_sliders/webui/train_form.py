"""The Train page's form fields as plain data: what each widget is, its default, label and help.

No gradio and no webui here: ``train_tab`` builds widgets from ``FORM_FIELDS`` (in that order) and hands
the widgets' values over as a dict keyed by field name (``train_form_parse`` turns them into a training
request, ``train_form_fill`` fills them from a config).

The form shows one text prompt. A config with several keeps the others in "More prompts" (JSON, our
``TextPrompt`` fields); TrainConfig fields without a widget live in "Other settings" (a JSON object).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..prompt.presets import PRESETS
from ..prompt.prompt_tags import format_number
from ..training.config import ACTIONS, DEFAULT_LR, PRECISIONS, TextPrompt, TrainConfig
from .train_jobs import TrainOptions

MODE_LABELS = {"text": "Text slider", "image": "Image slider"}
_MODE_BY_LABEL = {label: mode for mode, label in MODE_LABELS.items()}

# TrainConfig fields without a widget (set in "Other settings"), and the first prompt's sampling weight.
ADVANCED_KEYS = ("weight_decay", "bidirectional", "max_denoising_steps", "timesteps_per_trajectory",
                 "sampling_guidance", "checkpoint_every", "among_alphas")
PROMPT_WEIGHT_KEY = "weight"

DEFAULT_CONFIG = TrainConfig(name="")
DEFAULT_PROMPT = TextPrompt(target="", positive="", negative="")
_OPTIONS = TrainOptions()


@dataclass(frozen=True)
class FormField:
    name: str
    default: Any
    kind: str  # text | lines | json | radio | dropdown | sliders | number | int | checkbox
    label: str
    info: str = ""
    choices: tuple = ()


def scales_text(scales: Iterable[float]) -> str:
    return ", ".join(format_number(s) for s in scales)


FORM_FIELDS: list[FormField] = [
    FormField("name", DEFAULT_CONFIG.name, "text", "Slider name",
              "File name of the slider (letters, digits, spaces, - _ . ( ))"),
    FormField("mode", MODE_LABELS[DEFAULT_CONFIG.mode], "radio", "Kind of slider",
              "Text: learned from prompts. Image: learned from before/after image pairs", tuple(MODE_LABELS.values())),
    # --- text slider
    FormField("target", DEFAULT_PROMPT.target, "text", "Target",
              "What the slider acts on, e.g. \"person\" (empty = every image)"),
    FormField("positive", DEFAULT_PROMPT.positive, "text", "Positive prompt",
              "The + end of the slider, e.g. \"person, very old\""),
    FormField("negative", DEFAULT_PROMPT.negative, "text", "Negative prompt",
              "The − end, e.g. \"person, very young\" (empty = the empty prompt)"),
    FormField("neutral", "", "text", "Neutral prompt", "The unchanged base prompt; empty = same as the target"),
    FormField("preservation", "\n".join(DEFAULT_PROMPT.preservation), "lines", "Preserve",
              "Concepts kept apart, one per line (e.g. male / female), so the slider doesn't change them"),
    FormField("action", DEFAULT_PROMPT.action, "radio", "Action",
              "enhance: + adds the positive concept; erase: reverses the direction", ACTIONS),
    FormField("guidance", DEFAULT_PROMPT.guidance, "number", "Guidance",
              "How strongly the target is pushed toward positive/negative (η; official default 4)"),
    FormField("more_prompts", "", "json", "More prompts",
              "Further prompt entries as a JSON list of {target, positive, negative, neutral, preservation, "
              "action, guidance, weight}; filled by imports with several prompts"),
    # --- image slider
    FormField("before_dir", "", "text", "Before images folder",
              "The low/− images; paired with the after folder by file name (03.png ↔ 03.jpg). More pairs make a "
              "cleaner slider: with few, it learns the scenes as well as the change"),
    FormField("after_dir", "", "text", "After images folder", "The high/+ images, same file names as before"),
    FormField("image_prompt", DEFAULT_CONFIG.image_prompt, "text", "Image prompt",
              "Prompt used while training on the pairs (official: empty)"),
    FormField("scales", scales_text(DEFAULT_CONFIG.scales), "text", "Scales",
              "The α the after images stand for (the before images: −α). Smaller = stronger per unit α"),
    # --- settings
    FormField("rank", DEFAULT_CONFIG.rank, "int", "Rank", "LoRA rank: 4 is plenty for most sliders; higher = bigger file"),
    FormField("alpha", DEFAULT_CONFIG.alpha, "number", "Network alpha", "LoRA alpha (scale = alpha / rank); 1 as official"),
    FormField("preset", DEFAULT_CONFIG.preset, "dropdown", "Layers",
              "Which UNet layers learn: noxattn (official default) leaves cross-attention alone", PRESETS),
    FormField("iterations", DEFAULT_CONFIG.iterations, "int", "Iterations", "Training steps; 500–1000 is typical"),
    FormField("lr", DEFAULT_CONFIG.lr, "number", "Learning rate",
              f"Empty or 0 = the default ({format_number(DEFAULT_LR['text'])} text, "
              f"{format_number(DEFAULT_LR['image'])} image)"),
    FormField("resolution", DEFAULT_CONFIG.resolution, "int", "Resolution",
              "Training size in pixels (multiple of 64): 512 for SD 1.x, 1024 for SDXL"),
    FormField("batch_size", DEFAULT_CONFIG.batch_size, "int", "Batch size", "Images per step; more needs more memory"),
    FormField("seed", DEFAULT_CONFIG.seed, "int", "Seed", "Same seed and settings = same slider"),
    FormField("precision", DEFAULT_CONFIG.precision, "dropdown", "Precision",
              "auto follows the model; fp32 is safest, bf16/fp16 use less memory", PRECISIONS),
    FormField("gradient_checkpointing", DEFAULT_CONFIG.gradient_checkpointing, "checkbox", "Gradient checkpointing",
              "Less memory, slower steps (try it on out-of-memory errors)"),
    FormField("alpha_low", DEFAULT_CONFIG.alpha_range[0], "number", "Recommended α from",
              "Saved in the file: the α range the UI offers for this slider"),
    FormField("alpha_high", DEFAULT_CONFIG.alpha_range[1], "number", "Recommended α to", "Upper end of that range"),
    FormField("default_start", DEFAULT_CONFIG.default_start, "number", "Recommended start",
              "Saved in the file: fraction of the steps before the slider acts (0–1; 0 = from the start)"),
    FormField("estimate_start", DEFAULT_CONFIG.estimate_start, "checkbox", "Estimate the start from the model",
              "Probe where the model decides the attribute (image sliders: where the trained slider acts) and save "
              "that start instead of the number beside (colour-like attributes start late, layout-like ones early)"),
    FormField("train_from_start", DEFAULT_CONFIG.train_from_start, "checkbox", "Train from the start",
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
