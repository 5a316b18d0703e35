"""Where a text-encoder delta goes in a live text encoder.

Files name text-encoder layers the HF CLIP way (``encoder.layers.3.self_attn.q_proj``). SD1 and
SDXL's first encoder are HF ``CLIPTextModel``s, so the layer is found by that path (under any
prefix such as ``text_model.`` or ``transformer.text_model.``). SD2 and SDXL's second encoder are
OpenCLIP models, whose q/k/v live as thirds of one ``in_proj_weight`` of a MultiheadAttention.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

_HF_PATH = re.compile(r"encoder\.layers\.(\d+)\.(self_attn\.(q|k|v|out)_proj|mlp\.fc1|mlp\.fc2)$")
_OPEN_CLIP_CHILD = {"self_attn.out_proj": "attn.out_proj", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
_QKV_INDEX = {"q": 0, "k": 1, "v": 2}


@dataclass(frozen=True)
class WeightSlot:
    """A weight tensor and, for fused q/k/v projections, the rows the delta belongs to."""

    weight: torch.Tensor
    rows: slice | None = None


def text_layer_index(encoder: torch.nn.Module) -> dict[str, WeightSlot]:
    """Map every HF-style layer path a file may name to its weight in ``encoder``."""
    index: dict[str, WeightSlot] = {}
    for name, module in encoder.named_modules():
        hf = _HF_PATH.search(name)
        if hf and isinstance(module, torch.nn.Linear):
            index[hf.group(0)] = WeightSlot(module.weight)
            continue
        open_clip = re.search(r"resblocks\.(\d+)$", name)
        if open_clip and hasattr(module, "attn") and isinstance(module.attn, torch.nn.MultiheadAttention):
            layer = int(open_clip.group(1))
            attention = module.attn
            width = attention.embed_dim
            for letter, third in _QKV_INDEX.items():
                rows = slice(third * width, (third + 1) * width)
                index[f"encoder.layers.{layer}.self_attn.{letter}_proj"] = WeightSlot(attention.in_proj_weight, rows)
            for hf_child, child in _OPEN_CLIP_CHILD.items():
                index[f"encoder.layers.{layer}.{hf_child}"] = WeightSlot(module.get_submodule(child).weight)
    return index
