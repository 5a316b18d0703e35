"""A k-diffusion style Euler sampler (``KDiffusionSampler`` with ``sample_euler``) around ``CFGDenoiser``.

Progress bookkeeping as in the webui: ``launch_sampling`` sets ``state.sampling_steps`` and zeroes
``state.sampling_step``; the sampler's callback sets ``state.sampling_step = i`` AFTER the model call of
step i. So while step i (i ≥ 1) is being denoised, ``state.sampling_step`` still says i - 1.
"""

from __future__ import annotations

import torch
from modules.sd_samplers_cfg_denoiser import CFGDenoiser
from modules.sd_samplers_common import InterruptedException
from modules.shared import state


class CompVisDenoiser(torch.nn.Module):
    """k-diffusion's discrete eps wrapper: sigma ↔ timestep over the model's ``alphas_cumprod``."""

    def __init__(self, model):
        super().__init__()
        self.inner_model = model
        alphas_cumprod = model.alphas_cumprod.float()
        self.sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        self.log_sigmas = self.sigmas.log()

    def sigma_to_t(self, sigma):
        # Nearest discrete timestep (k-diffusion interpolates; the schedule below only uses exact ones).
        return (sigma.log()[:, None] - self.log_sigmas[None]).abs().argmin(dim=1)

    def get_sigmas(self, n):
        timesteps = torch.linspace(len(self.sigmas) - 1, 0, n).round().long()
        return torch.cat([self.sigmas[timesteps], self.sigmas.new_zeros(1)])

    def forward(self, x, sigma, **kwargs):
        scale = sigma[:, None, None, None]
        eps = self.inner_model.apply_model(x / (scale ** 2 + 1) ** 0.5, self.sigma_to_t(sigma), **kwargs)
        return x - eps * scale


@torch.no_grad()
def sample_euler(model, x, sigmas, extra_args=None, callback=None):
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **(extra_args or {}))
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "denoised": denoised})
        x = x + (x - denoised) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
    return x


class KDiffusionSampler:
    def __init__(self, sd_model):
        self.model_wrap = CompVisDenoiser(sd_model)
        self.model_wrap_cfg = CFGDenoiser(self)
        self.p = None
        self.last_latent = None
        self.stop_at = None

    def callback_state(self, d):
        if self.stop_at is not None and d["i"] > self.stop_at:
            raise InterruptedException
        state.sampling_step = d["i"]

    def launch_sampling(self, steps, func):
        self.model_wrap_cfg.steps = steps
        self.model_wrap_cfg.total_steps = steps  # Euler: one denoiser call per step
        state.sampling_steps = steps
        state.sampling_step = 0
        try:
            return func()
        except InterruptedException:
            return self.last_latent

    def initialize(self, p):
        self.p = p
        self.model_wrap_cfg.p = p
        self.model_wrap_cfg.step = 0

    def _extra_args(self, p, conditioning, unconditional_conditioning, image_conditioning):
        return {"cond": conditioning, "image_cond": image_conditioning, "uncond": unconditional_conditioning,
                "cond_scale": p.cfg_scale, "s_min_uncond": 0.0}

    def sample(self, p, x, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        steps = steps or p.steps
        sigmas = self.model_wrap.get_sigmas(steps)
        x = x * sigmas[0]
        self.initialize(p)
        args = self._extra_args(p, conditioning, unconditional_conditioning, image_conditioning)
        return self.launch_sampling(steps, lambda: sample_euler(self.model_wrap_cfg, x, sigmas, args,
                                                                self.callback_state))

    def sample_img2img(self, p, x, noise, conditioning, unconditional_conditioning, steps=None,
                       image_conditioning=None):
        steps = steps or p.steps
        t_enc = int(min(p.denoising_strength, 0.999) * steps)
        sigmas = self.model_wrap.get_sigmas(steps)[steps - t_enc - 1:]
        xi = x + noise * sigmas[0]
        self.initialize(p)
        args = self._extra_args(p, conditioning, unconditional_conditioning, image_conditioning)
        return self.launch_sampling(t_enc + 1, lambda: sample_euler(self.model_wrap_cfg, xi, sigmas, args,
                                                                    self.callback_state))


def create_sampler(name, model):
    if name not in (None, "Euler"):
        raise ValueError(f"the double only has the Euler sampler, not {name!r}")
    return KDiffusionSampler(model)
