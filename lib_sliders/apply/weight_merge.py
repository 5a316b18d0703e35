"""The merged path: fold uniform slider deltas into weights, and put them back bit for bit.

Merging costs nothing per step (the model runs at its normal speed) but serves one α for the whole
batch. The first merge into a weight keeps a copy of it; restoring copies it back, so weights end
bitwise identical to what they were, however many α changes happened in between.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..files.lora import LoraModule
from .layer_delta import is_float8


@dataclass(frozen=True)
class Contribution:
    """``multiplier · module``'s delta, added to ``rows`` of a weight (all rows when None).

    Row ranges address the q/k/v thirds of a fused attention projection (OpenCLIP's ``in_proj_weight``).
    """

    module: LoraModule
    multiplier: float
    rows: slice | None = None


class WeightMerger:
    def __init__(self, backup_device: torch.device | str | None = None):
        # None keeps backups beside the weights: fastest α changes, at the cost of memory there.
        self.backup_device = backup_device
        self._backups: dict[torch.Tensor, torch.Tensor] = {}

    @property
    def merged_weights(self) -> int:
        return len(self._backups)

    @torch.no_grad()
    def merge(self, deltas: dict[torch.Tensor, list[Contribution]]) -> None:
        """Set each weight to original + Σ contributions; weights merged before but not listed are restored.

        Weights stored in fp8 are refused (``ValueError``, nothing written): a slider's delta is mostly below
        fp8's resolution at a weight's magnitude and would round away. Apply such sliders through hooks.
        """
        fp8 = [weight for weight in deltas if is_float8(weight.dtype)]
        if fp8:
            raise ValueError(f"can't merge sliders into weights stored in {fp8[0].dtype} (their deltas would round "
                             "away): apply them through hooks")
        for weight in [weight for weight in self._backups if weight not in deltas]:
            self._restore(weight)
        for weight, contributions in deltas.items():
            original = self._backups.get(weight)
            if original is None:
                original = self._backups[weight] = weight.detach().to(self.backup_device or weight.device, copy=True)
            # Sums are formed in fp32: straight in the weight when it is fp32, else in a scratch copy.
            total = weight if weight.dtype == torch.float32 else torch.empty_like(weight, dtype=torch.float32)
            total.copy_(original)
            for part in contributions:
                part.module.add_delta_(total if part.rows is None else total[part.rows], part.multiplier)
            if total is not weight:
                weight.copy_(total)

    @torch.no_grad()
    def restore(self) -> None:
        for weight in list(self._backups):
            self._restore(weight)

    def discard(self) -> None:
        """Forget the backups without writing them back (the weights were replaced meanwhile)."""
        self._backups.clear()

    def _restore(self, weight: torch.Tensor) -> None:
        weight.copy_(self._backups.pop(weight))
