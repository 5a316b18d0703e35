"""Which model architecture a slider file (or a live UNet) is for.

Module *names* decide the family: SD1/SD2 have 4 levels and attention from level 0 (``down_blocks.0.attentions``,
``input_blocks.1.1``); SDXL has 3 levels, no attention at level 0 and up to 10 transformer blocks per
transformer. SD1 and SD2 differ only in widths (cross-attention context 768 vs 1024, text encoder 768 vs
1024 wide, 12 vs 24 text layers) and in proj_in/proj_out being 1×1 convs (SD1) or Linear (SD2); a slider
that trains neither cross-attention nor the text encoder (the official default ``noxattn``) is the same
file for both, and can only be told apart by its metadata.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from .keymap import TEXT_PREFIXES, UNET_PREFIX, text_file_key_to_path, unet_file_key_to_ldm
from .layout import ARCH_IDS, ModuleShape, text_layout, unet_layout
from .lora import LoraModule

ARCHES = ARCH_IDS
ARCH_LABELS = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL"}
SD1_OR_SD2 = frozenset({"sd1", "sd2"})

# A module's weights: a LoraModule, or (down shape, up shape) for callers that have only shapes.
ModuleWeights = LoraModule | tuple[Sequence[int], Sequence[int]]
UnetModules = Mapping[str, ModuleWeights]  # by file module name after ``lora_unet_``
TextModules = Mapping[tuple[int, str], ModuleWeights]  # by (encoder index, HF-CLIP path)

_MODELSPEC = {
    "stable-diffusion-v1": "sd1",
    "stable-diffusion-v2-512": "sd2",
    "stable-diffusion-v2-768-v": "sd2",
    "stable-diffusion-xl-v1-base": "sdxl",
}


def arch_from_metadata(metadata: Mapping[str, str] | None) -> str | None:
    """The arch a file's header names (ours, kohya's ``ss_*`` or ModelSpec), or None."""
    if not metadata:
        return None
    ours = str(metadata.get("sliders.arch", "")).strip()
    if ours in ARCHES:
        return ours
    version = str(metadata.get("ss_base_model_version", "")).strip()
    if version.startswith("sdxl"):
        return "sdxl"
    if version.startswith("sd_v2"):
        return "sd2"
    if version.startswith("sd_v1"):
        return "sd1"
    spec = str(metadata.get("modelspec.architecture", "")).strip().removesuffix("/lora")
    if spec in _MODELSPEC:
        return _MODELSPEC[spec]
    if str(metadata.get("ss_v2", "")).strip() == "True":
        return "sd2"
    return None


def _shape(weights: ModuleWeights) -> ModuleShape:
    """The target layer's shape as the LoRA weights imply it (kernel from ``down``)."""
    if isinstance(weights, LoraModule):
        down, up = tuple(weights.down.shape), tuple(weights.up.shape)
    else:
        down, up = tuple(weights[0]), tuple(weights[1])
    if len(down) == 4:
        return ModuleShape("conv", down[1], up[0], (down[2], down[3]))
    return ModuleShape("linear", down[1], up[0])


def _fits_by_names(unet: UnetModules, text: TextModules, prefixes: set[str]) -> set[str]:
    fits = set()
    for arch in ARCHES:
        if arch == "sdxl" and "lora_te_" in prefixes or arch != "sdxl" and prefixes & {"lora_te1_", "lora_te2_"}:
            continue
        encoders = text_layout(arch)
        if any(index >= len(encoders) or path not in encoders[index] for index, path in text):
            continue
        try:
            for flat in unet:
                unet_file_key_to_ldm(flat, arch)
        except KeyError:
            continue
        fits.add(arch)
    return fits


def _full_size_fits(arch: str, unet: UnetModules, text: TextModules) -> bool:
    """Whether every module has exactly the full-size ``arch`` model's shape."""
    layout = unet_layout(arch)
    if any(_shape(w) != layout.get(unet_file_key_to_ldm(flat, arch)) for flat, w in unet.items()):  # norms: None
        return False
    encoders = text_layout(arch)
    return all(_shape(w) == encoders[index][path] for (index, path), w in text.items())


def _sd1_or_sd2_hint(unet: UnetModules, text: TextModules) -> str | None:
    """Tell SD1 from SD2 by the widths/kinds where they differ (works for partly non-full-size files)."""
    for flat, weights in unet.items():
        path = unet_file_key_to_ldm(flat, "sd1")  # same names in sd2
        if path.endswith(("attn2.to_k", "attn2.to_v")):
            context = _shape(weights).in_features
            if context in (768, 1024):
                return "sd1" if context == 768 else "sd2"
    for flat, weights in unet.items():
        if unet_file_key_to_ldm(flat, "sd1").endswith(".proj_in"):
            return "sd1" if _shape(weights).kind == "conv" else "sd2"
    for (_, path), weights in text.items():
        if path.endswith("self_attn.q_proj"):
            hidden = _shape(weights).in_features
            if hidden in (768, 1024):
                return "sd1" if hidden == 768 else "sd2"
    return None


def detect_arch(modules: Mapping[str, ModuleWeights], metadata: Mapping[str, str] | None = None) -> frozenset[str]:
    """The architectures a slider file fits, from its modules (keyed by kohya module name) and header.

    Keys other than ``lora_unet_*``/``lora_te*_*`` (embeddings, other adapters) are ignored; an empty result
    means a UNet/text module name fits no architecture, or there are none. ``{"sd1", "sd2"}`` means the file
    is structurally identical for both (a ``noxattn`` slider without metadata): the caller may use it with
    either.
    """
    unet: dict[str, ModuleWeights] = {}
    text: dict[tuple[int, str], ModuleWeights] = {}
    prefixes: set[str] = set()
    for key, weights in modules.items():
        if key.startswith(UNET_PREFIX):
            unet[key[len(UNET_PREFIX) :]] = weights
            continue
        prefix = next((p for p in TEXT_PREFIXES if key.startswith(p)), None)
        if prefix is None:
            continue
        try:
            text[text_file_key_to_path(key)] = weights
        except KeyError:
            return frozenset()
        prefixes.add(prefix)
    if not unet and not text:
        return frozenset()

    fits = _fits_by_names(unet, text, prefixes)
    if len(fits) <= 1:
        return frozenset(fits)
    named = arch_from_metadata(metadata)
    if named in fits:
        return frozenset({named})
    full_size = {arch for arch in fits if _full_size_fits(arch, unet, text)}
    if full_size:
        fits = full_size
    if fits == SD1_OR_SD2:
        hint = _sd1_or_sd2_hint(unet, text)
        if hint:
            return frozenset({hint})
    return frozenset(fits)


def detect_model_arch(unet: torch.nn.Module) -> str:
    """The arch of a live LDM/sgm UNet (``sd_model.model.diffusion_model``)."""
    names = dict(unet.named_modules())
    if "label_emb" in names and "input_blocks.1.1" not in names:
        return "sdxl"
    proj_in = next((m for n, m in names.items() if n.endswith(".proj_in")), None)
    return "sd2" if isinstance(proj_in, torch.nn.Linear) else "sd1"
