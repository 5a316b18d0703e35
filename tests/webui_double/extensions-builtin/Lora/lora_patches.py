"""Double of the built-in Lora's ``lora_patches``: the class-level ``forward``/``_load_from_state_dict`` patches
(through ``modules.patches``) of every layer type Lora merges into; each original is kept as ``<Class>_<field>``
(``Linear_forward``, ``Conv2d_load_state_dict``, …)."""

import networks
import torch
from modules import patches

PATCHED = {"Linear": torch.nn.Linear, "Conv2d": torch.nn.Conv2d, "GroupNorm": torch.nn.GroupNorm,
           "LayerNorm": torch.nn.LayerNorm, "MultiheadAttention": torch.nn.MultiheadAttention}
FIELDS = {"forward": "forward", "_load_from_state_dict": "load_state_dict"}


class LoraPatches:
    def __init__(self):
        for label, cls in PATCHED.items():
            for field, suffix in FIELDS.items():
                replacement = getattr(networks, f"network_{label}_{suffix}")
                setattr(self, f"{label}_{suffix}", patches.patch(__name__, cls, field, replacement))

    def undo(self):
        for cls in PATCHED.values():
            for field in FIELDS:
                patches.undo(__name__, cls, field)
