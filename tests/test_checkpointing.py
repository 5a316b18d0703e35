"""Gradient checkpointing really recomputes (on ldm's UNet and on the sgm stand-in), and changes no gradient."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from bench.common.toy_diffusion import make_toy_model
from lib_sliders.training.backend import ModelBackend, resolution_step
from lib_sliders.training.checkpointing import checkpointed_layers, gradient_checkpointing


def _weight_layers(module: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in module.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]


def _step(backend: ModelBackend, enabled: bool) -> tuple[Counter, torch.Tensor]:
    """(forward calls of each weight layer during a forward + backward, the input's gradient)."""
    unet, calls = backend.unet, Counter()
    handles = [m.register_forward_hook(lambda module, *_: calls.update([module])) for m in _weight_layers(unet)]
    side = resolution_step(backend) // backend.latent_scale
    x = torch.randn(2, 4, side, side, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    cond = backend.encode_prompts(["a red circle", "a blue square"])
    try:
        with gradient_checkpointing(unet, enabled):
            backend.predict_eps(x, torch.tensor([10, 500]), cond).square().mean().backward()
    finally:
        for handle in handles:
            handle.remove()
    return calls, x.grad


@pytest.mark.parametrize("arch", ["sd1", "sdxl"])
def test_checkpointing_recomputes_every_block_layer_and_keeps_gradients(arch):
    backend = ModelBackend(make_toy_model(arch))
    unet = backend.unet
    plain_calls, plain_grad = _step(backend, enabled=False)
    calls, grad = _step(backend, enabled=True)
    units = checkpointed_layers(unet)
    assert len(units) > 10
    # Each ResBlock and transformer runs again in the backward pass (up to the last tensor the backward needs;
    # a down/upsampler's convolution needs none when only activations carry gradients)...
    normalised = [unit for unit in units if any(isinstance(m, torch.nn.GroupNorm) for m in unit.modules())]
    assert len(normalised) > 10
    for unit in normalised:
        assert any(calls[m] == 2 and plain_calls[m] == 1 for m in _weight_layers(unit)), unit
    # ...and nothing outside them does (time embedding, input and output convolutions).
    outside = set(_weight_layers(unet)) - {m for unit in units for m in _weight_layers(unit)}
    assert outside and all(calls[m] == plain_calls[m] == 1 for m in outside)
    torch.testing.assert_close(grad, plain_grad)
    assert all("forward" not in vars(layer) for layer in checkpointed_layers(unet))  # wrappers removed
