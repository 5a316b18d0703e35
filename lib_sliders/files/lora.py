"""The data a slider is made of: low-rank weight deltas for named modules.

A slider is a LoRA. For a target layer with weight W, the slider adds

    Δ(x) = up(down(x)) · (alpha / rank) · α

where α is the user's slider value. ``down`` has the target layer's kernel, stride and padding
(a 3×3 conv for the resnet convs the official ``c3lier`` type wraps) and ``up`` is 1×1. This is
the math of kohya's ``networks.lora`` and of the webui's built-in Lora.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class LoraModule:
    """Weights of one low-rank delta.

    down: ``[rank, in]`` (Linear) or ``[rank, in, kh, kw]`` (Conv2d).
    up:   ``[out, rank]`` (Linear) or ``[out, rank, 1, 1]`` (Conv2d).
    alpha: the file's ``.alpha``; the delta is scaled by ``alpha / rank``.
    """

    down: torch.Tensor
    up: torch.Tensor
    alpha: float

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    @property
    def is_conv(self) -> bool:
        return self.down.dim() == 4

    @property
    def in_features(self) -> int:
        return self.down.shape[1]

    @property
    def out_features(self) -> int:
        return self.up.shape[0]

    def delta_weight(self, multiplier: float = 1.0) -> torch.Tensor:
        """The delta folded into the target layer's weight shape, times ``multiplier``."""
        down, up = self.down.float(), self.up.float()
        if not self.is_conv:
            delta = up @ down
        elif down.shape[2:] == (1, 1):
            delta = (up.flatten(1) @ down.flatten(1)).reshape(up.shape[0], down.shape[1], 1, 1)
        else:
            # A 1×1 ``up`` after a k×k ``down`` is the k×k kernel up·down, taken per kernel position.
            delta = torch.einsum("or,rihw->oihw", up.flatten(1), down)
        return delta * (self.scale * multiplier)

    @torch.no_grad()
    def add_delta_(self, weight: torch.Tensor, multiplier: float = 1.0) -> torch.Tensor:
        """``weight += delta_weight(multiplier)`` in place, without materialising the delta.

        Every form is one matrix product over the flattened kernel: Δ[o, (i,h,w)] = Σ_r up[o, r]·down[r, (i,h,w)].
        """
        flat = weight.view(weight.shape[0], -1)
        up = self.up.detach().reshape(self.up.shape[0], -1).to(weight.device, weight.dtype)
        down = self.down.detach().reshape(self.rank, -1).to(weight.device, weight.dtype)
        return flat.addmm_(up, down, alpha=self.scale * multiplier)

    def to(self, device=None, dtype=None) -> LoraModule:
        return LoraModule(self.down.to(device=device, dtype=dtype), self.up.to(device=device, dtype=dtype), self.alpha)


def fold_cp_mid(down: torch.Tensor, mid: torch.Tensor) -> torch.Tensor:
    """LoCon's CP form (1×1 ``down``, k×k ``lora_mid``) as one k×k ``down``.

    A 1×1 bias-free conv followed by a k×k conv equals one k×k conv whose kernel is ``mid · down``
    (zero padding commutes with the channel mix), so a CP module becomes an ordinary conv LoRA.
    """
    return torch.einsum("rshw,si->rihw", mid.float(), down.float().flatten(1)).to(down.dtype)


@dataclass
class SliderNetwork:
    """A loaded slider: its modules keyed by the live model's module paths, plus file metadata.

    unet: LDM module path (``input_blocks.1.1.transformer_blocks.0.attn1.to_q``) → module.
    text: one dict per text encoder (SD1/SD2: ``[te]``; SDXL: ``[te1, te2]``, either may be empty),
          keyed by the HF CLIP path inside ``text_model`` (``encoder.layers.0.self_attn.q_proj``).
    arch: the architectures the file fits (``{"sd1", "sd2"}`` when nothing tells them apart).
    """

    name: str
    unet: dict[str, LoraModule] = field(default_factory=dict)
    text: list[dict[str, LoraModule]] = field(default_factory=list)
    arch: frozenset[str] = frozenset()
    metadata: dict[str, str] = field(default_factory=dict)
    source: str = ""

    @property
    def has_text(self) -> bool:
        return any(self.text)

    def ranks(self) -> set[int]:
        return {m.rank for m in self.all_modules()}

    def all_modules(self):
        yield from self.unet.values()
        for encoder in self.text:
            yield from encoder.values()
