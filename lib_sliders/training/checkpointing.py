"""Gradient checkpointing for slider training, switched on for the duration of a run only.

The ldm UNet's own ``use_checkpoint`` machinery recomputes blocks with gradients only for the block's
parameters it is handed, so gradients of slider weights attached by hooks would be lost. Instead each
top-level UNet block runs through ``torch.utils.checkpoint`` (non-reentrant, which tracks every tensor
the recomputation touches). The wrapper is set on the block *instances* and removed afterwards.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch.utils.checkpoint import checkpoint


def unet_blocks(unet: torch.nn.Module) -> list[torch.nn.Module]:
    return [*unet.input_blocks, unet.middle_block, *unet.output_blocks]


@contextmanager
def gradient_checkpointing(unet: torch.nn.Module, enabled: bool = True):
    if not enabled:
        yield
        return
    blocks = unet_blocks(unet)
    for block in blocks:
        block.forward = _checkpointed(block.forward)
    try:
        yield
    finally:
        for block in blocks:
            del block.forward  # the instance attribute shadowed the class's forward


def _checkpointed(forward):
    def run(*args, **kwargs):
        if not torch.is_grad_enabled():
            return forward(*args, **kwargs)
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    return run
