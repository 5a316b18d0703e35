"""A toy text-to-image model shaped like the webui's loaded SD1 model, in pixel space (32×32×3).

``ToyPixelDiffusion`` has the public surface of ldm's ``LatentDiffusion`` as the webui loads it, so
``ModelBackend`` (and the slider trainer/engine) use it as they use a real checkpoint:

* ``model.diffusion_model``: ldm's real ``UNetModel`` (the code the webui runs), small config, behind
  a ``DiffusionWrapper`` (``diffusion_model(x, t, context=cat(c_crossattn, 1))``);
* ``cond_stage_model``: a small transformers ``CLIPTextModel`` (``.transformer``) with the real CLIP
  tokenizer (``.tokenizer``, see ``tokenizer.py``), returning ``last_hidden_state`` ``[B, 77, 128]``;
* ``get_learned_conditioning``, ``apply_model`` (ε-prediction), ``alphas_cumprod`` (SD's scaled-linear
  schedule, 1000 steps), ``parameterization = "eps"``.

Pixel space: there is no VAE. ``encode_first_stage`` / ``get_first_stage_encoding`` /
``decode_first_stage`` are identities on images in [−1, 1] (``scale_factor = 1``), ``latent_channels
= 3`` and ``latent_scale = 1`` (image pixels per latent pixel; ``ModelBackend`` reads it, 8 for SD).
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable

import numpy as np
import torch

from .tokenizer import build_clip_tokenizer

IMAGE_SIZE = 32
TEXT_WIDTH = 128
MAX_LENGTH = 77
UNET_CONFIG = dict(image_size=IMAGE_SIZE, in_channels=3, out_channels=3, model_channels=32, channel_mult=[1, 2, 2],
                   num_res_blocks=2, attention_resolutions=[2, 4], num_head_channels=16,
                   use_spatial_transformer=True, transformer_depth=1, context_dim=TEXT_WIDTH, legacy=False)
TEXT_CONFIG = dict(vocab_size=49408, hidden_size=TEXT_WIDTH, intermediate_size=256, num_hidden_layers=4,
                   num_attention_heads=4, max_position_embeddings=MAX_LENGTH, hidden_act="quick_gelu",
                   layer_norm_eps=1e-5, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
TOKEN_EMBEDDING = "cond_stage_model.transformer.embeddings.token_embedding.weight"
TOKEN_IDS, TOKEN_ROWS = "token_embedding.ids", "token_embedding.rows"


def scaled_linear_alphas_cumprod(num_timesteps: int = 1000) -> torch.Tensor:
    """SD's schedule as ldm computes it: betas = linspace(√0.00085, √0.012)², float64 cumprod → float32."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, num_timesteps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).to(torch.float32)


class DiffusionWrapper(torch.nn.Module):
    """ldm's ``DiffusionWrapper`` with ``conditioning_key="crossattn"``."""

    def __init__(self, diffusion_model: torch.nn.Module):
        super().__init__()
        self.diffusion_model = diffusion_model
        self.conditioning_key = "crossattn"

    def forward(self, x: torch.Tensor, t: torch.Tensor, c_concat: list | None = None,
                c_crossattn: list | None = None, c_adm=None) -> torch.Tensor:
        return self.diffusion_model(x, t, context=torch.cat(c_crossattn, 1))


class ToyCLIPEmbedder(torch.nn.Module):
    """ldm's ``FrozenCLIPEmbedder`` shape: ``.tokenizer`` + ``.transformer``; prompts → last hidden state."""

    def __init__(self, tokenizer_dir: str | os.PathLike | None = None):
        super().__init__()
        from transformers import CLIPTextConfig, CLIPTextModel

        self.tokenizer = build_clip_tokenizer(tokenizer_dir)
        self.transformer = CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))
        self.max_length = MAX_LENGTH

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        ids = self.tokenizer(list(prompts), truncation=True, max_length=self.max_length, padding="max_length",
                             return_tensors="pt").input_ids
        return ids.to(self.transformer.device)

    def forward(self, prompts: list[str]) -> torch.Tensor:
        return self.transformer(input_ids=self.tokenize(prompts)).last_hidden_state


class ToyPixelDiffusion(torch.nn.Module):
    """Webui-shaped SD1-style text-to-image model in pixel space (see the module docstring)."""

    is_sd1 = True
    is_sd2 = is_sdxl = is_ssd = is_sd3 = is_sdxl_inpaint = False
    lowvram = False
    latent_channels = 3
    latent_scale = 1  # image pixels per latent pixel (ModelBackend.latent_scale; SD's VAE: 8)
    cond_stage_key = "txt"
    parameterization = "eps"
    scale_factor = 1.0
    image_size = IMAGE_SIZE

    def __init__(self, tokenizer_dir: str | os.PathLike | None = None, seed: int = 0, **unet_overrides):
        super().__init__()
        from ldm.modules.diffusionmodules.openaimodel import UNetModel

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            with contextlib.redirect_stdout(io.StringIO()):  # ldm prints its attention blocks
                unet = UNetModel(**{**UNET_CONFIG, **unet_overrides})
            self.model = DiffusionWrapper(unet)
            self.cond_stage_model = ToyCLIPEmbedder(tokenizer_dir)
        self.num_timesteps = 1000
        self.register_buffer("alphas_cumprod", scaled_linear_alphas_cumprod(self.num_timesteps))

    @property
    def device(self) -> torch.device:
        return next(self.model.diffusion_model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.diffusion_model.parameters()).dtype

    # ---------------------------------------------------------------------------- LatentDiffusion API
    def get_learned_conditioning(self, c: list[str]) -> torch.Tensor:
        return self.cond_stage_model(c)

    def apply_model(self, x_noisy: torch.Tensor, t: torch.Tensor, cond, return_ids: bool = False) -> torch.Tensor:
        if not isinstance(cond, dict):
            cond = {"c_crossattn": cond if isinstance(cond, list) else [cond]}
        return self.model(x_noisy, t, **cond)

    def encode_first_stage(self, x: torch.Tensor) -> torch.Tensor:
        """Pixel space: the "latent" is the image itself, in [−1, 1]."""
        return x

    def get_first_stage_encoding(self, encoder_posterior: torch.Tensor) -> torch.Tensor:
        return self.scale_factor * encoder_posterior

    def decode_first_stage(self, z: torch.Tensor) -> torch.Tensor:
        return z / self.scale_factor

    # --------------------------------------------------------------------------------- weights
    def save(self, path: str | os.PathLike, dtype: torch.dtype | None = None,
             token_ids: list[int] | None = None) -> None:
        """UNet (``model.diffusion_model.*``) and text model (``cond_stage_model.transformer.*``) as safetensors;
        ``dtype`` (e.g. float16) shrinks the file, floating tensors only.

        ``token_ids``: keep only these rows of the 49408-row token embedding (the words the model was trained
        on; the others never received a gradient) as ``TOKEN_ROWS`` + ``TOKEN_IDS``; loading puts zeros in
        the rest. That is 25 MB of the 38 MB a full fp32 file takes."""
        from safetensors.torch import save_file

        tensors = {}
        for name, value in self.state_dict().items():
            if name == "alphas_cumprod":
                continue
            value = value.detach().cpu()
            if name == TOKEN_EMBEDDING and token_ids is not None:
                ids = torch.tensor(sorted(set(token_ids)), dtype=torch.int64)
                tensors[TOKEN_IDS] = ids
                name, value = TOKEN_ROWS, value[ids]
            if dtype is not None and value.is_floating_point():
                value = value.to(dtype)
            tensors[name] = value.contiguous()
        save_file(tensors, str(path), metadata={"format": "pt", "model": "ToyPixelDiffusion"})

    def load(self, path: str | os.PathLike) -> ToyPixelDiffusion:
        from safetensors.torch import load_file

        state = load_file(str(path))
        if TOKEN_IDS in state:
            ids, rows = state.pop(TOKEN_IDS), state.pop(TOKEN_ROWS)
            embedding = torch.zeros(TEXT_CONFIG["vocab_size"], TEXT_WIDTH, dtype=rows.dtype)
            embedding[ids] = rows
            state[TOKEN_EMBEDDING] = embedding
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if k != "alphas_cumprod"]
        if missing or unexpected:
            raise ValueError(f"{path}: missing {missing[:5]}…, unexpected {unexpected[:5]}…")
        return self

    @classmethod
    def from_file(cls, path: str | os.PathLike, tokenizer_dir=None, device="cpu") -> ToyPixelDiffusion:
        return cls(tokenizer_dir).load(path).to(device).eval().requires_grad_(False)

    # --------------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(self, prompts: list[str], steps: int = 20, guidance: float = 4.0, seed: int = 0,
               negative: str = "", noise: torch.Tensor | None = None,
               on_step: Callable[[int, int], None] | None = None,
               switch: tuple[int, list[str]] | None = None,
               adjust: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
               ) -> np.ndarray:
        """DDIM (η=0) with classifier-free guidance → uint8 ``N×32×32×3``.

        ``noise`` (``N×3×32×32``) replaces the seeded draw, e.g. to give several prompts the same start.
        The UNet sees the rows as [conditional ×N, unconditional ×N]. ``on_step(i, steps)`` runs before
        each step, as the webui's sampler tells the slider engine where it is (``SliderEngine.set_step``).
        ``switch = (i, later)``: from step i on, condition on the prompts ``later`` instead (the webui's prompt
        editing, ``[before:after:when]``). ``adjust(i, x, t, eps)`` returns the guided ε the step uses instead
        (a guidance method's own term, e.g. a slider's training target applied directly)."""
        from lib_sliders.training.schedule import ddim_step, ddim_timesteps

        device = self.device
        cond = self.get_learned_conditioning(list(prompts))
        uncond = self.get_learned_conditioning([negative] * len(prompts))
        if noise is None:
            generator = torch.Generator().manual_seed(seed)
            noise = torch.randn(len(prompts), 3, self.image_size, self.image_size, generator=generator)
        x = noise.to(device)
        timesteps = ddim_timesteps(steps, self.num_timesteps).tolist()
        acp = self.alphas_cumprod.to(device)
        for i, t in enumerate(timesteps):
            if on_step is not None:
                on_step(i, len(timesteps))
            if switch is not None and i == switch[0]:
                cond = self.get_learned_conditioning(list(switch[1]))
            tt = torch.full((len(prompts),), t, device=device, dtype=torch.long)
            eps_c, eps_u = self.apply_model(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([cond, uncond])).chunk(2)
            eps = eps_u + guidance * (eps_c - eps_u)
            if adjust is not None:
                eps = adjust(i, x, tt, eps)
            a_next = acp[timesteps[i + 1]] if i + 1 < len(timesteps) else torch.tensor(1.0, device=device)
            x = ddim_step(x, eps, acp[t], a_next)
        images = ((self.decode_first_stage(x).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return images.permute(0, 2, 3, 1).cpu().numpy()
