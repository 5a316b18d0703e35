"""Where a text-encoder delta goes in a live text encoder.

Files name text-encoder layers the HF CLIP way (``encoder.layers.3.self_attn.q_proj``). SD1 and
SDXL's first encoder are HF ``CLIPTextModel``s, so the layer is found by that path (under any
prefix such as ``text_model.`` or ``transformer.text_model.``). SD2 and SDXL's second encoder are
OpenCLIP models, whose q/k/v live as thirds of one ``in_proj_weight`` of a MultiheadAttention.

Each slot also names the module whose forward uses the weight, for deltas added at forward time
(``text_hooks``): the Linear itself, or the MultiheadAttention for q/k/v *and* ``out_proj`` (its
forward reads ``out_proj.weight`` directly and never calls ``out_proj``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

_HF_PATH = re.compile(r"encoder\.layers\.(\d+)\.(self_attn\.(q|k|v|out)_proj|mlp\.fc1|mlp\.fc2)$")
_OPEN_CLIP_MLP = {"mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
_QKV_INDEX = {"q": 0, "k": 1, "v": 2}


@dataclass(frozen=True)
class WeightSlot:
    """A weight tensor and, for fused q/k/v projections, the rows the delta belongs to.

    ``module`` computes with the weight: a Linear (``part`` None) or a MultiheadAttention (``part`` is
    "q", "k", "v" or "out").
    """

    weight: torch.Tensor
    rows: slice | None = None
    module: torch.nn.Module | None = None
    part: str | None = None


def text_layer_index(encoder: torch.nn.Module) -> dict[str, WeightSlot]:
    """Map every HF-style layer path a file may name to its weight in ``encoder``."""
    index: dict[str, WeightSlot] = {}
    for name, module in encoder.named_modules():
        hf = _HF_PATH.search(name)
        if hf and isinstance(module, torch.nn.Linear):
            index[hf.group(0)] = WeightSlot(module.weight, module=module)
            continue
        open_clip = re.search(r"resblocks\.(\d+)$", name)
        attention = getattr(module, "attn", None)
        # Only fused q/k/v (one in_proj_weight), as OpenCLIP builds it.
        if open_clip and isinstance(attention, torch.nn.MultiheadAttention) and attention.in_proj_weight is not None:
            layer = int(open_clip.group(1))
            width = attention.embed_dim
            for letter, third in _QKV_INDEX.items():
                rows = slice(third * width, (third + 1) * width)
                index[f"encoder.layers.{layer}.self_attn.{letter}_proj"] = WeightSlot(
                    attention.in_proj_weight, rows, attention, letter)
            index[f"encoder.layers.{layer}.self_attn.out_proj"] = WeightSlot(
                attention.out_proj.weight, module=attention, part="out")
            for hf_child, child in _OPEN_CLIP_MLP.items():
                linear = module.get_submodule(child)
                index[f"encoder.layers.{layer}.{hf_child}"] = WeightSlot(linear.weight, module=linear)
    return index
