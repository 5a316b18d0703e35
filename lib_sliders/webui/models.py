"""Where the parts sliders touch live in a model the webui loaded (``shared.sd_model``).

Plain attribute access, no webui import: SD1/SD2 are ldm ``LatentDiffusion`` (UNet at
``model.diffusion_model``, text encoder ``cond_stage_model``, wrapped by the webui's hijack), SDXL is sgm's
``DiffusionEngine`` (same UNet path, text encoders in ``conditioner.embedders``: CLIP-L then OpenCLIP bigG,
beside non-text embedders for the size conditionings).
"""

from __future__ import annotations

import torch

from ..apply.text_targets import text_layer_index


def model_arch(sd_model) -> str | None:
    """"sd1" / "sd2" / "sdxl" from the webui's flags, None for any other model (SD3, Flux, refiners…)."""
    if getattr(sd_model, "is_sdxl", False) and not getattr(sd_model, "is_ssd", False):
        return "sdxl"
    if getattr(sd_model, "is_sd2", False):
        return "sd2"
    if getattr(sd_model, "is_sd1", False):
        return "sd1"
    return None


def unet_of(sd_model) -> torch.nn.Module:
    return sd_model.model.diffusion_model


def text_encoders_of(sd_model) -> list[torch.nn.Module]:
    """The text encoders in the order slider files number them (``lora_te1`` / ``lora_te2``)."""
    conditioner = getattr(sd_model, "conditioner", None)
    if conditioner is not None:
        return [e for e in conditioner.embedders if text_layer_index(e)]
    encoder = getattr(sd_model, "cond_stage_model", None)
    return [encoder] if isinstance(encoder, torch.nn.Module) else []
