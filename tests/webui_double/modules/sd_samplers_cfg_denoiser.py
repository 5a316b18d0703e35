"""``CFGDenoiser``: one classifier-free-guidance step over a whole batch, with the webui's row layout.

Rows sent to the UNet: image i's latent once per ``AND`` sub-prompt (cond rows, image order), then every
image's latent once more (uncond rows). ``on_cfg_denoiser`` callbacks see that batch first; then either
one UNet call (``opts.batch_cond_uncond``) or consecutive chunks of ``batch_size`` rows. When the prompt and
the negative prompt have different token counts (long prompts), the cond rows go first in chunks and the
uncond rows in a call of their own.
"""

from __future__ import annotations

import torch
from modules import prompt_parser
from modules.script_callbacks import CFGDenoiserParams, cfg_denoiser_callback
from modules.sd_samplers_common import InterruptedException
from modules.shared import opts, state


def catenate_conds(conds):
    return torch.cat(conds) if not isinstance(conds[0], dict) else {k: torch.cat([c[k] for c in conds]) for k in conds[0]}


def subscript_cond(cond, a, b):
    return cond[a:b] if not isinstance(cond, dict) else {k: v[a:b] for k, v in cond.items()}


class CFGDenoiser(torch.nn.Module):
    def __init__(self, sampler):
        super().__init__()
        self.sampler = sampler
        self.steps = None  # steps the user asked for
        self.total_steps = None  # denoiser calls the sampler will make
        self.step = 0  # denoiser calls made so far (exact, unlike state.sampling_step)
        self.p = None

    @property
    def inner_model(self):
        return self.sampler.model_wrap

    def combine_denoised(self, x_out, conds_list, uncond, cond_scale):
        denoised_uncond = x_out[-uncond.shape[0]:]
        denoised = torch.clone(denoised_uncond)
        for i, conds in enumerate(conds_list):
            for cond_index, weight in conds:
                denoised[i] += (x_out[cond_index] - denoised_uncond[i]) * (weight * cond_scale)
        return denoised

    def forward(self, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond):
        if state.interrupted or state.skipped:
            raise InterruptedException
        conds_list, tensor = prompt_parser.reconstruct_multicond_batch(cond, self.step)
        uncond = prompt_parser.reconstruct_cond_batch(uncond, self.step)
        batch_size = len(conds_list)
        repeats = [len(conds) for conds in conds_list]

        def cond_rows_then_all(values):
            return torch.cat([torch.stack([values[i]] * n) for i, n in enumerate(repeats)] + [values])

        x_in, sigma_in, image_cond_in = (cond_rows_then_all(v) for v in (x, sigma, image_cond))
        params = CFGDenoiserParams(x_in, image_cond_in, sigma_in, state.sampling_step, state.sampling_steps, tensor,
                                   uncond, self)
        cfg_denoiser_callback(params)
        x_in, image_cond_in, sigma_in = params.x, params.image_cond, params.sigma
        tensor, uncond = params.text_cond, params.text_uncond

        # "Skip early CFG" drops the uncond rows AFTER the callbacks saw the full batch.
        skip_uncond = opts.skip_early_cond != 0 and self.step / self.total_steps <= opts.skip_early_cond
        if skip_uncond:
            x_in, sigma_in = x_in[:-batch_size], sigma_in[:-batch_size]
            self.p.extra_generation_params["Skip Early CFG"] = opts.skip_early_cond

        def conditioning(c, image):
            return {"c_crossattn": [c], "c_concat": [image]}

        if tensor.shape[1] == uncond.shape[1] or skip_uncond:
            cond_in = tensor if skip_uncond else catenate_conds([tensor, uncond])
            if opts.batch_cond_uncond:
                x_out = self.inner_model(x_in, sigma_in, cond=conditioning(cond_in, image_cond_in))
            else:
                x_out = torch.zeros_like(x_in)
                for a in range(0, x_out.shape[0], batch_size):
                    b = a + batch_size
                    x_out[a:b] = self.inner_model(x_in[a:b], sigma_in[a:b],
                                                  cond=conditioning(subscript_cond(cond_in, a, b), image_cond_in[a:b]))
        else:
            # A prompt and a negative prompt of different lengths (75-token chunks; the "Pad prompt/negative
            # prompt" options are off by default): the cond rows in chunks of up to 2 × batch size (batch size
            # when batch_cond_uncond is off), then all uncond rows in one more call.
            x_out = torch.zeros_like(x_in)
            chunk = batch_size * 2 if opts.batch_cond_uncond else batch_size
            for a in range(0, tensor.shape[0], chunk):
                b = min(a + chunk, tensor.shape[0])
                x_out[a:b] = self.inner_model(x_in[a:b], sigma_in[a:b],
                                              cond=conditioning(subscript_cond(tensor, a, b), image_cond_in[a:b]))
            rows = uncond.shape[0]
            x_out[-rows:] = self.inner_model(x_in[-rows:], sigma_in[-rows:],
                                             cond=conditioning(uncond, image_cond_in[-rows:]))
        first_rows = [conds[0][0] for conds in conds_list]
        if skip_uncond:  # each image's first cond result stands in for its uncond result
            x_out = torch.cat([x_out, torch.cat([x_out[i:i + 1] for i in first_rows])])
            cond_scale = 1.0
        denoised = self.combine_denoised(x_out, conds_list, uncond, cond_scale)
        self.sampler.last_latent = torch.cat([x_out[i:i + 1] for i in first_rows])
        self.step += 1
        return denoised
