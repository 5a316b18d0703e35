"""What the trainer needs from a diffusion model, and one implementation over the webui's model objects.

The webui's SD1/SD2 ``LatentDiffusion`` and its extended SDXL ``DiffusionEngine`` expose the same
methods: ``get_learned_conditioning(prompts)`` (a tensor for SD1/SD2, ``{"crossattn", "vector"}`` for
SDXL), ``apply_model(x, t, cond)`` (the raw model output: ε or v, by ``parameterization``),
``alphas_cumprod``, ``encode_first_stage``/``get_first_stage_encoding`` and ``model.diffusion_model``.
``ModelBackend`` wraps any object with those methods, so the trainer runs on the very model the
webui has loaded; the trainer itself only ever sees ε.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, Union

import torch

Conditioning = Union[torch.Tensor, dict[str, torch.Tensor]]  # noqa: UP007 - readable alias


class DiffusionBackend(Protocol):
    unet: torch.nn.Module
    device: torch.device
    dtype: torch.dtype
    alphas_cumprod: torch.Tensor  # [T] float32 on ``device``
    latent_scale: int  # image pixels per latent pixel (8 for SD's VAE; 1 for a pixel-space model)

    def encode_prompts(self, prompts: list[str]) -> Conditioning: ...

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor: ...

    def encode_images(self, images: torch.Tensor) -> torch.Tensor: ...

    def encoders(self) -> list[torch.nn.Module]:
        """The modules only prompts and images go through (text encoders, VAE): idle once both are encoded."""
        ...


def resolution_step(backend: DiffusionBackend) -> int:
    """The pixel sizes a backend's model trains at are multiples of this: pixels per latent pixel × the UNet's
    total downsampling (SD: 8 × 8 = 64; a 32 px pixel-space toy model with 3 levels: 1 × 4 = 4)."""
    levels = len(getattr(backend.unet, "channel_mult", (1, 2, 4, 4)))
    return int(getattr(backend, "latent_scale", 8)) * 2 ** (levels - 1)


def select_cond(cond: Conditioning, index: torch.Tensor | list[int]) -> Conditioning:
    """Rows ``index`` of a conditioning (repeats allowed)."""
    index = torch.as_tensor(index, dtype=torch.long)
    if isinstance(cond, dict):
        return {key: value.index_select(0, index.to(value.device)) for key, value in cond.items()}
    return cond.index_select(0, index.to(cond.device))


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` (on the CPU) copied to ``device`` without waiting for the GPU.

    A copy from ordinary (pageable) memory first waits for everything queued on the GPU; one from
    pinned memory doesn't, so the CPU can go on queueing work while the GPU is busy."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def v_to_eps(v: torch.Tensor, x_t: torch.Tensor, alphas_cumprod_t: torch.Tensor) -> torch.Tensor:
    """ε from a v-prediction: with x_t = √ᾱ·x₀ + √(1−ᾱ)·ε and v = √ᾱ·ε − √(1−ᾱ)·x₀, ε = √ᾱ·v + √(1−ᾱ)·x_t."""
    a = alphas_cumprod_t.reshape(-1, *([1] * (x_t.dim() - 1))).to(x_t.dtype)
    return a.sqrt() * v + (1 - a).sqrt() * x_t


class ModelBackend:
    """``DiffusionBackend`` over a webui-style model (``LatentDiffusion`` or extended ``DiffusionEngine``)."""

    def __init__(self, model, device: torch.device | str | None = None,
                 wrap_prompts: Callable[[list[str]], Any] | None = None):
        """``wrap_prompts`` turns a prompt list into what the model's conditioner takes; the webui passes its
        ``SdConditioning`` with the training size, which SDXL embeds (its default would say 1024×1024)."""
        self.model = model
        self.wrap_prompts = wrap_prompts
        self.unet: torch.nn.Module = model.model.diffusion_model
        first = next(self.unet.parameters())
        self.device = torch.device(device) if device is not None else first.device
        self.dtype = first.dtype
        self.alphas_cumprod = torch.as_tensor(model.alphas_cumprod).to(self.device, torch.float32)
        self.v_prediction = getattr(model, "parameterization", "eps") == "v"
        # The webui's models don't say; their VAEs all downsample by 8. Pixel-space toy models set 1.
        self.latent_scale = int(getattr(model, "latent_scale", 8))

    def encode_prompts(self, prompts: list[str]) -> Conditioning:
        batch = list(prompts) if self.wrap_prompts is None else self.wrap_prompts(list(prompts))
        with torch.no_grad():
            return self.model.get_learned_conditioning(batch)

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        output = self.model.apply_model(x_t, t, cond)
        if self.v_prediction:
            return v_to_eps(output, x_t, self.alphas_cumprod[t])
        return output

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Latents of ``images`` (``[B, 3, H, W]`` in [−1, 1]), scaled as the UNet expects."""
        with torch.no_grad():
            encoded = self.model.encode_first_stage(images.to(self.device, self.first_stage_dtype()))
            return self.model.get_first_stage_encoding(encoded).float()

    def encoders(self) -> list[torch.nn.Module]:
        # SDXL's webui model points cond_stage_model at its conditioner: each module once.
        found = {}
        for name in ("cond_stage_model", "conditioner", "first_stage_model"):
            module = getattr(self.model, name, None)
            if isinstance(module, torch.nn.Module):
                found.setdefault(id(module), module)
        return list(found.values())

    def first_stage_dtype(self) -> torch.dtype:
        first_stage = getattr(self.model, "first_stage_model", None)
        if first_stage is None:
            return self.dtype
        return next(first_stage.parameters()).dtype
