"""DDIM over the model's own ᾱ schedule: the timesteps training latents are produced and labelled with."""

from __future__ import annotations

import torch


def ddim_timesteps(num_steps: int, num_train_timesteps: int = 1000) -> torch.Tensor:
    """Descending timesteps of a ``num_steps`` DDIM schedule with "leading" spacing: 980, 960, …, 0 for 50."""
    ratio = num_train_timesteps // num_steps
    return (torch.arange(num_steps - 1, -1, -1) * ratio).long()


def ddim_step(x_t: torch.Tensor, eps: torch.Tensor, alpha_t: torch.Tensor, alpha_next: torch.Tensor) -> torch.Tensor:
    """Deterministic DDIM (η=0) move from ᾱ_t to ᾱ_next given the predicted noise."""
    x0 = (x_t - (1 - alpha_t).sqrt() * eps) / alpha_t.sqrt()
    return alpha_next.sqrt() * x0 + (1 - alpha_next).sqrt() * eps


def add_noise(x0: torch.Tensor, noise: torch.Tensor, alphas_cumprod_t: torch.Tensor) -> torch.Tensor:
    a = alphas_cumprod_t.reshape(-1, *([1] * (x0.dim() - 1)))
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def first_step_on(start: float, num_steps: int) -> int:
    """The first of ``num_steps`` steps at which a slider with this start acts (the engine's gate: step / num_steps
    ≥ start); ``num_steps`` when it never does."""
    return next((i for i in range(num_steps) if start <= i / num_steps), num_steps)


def first_training_step(start: float, num_steps: int) -> int:
    """The first DDIM step count a slider used from ``start`` trains at: the step it first acts on, kept within
    the counts training draws from (1 … num_steps − 1), so that even a late start leaves one to train."""
    return min(max(1, first_step_on(start, num_steps)), num_steps - 1)
