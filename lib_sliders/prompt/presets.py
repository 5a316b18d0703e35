"""Layer-selection presets: which UNet layers a slider trains, with the official repo's names.

The official trainer wraps the Linear/Conv2d children of diffusers ``Attention`` modules and, for its
default ``c3lier`` type, those of resnets and up/down samplers; each preset then filters by the
*parent* module name. Expressed on the LDM module tree the webui runs:

=============  ==================================================================
``noxattn``    self-attention q/k/v/out + resnet and sampler convs (official default)
``innoxattn``  the same layers (the official filter differs only by ``time_embed``,
               which no wrapped layer's parent contains)
``selfattn``   self-attention q/k/v/out
``xattn``      cross-attention q/k/v/out
``xattn-strict`` cross-attention q/k/v (no output projection)
``full``       self- and cross-attention q/k/v/out + resnet and sampler convs
=============  ==================================================================

Never selected: ``time_embed``, ``label_emb``, ``input_blocks.0`` (conv_in), ``out`` (conv_out),
norms, ``proj_in``/``proj_out`` and the feed-forward layers.
"""

from __future__ import annotations

import re

import torch

from ..errors import SliderError

PRESETS = ("noxattn", "innoxattn", "selfattn", "xattn", "xattn-strict", "full")
DEFAULT_PRESET = "noxattn"

_ATTENTION = re.compile(r"\.transformer_blocks\.\d+\.(attn1|attn2)\.(to_q|to_k|to_v|to_out\.0)$")
# Inside a ResBlock: conv1, time-embedding projection, conv2, and the 1×1 shortcut (a conv only
# where the channel count changes). Samplers: Downsample ``op`` and Upsample ``conv``.
_RESNET = re.compile(r"^(input_blocks|middle_block|output_blocks)\.(\d+\.)*\d+\.(in_layers\.2|emb_layers\.1|out_layers\.3|skip_connection)$")
_SAMPLER = re.compile(r"^(input_blocks\.\d+\.0\.op|output_blocks\.\d+\.\d+\.conv)$")


def layer_kind(path: str) -> str | None:
    """``"attn1"``, ``"attn2"``, ``"conv"`` (resnet/sampler) or None for an LDM module path."""
    match = _ATTENTION.search(path)
    if match:
        return match.group(1)
    if _RESNET.match(path) or _SAMPLER.match(path):
        return "conv"
    return None


def preset_includes(preset: str, path: str) -> bool:
    """Whether ``preset`` trains the LDM module at ``path``."""
    kind = layer_kind(path)
    if kind is None:
        return False
    if preset in ("noxattn", "innoxattn"):
        return kind in ("attn1", "conv")
    if preset == "selfattn":
        return kind == "attn1"
    if preset == "xattn":
        return kind == "attn2"
    if preset == "xattn-strict":
        return kind == "attn2" and not path.endswith("to_out.0")
    if preset == "full":
        return True
    raise SliderError(f"preset: unknown layer preset {preset!r}; choose one of {', '.join(PRESETS)}")


def select_layers(unet: torch.nn.Module, preset: str = DEFAULT_PRESET) -> dict[str, torch.nn.Module]:
    """The Linear/Conv2d layers of an LDM UNet that ``preset`` trains, by module path."""
    if preset not in PRESETS:
        raise SliderError(f"preset: unknown layer preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return {
        path: module
        for path, module in unet.named_modules()
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) and preset_includes(preset, path)
    }
