"""One target layer's slider deltas, evaluated for a batch with a different α per row.

k sliders on one layer are packed into a single LoRA of rank Σr: their ``down`` weights are
concatenated along the rank axis and their ``up`` weights along the input axis. A forward pass
then costs one rank-Σr LoRA, whatever k is, and each batch row scales the rank slots of each
slider by its own α:

    Δy[b] = up_cat( coef[b] ⊙ down_cat(x[b]) ),  coef[b, slot] = α_owner(slot)[b] · scale_owner(slot)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..files.lora import LoraModule
from .factor_cache import converted, module_sources, packed


def _in_layer_shape(down: torch.Tensor, up: torch.Tensor, layer: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    # A 1×1 conv and a Linear are the same map; files for SD1 (conv proj_in) and SD2 (Linear) mix them.
    if isinstance(layer, torch.nn.Conv2d) and down.dim() == 2:
        return down[:, :, None, None], up[:, :, None, None]
    if not isinstance(layer, torch.nn.Conv2d) and down.dim() == 4:
        return down.flatten(1), up.flatten(1)
    return down, up


FLOAT8_TYPES = frozenset(getattr(torch, name) for name in
                         ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu")
                         if hasattr(torch, name))


def is_float8(dtype: torch.dtype) -> bool:
    """A storage-only 8-bit float (the webui's "FP8 weight" setting): computed in fp16/fp32, never in itself."""
    return dtype in FLOAT8_TYPES


def factor_dtype(weight_dtype: torch.dtype) -> torch.dtype:
    """The dtype a slider's factors are kept in beside a weight of ``weight_dtype``.

    The weight's own, unless it is stored in fp8: e4m3 flushes most small factor values to zero, so the factors
    stay in fp32 there and are cast to the layer's compute dtype when it runs (``compute_dtype``).
    """
    return torch.float32 if is_float8(weight_dtype) else weight_dtype


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a layer computes in for input ``x``: autocast's when it is on for ``x``'s device, else ``x``'s."""
    device = x.device.type
    try:
        enabled = torch.is_autocast_enabled(device)
        dtype = torch.get_autocast_dtype(device) if enabled else x.dtype
    except (TypeError, AttributeError, RuntimeError):  # torch < 2.4: per-device functions
        if device == "cuda":
            enabled, dtype = torch.is_autocast_enabled(), torch.get_autocast_gpu_dtype()
        elif device == "cpu":
            enabled, dtype = torch.is_autocast_cpu_enabled(), torch.get_autocast_cpu_dtype()
        else:
            enabled, dtype = False, x.dtype
        dtype = dtype if enabled else x.dtype
    return torch.float32 if not dtype.is_floating_point or is_float8(dtype) else dtype


def _ready(tensor: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    # Trainable weights stay as they are (autocast handles their dtype; a cast would cut the graph).
    if tensor.requires_grad:
        return tensor if tensor.device == like.device else tensor.to(like.device)
    dtype = factor_dtype(like.dtype)
    if tensor.device == like.device and tensor.dtype == dtype:
        return tensor
    return converted(tensor, like.device, dtype)


@dataclass
class LayerDelta:
    """Packed deltas of the sliders that touch one Linear or Conv2d layer."""

    layer: torch.nn.Module
    down: torch.Tensor  # [Σr, in] or [Σr, in, kh, kw]
    up: torch.Tensor  # [out, Σr] or [out, Σr, 1, 1]
    owners: torch.Tensor  # [Σr] long: which slider (index into the engine's list) owns each rank slot
    scales: torch.Tensor  # [Σr] float: alpha/rank of the owning module, per slot
    # (dtype, down, up): the factors cast to the compute dtype, when it isn't theirs (fp8-stored weights)
    _cast: tuple | None = field(default=None, repr=False)

    @classmethod
    def pack(cls, layer: torch.nn.Module, modules: list[tuple[int, LoraModule]]) -> LayerDelta:
        weight = layer.weight

        def build() -> tuple[torch.Tensor, ...]:
            shaped = [_in_layer_shape(_ready(m.down, weight), _ready(m.up, weight), layer) for _, m in modules]
            downs = [down for down, _ in shaped]
            ups = [up for _, up in shaped]
            down = downs[0] if len(downs) == 1 else torch.cat(downs, dim=0)
            up = ups[0] if len(ups) == 1 else torch.cat(ups, dim=1)
            owners = torch.cat([torch.full((m.rank,), index, dtype=torch.long) for index, m in modules])
            scales = torch.cat([torch.full((m.rank,), m.scale, dtype=torch.float32) for _, m in modules])
            return down, up, owners.to(weight.device), scales.to(weight.device)

        kind = (isinstance(layer, torch.nn.Conv2d), weight.device, weight.dtype,
                tuple((index, m.scale) for index, m in modules))
        return cls(layer, *packed(kind, module_sources(modules), build))

    def move_to(self, device: torch.device) -> None:
        self.down, self.up = self.down.to(device), self.up.to(device)
        self.owners, self.scales = self.owners.to(device), self.scales.to(device)
        self._cast = None

    def factors(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(down, up)`` in the dtype the layer computes in for ``x`` (cast once, kept while it stays the same)."""
        dtype = compute_dtype(x)
        down, up = self.down, self.up
        if down.dtype == dtype or down.requires_grad or up.requires_grad:
            return down, up
        if self._cast is None or self._cast[0] != dtype or self._cast[1].device != x.device:
            self._cast = (dtype, down.to(device=x.device, dtype=dtype), up.to(device=x.device, dtype=dtype))
        return self._cast[1], self._cast[2]

    def coefficients(self, row_alphas: torch.Tensor) -> torch.Tensor:
        """``[rows, Σr]`` slot coefficients from ``[rows, k]`` per-slider α."""
        return row_alphas.index_select(1, self.owners) * self.scales

    def __call__(self, x: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
        """The delta for input ``x``; ``coef`` is ``[rows, Σr]`` with rows == x.shape[0]."""
        layer = self.layer
        down, up = self.factors(x)
        if isinstance(layer, torch.nn.Conv2d):
            hidden = F.conv2d(x, down, None, layer.stride, layer.padding, layer.dilation)
            hidden = hidden * coef.to(hidden.dtype)[:, :, None, None]
            return F.conv2d(hidden, up)
        hidden = F.linear(x, down)
        coef = coef.to(hidden.dtype).reshape(coef.shape[0], *([1] * (hidden.dim() - 2)), coef.shape[1])
        return F.linear(hidden * coef, up)
