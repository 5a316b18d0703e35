"""Settings → "Concept Sliders". Registered at import, as the built-in Lora does, so they also exist
(with their defaults) under ``--nowebui``, where ``on_ui_settings`` never runs."""

from __future__ import annotations

import os

import gradio as gr
from modules import shared

SECTION = ("concept_sliders", "Concept Sliders")

APPLY_MODES = {
    "Hooks (per-image α, works beside Lora)": "hooks",
    "Merge one-α sliders when no Lora is active (fastest)": "auto",
}


def register() -> None:
    shared.options_templates.update(shared.options_section(SECTION, {
        "sliders_accordion_rows": shared.OptionInfo(
            4, "Slider rows in the Sliders accordion", gr.Slider, {"minimum": 1, "maximum": 12, "step": 1},
        ).needs_reload_ui(),
        "sliders_default_alpha_max": shared.OptionInfo(
            3.0, "α slider range (±) for files that don't recommend one", gr.Slider,
            {"minimum": 0.5, "maximum": 20, "step": 0.5},
        ),
        "sliders_default_alpha": shared.OptionInfo(
            1.0, "α a card click inserts", gr.Slider, {"minimum": -10, "maximum": 10, "step": 0.05},
        ),
        "sliders_apply_mode": shared.OptionInfo(
            next(iter(APPLY_MODES)), "How sliders are applied", gr.Radio, {"choices": list(APPLY_MODES)},
        ).info("merging costs nothing per step but needs the built-in Lora idle and weights not stored in fp8; "
               "per-image α always uses hooks"),
        "sliders_include_lora_dir": shared.OptionInfo(
            True, "Also list sliders found in the Lora folder (files whose metadata says they are sliders)",
        ),
        "sliders_extra_dirs": shared.OptionInfo(
            "", "More slider folders (one per line)", gr.Textbox, {"lines": 2},
        ),
        "sliders_add_hashes_to_infotext": shared.OptionInfo(True, "Add slider hashes to infotext"),
        "sliders_strip_same_seed": shared.OptionInfo(
            True, "Strips: every image of a job whose α varies from image to image gets the first image's seed",
        ).info("so a strip shows one image at several α; off: image i gets seed + i, as usual"),
    }))


def opt(key: str):
    return getattr(shared.opts, key)


def apply_mode() -> str:
    return APPLY_MODES.get(opt("sliders_apply_mode"), "hooks")


def slider_dirs() -> list[str]:
    dirs = [shared.cmd_opts.sliders_dir]
    extra = opt("sliders_extra_dirs") or ""
    dirs += [line.strip() for line in extra.splitlines() if line.strip()]
    return [os.path.abspath(d) for d in dirs]


def lora_dirs() -> list[str]:
    dirs = [getattr(shared.cmd_opts, "lora_dir", None), getattr(shared.cmd_opts, "lyco_dir_backcompat", None)]
    return [os.path.abspath(d) for d in dirs if d]
