"""Gradient checkpointing for slider training, switched on for the duration of a run only.

The ldm UNet's own ``use_checkpoint`` machinery recomputes blocks with gradients only for the block's
parameters it is handed, so gradients of slider weights attached by hooks would be lost. Instead each
layer of the UNet's top-level blocks (a ResBlock, a SpatialTransformer, a down/upsampler) runs through
``torch.utils.checkpoint`` (non-reentrant, which tracks every tensor the recomputation touches). The
wrapper is set on the layer *instances* and removed afterwards.

Layers, not the blocks themselves: ldm's and sgm's UNets call each block, which calls its layers, but
ComfyUI's (our SDXL stand-in in tests) walks a block's layers itself and never calls the block, so a
wrapper on the block would silently checkpoint nothing there.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch.utils.checkpoint import checkpoint


def unet_blocks(unet: torch.nn.Module) -> list[torch.nn.Module]:
    return [*unet.input_blocks, unet.middle_block, *unet.output_blocks]


def checkpointed_layers(unet: torch.nn.Module) -> list[torch.nn.Module]:
    """The composite layers of every top-level block that hold weights (a bare convolution, like the input one,
    keeps nothing for the backward pass that recomputing could save)."""
    return [layer for block in unet_blocks(unet) for layer in block.children()
            if any(True for _ in layer.children()) and any(True for _ in layer.parameters())]


@contextmanager
def gradient_checkpointing(unet: torch.nn.Module, enabled: bool = True):
    if not enabled:
        yield
        return
    layers = checkpointed_layers(unet)
    for layer in layers:
        layer.forward = _checkpointed(layer.forward)
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward  # the instance attribute shadowed the class's forward


def _checkpointed(forward):
    def run(*args, **kwargs):
        if not torch.is_grad_enabled():
            return forward(*args, **kwargs)
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    return run
