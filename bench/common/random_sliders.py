"""Random (but non-trivial) sliders shaped for a given UNet, for tests and benchmarks."""

from __future__ import annotations

import torch

from lib_sliders.files.lora import LoraModule, SliderNetwork
from lib_sliders.prompt.presets import select_layers


def random_lora_for(layer: torch.nn.Module, rank: int, alpha: float, generator: torch.Generator) -> LoraModule:
    if isinstance(layer, torch.nn.Conv2d):
        down_shape = (rank, layer.in_channels, *layer.kernel_size)
        up_shape = (layer.out_channels, rank, 1, 1)
    else:
        down_shape = (rank, layer.in_features)
        up_shape = (layer.out_features, rank)
    fan_in = torch.Size(down_shape[1:]).numel()
    down = torch.randn(down_shape, generator=generator) / fan_in**0.5
    up = torch.randn(up_shape, generator=generator) / rank**0.5
    return LoraModule(down=down, up=up, alpha=float(alpha))


def random_slider(unet: torch.nn.Module, preset: str = "noxattn", rank: int = 4, alpha: float = 1.0,
                  seed: int = 0, name: str = "random", arch: frozenset[str] = frozenset()) -> SliderNetwork:
    """A slider on every layer ``preset`` selects, with random ``up`` as well (a trained-looking delta)."""
    generator = torch.Generator().manual_seed(seed)
    modules = {path: random_lora_for(layer, rank, alpha, generator) for path, layer in select_layers(unet, preset).items()}
    return SliderNetwork(name=name, unet=modules, arch=arch)
