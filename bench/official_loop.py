"""The official Concept Sliders text-slider training loop, re-created to be timed next to ours on the same UNet.

Written from the official repository's facts, not its code (``rohitgandikota/sliders`` at ``a465294``:
``trainscripts/textsliders/train_lora.py`` and ``train_lora_xl.py``, ``train_util.py``, ``lora.py``,
``prompt_util.py``, ``model_util.py``, ``config_util.py``, shipped ``data/config*.yaml`` and ``prompts*.yaml``;
summarised in ``shared/reference/official-sliders.md`` §1–2). One iteration does what theirs does, call for call:

1. ``set_timesteps(50)`` of a diffusers-default ``DDIMScheduler`` (scaled-linear betas 0.00085…0.012 in fp32,
   "leading" spacing, offset 0, ``set_alpha_to_one``, η = 0), rebuilt on the device every iteration;
   ``zero_grad``; one prompt pair drawn uniformly; k = ``randint(1, 50)`` ∈ 1…49.
2. Latents = ``randn(1, 4, H/8, W/8)`` on the CPU × ``init_noise_sigma`` (1), copied to the device in the
   weight dtype.
3. With the network entered (every LoRA multiplier 1): DDIM steps ``timesteps[0:k]`` of the 50-step schedule,
   each one batch-2 UNet call on ``cat([x, x])`` with embeddings ``[unconditional, target]`` and CFG 3, then a DDIM
   step (which reads ``alphas_cumprod`` on the CPU at the step's timestep: one host sync per step, as diffusers').
4. ``set_timesteps(1000)``; the label t = ``timesteps[int(k · 1000 / 50)]`` = 999 − 20k.
5. Network exited (multipliers 0; the LoRA layers still run): three no-grad batch-2 calls at guidance 1
   (``uncond + 1 · (cond − uncond)``) with ``[unconditional, positive]``, ``[unconditional, neutral]``,
   ``[unconditional, unconditional]``.
6. Network entered: the same batch-2 call with ``[unconditional, target]``, with grad (both rows in the graph).
7. ``MSELoss(target_pred, neutral ± guidance · (positive − unconditional))`` (+ enhance, − erase) in the weight
   dtype; ``loss.item()`` (their progress bar); backward; ``AdamW`` (lr 2e-4, torch defaults: weight decay 0.01)
   step; ``ConstantLR`` step; ``torch.cuda.empty_cache()`` + ``gc.collect()`` (their ``flush()``).

The names are the official YAML's: ``unconditional`` is the negative concept c−, not the empty prompt.

The LoRA is the official ``LoRAModule`` design: ``lora_down``/``lora_up`` (``Linear``, or for convs a ``Conv2d`` with
the original kernel/stride/padding and a 1×1 up, rank clipped to min(rank, in, out)), ``lora_down``
kaiming-uniform(a=1), ``lora_up`` zeros, scale = alpha / rank, an ``alpha`` buffer; attached by replacing the
wrapped module's ``forward`` with ``org_forward(x) + up(down(x)) · multiplier · scale``. Layers are chosen the
official way — the ``Linear``/``Conv2d`` descendants of the attention, resnet and sampler modules (``c3lier``),
whose *parent* module name passes the training method's filter (``noxattn``: no ``attn2``, no ``time_embed``),
deduplicated by ``lora_unet_<path>`` name — on the LDM/sgm module tree the webui runs: diffusers' ``Attention``,
``ResnetBlock2D``, ``Downsample2D``, ``Upsample2D`` are ldm/sgm's ``CrossAttention``, ``ResBlock``, ``Downsample``,
``Upsample``. That gives the official counts: 150 layers on SD1.x, 346 on SDXL. LoRA weights are in the weight
dtype (bf16 by default: no fp32 master copy), as theirs.

Precision: the official loop runs the whole UNet in the weight dtype, without autocast. ldm's UNet normalises in
fp32 (``GroupNorm32``) and feeds an fp32 timestep embedding to ``time_embed``, which fail on half weights without
autocast; while the loop runs (half weights only) they are made to do what diffusers' UNet does: group norm in
the weight dtype and the embedding cast to it. Everything is restored on exit, so the same UNet object can then
be trained by our trainer.

SDXL (``train_lora_xl.py``): embeddings are both encoders' penultimate hidden states concatenated plus the
second's pooled output; ``add_time_ids`` = (H, W, 0, 0, H, W); diffusers' UNet embeds them inside every call
(256-wide sinusoids each, after the pooled vector): here that vector is built per call and passed as sgm's ``y``.
``predict_noise_xl`` also computes ``rescale_noise_cfg(guidance_rescale=0.7)`` and discards it; so does this.

Text encoders are used once before the loop (embeddings cached). SD1's script deletes its text encoder; the XL
script's deletion frees nothing (lists still hold them), and no VAE is loaded by either: during the loop the VAE
(and for SD1 the text encoder) wait on the CPU, the XL encoders stay where they are.

Not re-created: tokenizers (the bench model's own text encoders are used), wandb/logging, checkpoint saves (every
500 iterations), xformers (the bench's attention is used for both loops: PyTorch SDPA by default, as in the
reference measurement), dynamic resolution/crops (off in the shipped configs).

    from bench.official_loop import run_official
    result = run_official(model, iterations=10)   # a webui-style model (bench/common/toy_diffusion, train_speed)
    result.s_it, result.s_it_at(25), result.peak_gib
"""

from __future__ import annotations

import contextlib
import gc
import math
import resource
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch

# ------------------------------------------------------------------------------------ configuration


@dataclass(frozen=True)
class OfficialPrompt:
    """One entry of the official prompts YAML (``prompt_util.PromptSettings``), with its names."""

    target: str
    positive: str
    unconditional: str  # the negative concept c−
    neutral: str
    guidance_scale: float = 4.0  # η
    action: str = "enhance"  # or "erase"


# The shipped prompts.yaml / prompts-xl.yaml: the age slider, two entries.
SHIPPED_AGE = (
    OfficialPrompt("male person", "male person, very old", "male person, very young", "male person"),
    OfficialPrompt("female person", "female person, very old", "female person, very young", "female person"),
)


@dataclass(frozen=True)
class OfficialConfig:
    """The shipped ``data/config.yaml`` / ``config-xl.yaml`` values that shape an iteration."""

    rank: int = 4
    alpha: float = 1.0
    network_type: str = "c3lier"  # "lierla": attention only
    training_method: str = "noxattn"
    lr: float = 2e-4
    max_denoising_steps: int = 50
    denoise_guidance: float = 3.0  # hard-coded in train_lora(_xl).py's diffusion() call
    resolution: int = 512
    batch_size: int = 1


TRAIN_TIMESTEPS = 1000

# ------------------------------------------------------------------------------------ DDIM scheduler


class OfficialDDIM:
    """diffusers' ``DDIMScheduler`` as ``model_util.create_noise_scheduler("ddim")`` configures it.

    beta_start 0.00085, beta_end 0.012, "scaled_linear" (linspace of square roots in fp32, squared),
    1000 train steps, clip_sample False, and diffusers' defaults: set_alpha_to_one True, steps_offset 0,
    timestep_spacing "leading", ε-prediction, η = 0. ``alphas_cumprod`` stays on the CPU, as diffusers'.
    """

    init_noise_sigma = 1.0

    def __init__(self, beta_start: float = 0.00085, beta_end: float = 0.012):
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, TRAIN_TIMESTEPS, dtype=torch.float32) ** 2
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        self.final_alpha_cumprod = torch.tensor(1.0)
        self.num_inference_steps = TRAIN_TIMESTEPS
        self.timesteps = torch.arange(TRAIN_TIMESTEPS - 1, -1, -1)

    def set_timesteps(self, num_inference_steps: int, device: torch.device | str | None = None) -> None:
        step_ratio = TRAIN_TIMESTEPS // num_inference_steps  # "leading": 0, r, 2r, …, reversed
        timesteps = (np.arange(0, num_inference_steps) * step_ratio).round()[::-1].copy().astype(np.int64)
        self.timesteps = torch.from_numpy(timesteps).to(device)
        self.num_inference_steps = num_inference_steps

    def step(self, eps: torch.Tensor, timestep: torch.Tensor | int, sample: torch.Tensor) -> torch.Tensor:
        """x_t → x_{t−Δ} (deterministic DDIM). Reading the CPU schedule at a device timestep waits for the GPU."""
        prev = int(timestep) - TRAIN_TIMESTEPS // self.num_inference_steps
        alpha_t = self.alphas_cumprod[int(timestep)]
        alpha_prev = self.alphas_cumprod[prev] if prev >= 0 else self.final_alpha_cumprod
        x0 = (sample - (1 - alpha_t) ** 0.5 * eps) / alpha_t**0.5
        direction = (1 - alpha_prev) ** 0.5 * eps  # η = 0: no variance term
        return alpha_prev**0.5 * x0 + direction


# -------------------------------------------------------------------------------------------- LoRA

ATTENTION_CLASSES = ("CrossAttention", "MemoryEfficientCrossAttention")  # diffusers' Attention
CONV_CLASSES = ("ResBlock", "Downsample", "Upsample")  # ResnetBlock2D, Downsample2D, Upsample2D (c3lier)
LEAF_CLASSES = ("Linear", "Conv2d", "LoRACompatibleLinear", "LoRACompatibleConv")
LORA_PREFIX = "lora_unet"


def _method_skips(method: str, name: str) -> bool:
    """Whether ``lora.py``'s ``training_method`` filter skips the parent module ``name``."""
    if method == "noxattn":
        return "attn2" in name or "time_embed" in name
    if method == "innoxattn":
        return "attn2" in name
    if method == "selfattn":
        return "attn1" not in name
    if method in ("xattn", "xattn-strict"):
        return "attn2" not in name
    if method == "full":
        return False
    raise NotImplementedError(f"train_method: {method} is not implemented here")


def official_lora_targets(unet: torch.nn.Module, training_method: str = "noxattn",
                          network_type: str = "c3lier") -> dict[str, tuple[str, torch.nn.Module]]:
    """``{module path: (lora_name, module)}`` of the layers ``LoRANetwork.create_modules`` wraps."""
    classes = ATTENTION_CLASSES + (CONV_CLASSES if network_type == "c3lier" else ())
    targets: dict[str, tuple[str, torch.nn.Module]] = {}
    names: set[str] = set()
    for name, module in unet.named_modules():
        if _method_skips(training_method, name) or type(module).__name__ not in classes:
            continue
        for child_name, child in module.named_modules():
            if type(child).__name__ not in LEAF_CLASSES:
                continue
            if training_method == "xattn-strict" and "out" in child_name:
                continue
            lora_name = f"{LORA_PREFIX}.{name}.{child_name}".replace(".", "_")
            if lora_name not in names:
                names.add(lora_name)
                targets[f"{name}.{child_name}"] = (lora_name, child)
    return targets


class OfficialLoRAModule(torch.nn.Module):
    """``lora.LoRAModule``: wraps one Linear/Conv2d by replacing its ``forward``."""

    def __init__(self, lora_name: str, org_module: torch.nn.Module, multiplier: float = 1.0, rank: int = 4,
                 alpha: float = 1.0):
        super().__init__()
        self.lora_name = lora_name
        self.lora_dim = rank
        if isinstance(org_module, torch.nn.Linear):
            self.lora_down = torch.nn.Linear(org_module.in_features, rank, bias=False)
            self.lora_up = torch.nn.Linear(rank, org_module.out_features, bias=False)
        else:
            in_dim, out_dim = org_module.in_channels, org_module.out_channels
            self.lora_dim = min(rank, in_dim, out_dim)
            self.lora_down = torch.nn.Conv2d(in_dim, self.lora_dim, org_module.kernel_size, org_module.stride,
                                             org_module.padding, bias=False)
            self.lora_up = torch.nn.Conv2d(self.lora_dim, out_dim, (1, 1), (1, 1), bias=False)
        alpha = rank if not alpha else alpha
        self.scale = alpha / self.lora_dim
        self.register_buffer("alpha", torch.tensor(alpha))
        torch.nn.init.kaiming_uniform_(self.lora_down.weight, a=1)
        torch.nn.init.zeros_(self.lora_up.weight)
        self.multiplier = multiplier
        self._org = [org_module]  # a list: not a submodule (theirs drops the reference once applied)
        self.org_forward = None

    def apply_to(self) -> None:
        org = self._org[0]
        self.org_forward = org.forward
        org.forward = self.forward

    def remove(self) -> None:
        org = self._org[0]
        if org.__dict__.get("forward") == self.forward:
            del org.forward  # back to the class's forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.org_forward(x) + self.lora_up(self.lora_down(x)) * self.multiplier * self.scale


class OfficialLoRANetwork(torch.nn.Module):
    """``lora.LoRANetwork``: the wrapped layers, and a context manager that sets every multiplier to 1 inside, 0 after."""

    def __init__(self, unet: torch.nn.Module, rank: int = 4, multiplier: float = 1.0, alpha: float = 1.0,
                 train_method: str = "noxattn", network_type: str = "c3lier"):
        super().__init__()
        self.lora_scale = 1.0
        self.unet_loras: list[OfficialLoRAModule] = []
        self.paths: list[str] = []
        for path, (lora_name, module) in official_lora_targets(unet, train_method, network_type).items():
            lora = OfficialLoRAModule(lora_name, module, multiplier, rank, alpha)
            lora.apply_to()
            self.add_module(lora_name, lora)
            self.unet_loras.append(lora)
            self.paths.append(path)

    def prepare_optimizer_params(self) -> list[dict]:
        return [{"params": [p for lora in self.unet_loras for p in lora.parameters()]}]

    def remove(self) -> None:
        for lora in self.unet_loras:
            lora.remove()

    def __enter__(self):
        for lora in self.unet_loras:
            lora.multiplier = 1.0 * self.lora_scale

    def __exit__(self, *exc) -> None:
        for lora in self.unet_loras:
            lora.multiplier = 0


# -------------------------------------------------------------------------------------------- loss


def official_loss_target(positive: torch.Tensor, neutral: torch.Tensor, unconditional: torch.Tensor,
                         guidance_scale: float, action: str = "enhance") -> torch.Tensor:
    """``PromptEmbedsPair._enhance`` / ``_erase``: neutral ± η · (positive − unconditional)."""
    if action == "enhance":
        return neutral + guidance_scale * (positive - unconditional)
    if action == "erase":
        return neutral - guidance_scale * (positive - unconditional)
    raise ValueError("action must be erase or enhance")


# ------------------------------------------------------------------------------------ model plumbing


def sinusoidal_embedding(values: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """diffusers' ``get_timestep_embedding(flip_sin_to_cos=True, downscale_freq_shift=0)``: [cos, sin], fp32."""
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=values.device) / half
    angles = values[:, None].float() * torch.exp(exponent)[None, :]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


@dataclass
class PromptEmbeds:
    text: torch.Tensor  # [1, 77, C]
    pooled: torch.Tensor | None = None  # SDXL: [1, 1280]


@torch.no_grad()
def encode_official(model, prompts: list[str], dtype: torch.dtype) -> dict[str, PromptEmbeds]:
    """Each distinct prompt encoded once, one at a time, as the official caches them.

    SD1: the text encoder's last hidden state (what the bench model's ``cond_stage_model`` returns).
    SDXL: the two text embedders' penultimate hidden states concatenated, and the second's pooled output."""
    cache: dict[str, PromptEmbeds] = {}
    for prompt in prompts:
        if prompt in cache:
            continue
        if getattr(model, "is_sdxl", False):
            hidden, pooled = [], None
            for embedder in model.conditioner.embedders:
                if getattr(embedder, "input_key", None) != "txt":
                    continue
                out = embedder([prompt])
                if isinstance(out, tuple):
                    out, pooled = out
                hidden.append(out)
            cache[prompt] = PromptEmbeds(torch.cat(hidden, dim=-1).to(dtype), pooled.to(dtype))
        else:
            cache[prompt] = PromptEmbeds(model.cond_stage_model([prompt]).to(dtype))
    return cache


@contextlib.contextmanager
def _whole_unet_in(unet: torch.nn.Module, dtype: torch.dtype):
    """Half weights without autocast, as diffusers' UNet: group norm in the weight dtype, timestep embedding cast."""
    if dtype == torch.float32:
        yield
        return
    from ldm.modules.diffusionmodules.util import GroupNorm32

    saved_dtype = unet.__dict__.get("dtype")
    group_norm_forward = GroupNorm32.forward
    hook = unet.time_embed.register_forward_pre_hook(lambda _module, args: (args[0].to(dtype), *args[1:]))
    unet.dtype = dtype  # ldm: h = x.type(self.dtype)
    GroupNorm32.forward = torch.nn.GroupNorm.forward
    try:
        yield
    finally:
        GroupNorm32.forward = group_norm_forward
        hook.remove()
        if saved_dtype is None:
            unet.__dict__.pop("dtype", None)
        else:
            unet.dtype = saved_dtype


@contextlib.contextmanager
def _on_cpu(modules: list[torch.nn.Module]):
    """Modules the official loop has no copy of (VAE; SD1's deleted text encoder), off the device meanwhile."""
    moved = []
    for module in modules:
        params = list(module.parameters())
        if params and params[0].device.type == "cuda":
            moved.append((module, params[0].device))
            module.to("cpu")
    try:
        yield
    finally:
        for module, device in moved:
            module.to(device)


# --------------------------------------------------------------------------------------------- loop


@dataclass
class IterationInfo:
    k: int  # denoising steps before the training point
    timestep: int  # the label the UNet gets (999 − 20k)
    loss: float
    prompt: OfficialPrompt


class OfficialTextSliderLoop:
    """The official text-slider training loop on a webui-style model's UNet (a context manager: attaches, restores).

    ``model`` is a bench model (``bench/common/toy_diffusion`` or ``bench/train_speed.build_model``): an SD1/SD2
    ``LatentDiffusion``-like or an SDXL ``DiffusionEngine``-like object, already on its device and dtype.
    ``seed`` seeds a CPU generator for the draws the official takes from torch's global RNG each iteration (pair,
    k, noise, in that order), and the LoRA's initialisation (the global RNG, forked so the caller's is left alone).
    """

    def __init__(self, model, prompts=SHIPPED_AGE, config: OfficialConfig = OfficialConfig(), seed: int = 0):
        self.model = model
        self.unet: torch.nn.Module = model.model.diffusion_model
        first = next(self.unet.parameters())
        self.device, self.dtype = first.device, first.dtype
        self.sdxl = bool(getattr(model, "is_sdxl", False))
        self.prompts = list(prompts)
        self.config = config
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)  # pair, k and noise, in the official's order
        self.scheduler = OfficialDDIM()
        self.criteria = torch.nn.MSELoss()
        self.unet_calls = 0
        self.unet_rows = 0
        self._stack: contextlib.ExitStack | None = None

    # ---------------------------------------------------------------- setup / teardown

    def __enter__(self) -> OfficialTextSliderLoop:
        stack = contextlib.ExitStack()
        try:
            texts = [text for p in self.prompts for text in (p.target, p.positive, p.neutral, p.unconditional)]
            self.cache = encode_official(self.model, texts, self.dtype)
            offload = [self.model.first_stage_model] if hasattr(self.model, "first_stage_model") else []
            if not self.sdxl:
                offload.append(self.model.cond_stage_model)
            stack.enter_context(_on_cpu(offload))
            stack.enter_context(_whole_unet_in(self.unet, self.dtype))
            if self.sdxl:
                first_linear = self.unet.label_emb[0][0]
                pooled_dim = next(iter(self.cache.values())).pooled.shape[-1]
                self.time_id_dim = (first_linear.in_features - pooled_dim) // 6  # 256 for SDXL
            with torch.random.fork_rng(devices=[]):  # the official init draws from the global RNG; seeded here
                torch.manual_seed(self.seed)
                self.network = OfficialLoRANetwork(self.unet, self.config.rank, 1.0, self.config.alpha,
                                                   self.config.training_method, self.config.network_type)
            stack.callback(self.network.remove)
            self.network.to(self.device, dtype=self.dtype)
            self.optimizer = torch.optim.AdamW(self.network.prepare_optimizer_params(), lr=self.config.lr)
            self.lr_scheduler = torch.optim.lr_scheduler.ConstantLR(self.optimizer, factor=1)
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        return self

    def __exit__(self, *exc) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack = None
        self.optimizer = self.lr_scheduler = self.network = self.cache = None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # ---------------------------------------------------------------- one UNet call

    def _embeddings(self, unconditional: str, conditional: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``concat_embeddings``: [unconditional; conditional] (batch size 1 → 2 rows)."""
        a, b = self.cache[unconditional], self.cache[conditional]
        text = torch.cat([a.text, b.text]).repeat_interleave(self.config.batch_size, dim=0)
        pooled = None
        if self.sdxl:
            pooled = torch.cat([a.pooled, b.pooled]).repeat_interleave(self.config.batch_size, dim=0)
        return text, pooled

    def predict_noise(self, timestep: torch.Tensor, latents: torch.Tensor, unconditional: str, conditional: str,
                      guidance_scale: float) -> torch.Tensor:
        """``train_util.predict_noise(_xl)``: one batch-2 UNet call (latents doubled) and CFG."""
        text, pooled = self._embeddings(unconditional, conditional)
        latent_model_input = torch.cat([latents] * 2)  # scale_model_input: identity for DDIM
        t = timestep[None].to(self.device).expand(latent_model_input.shape[0])
        kwargs = {}
        if self.sdxl:  # diffusers' UNet: add_time_proj(time_ids) after the pooled text, per call
            time_ids = torch.cat([self.add_time_ids] * 2).repeat_interleave(self.config.batch_size, dim=0)
            time_embeds = sinusoidal_embedding(time_ids.flatten(), self.time_id_dim).reshape(len(time_ids), -1)
            kwargs["y"] = torch.cat([pooled, time_embeds.to(pooled.dtype)], dim=-1).to(self.dtype)
        noise_pred = self.unet(latent_model_input, timesteps=t, context=text, **kwargs)
        self.unet_calls += 1
        self.unet_rows += latent_model_input.shape[0]
        noise_pred_uncond, noise_pred_text = noise_pred.chunk(2)
        guided = noise_pred_uncond + guidance_scale * (noise_pred_text - noise_pred_uncond)
        if self.sdxl:  # rescale_noise_cfg(noise_pred, noise_pred_text, 0.7): computed, then discarded
            dims = list(range(1, noise_pred.ndim))
            std_text = noise_pred_text.std(dim=dims, keepdim=True)
            std_cfg = noise_pred.std(dim=dims, keepdim=True)
            rescaled = noise_pred * (std_text / std_cfg)
            _ = 0.7 * rescaled + 0.3 * noise_pred
        return guided

    @torch.no_grad()
    def diffusion(self, latents: torch.Tensor, unconditional: str, conditional: str, total_timesteps: int,
                  guidance_scale: float) -> torch.Tensor:
        """``train_util.diffusion(_xl)``: DDIM steps ``timesteps[0:total_timesteps]`` with CFG."""
        for timestep in self.scheduler.timesteps[0:total_timesteps]:
            noise_pred = self.predict_noise(timestep, latents, unconditional, conditional, guidance_scale)
            latents = self.scheduler.step(noise_pred, timestep, latents)
        return latents

    # ---------------------------------------------------------------- one iteration

    def iteration(self, k: int | None = None) -> IterationInfo:
        """One official training iteration; ``k`` forces the denoising step count (default: drawn from 1…49)."""
        config = self.config
        steps = config.max_denoising_steps
        with torch.no_grad():
            self.scheduler.set_timesteps(steps, device=self.device)
            self.optimizer.zero_grad()
            pair = self.prompts[int(torch.randint(0, len(self.prompts), (1,), generator=self.generator))]
            drawn = int(torch.randint(1, steps, (1,), generator=self.generator))
            k = drawn if k is None else k
            side = config.resolution // 8
            noise = torch.randn((config.batch_size, 4, side, side), generator=self.generator, device="cpu")
            latents = (noise * self.scheduler.init_noise_sigma).to(self.device, dtype=self.dtype)
            if self.sdxl:  # get_add_time_ids: original size, crop top-left, target size (no dynamic crops)
                size = [config.resolution, config.resolution]
                self.add_time_ids = torch.tensor([size + [0, 0] + size], dtype=self.dtype).to(self.device)

            with self.network:
                denoised = self.diffusion(latents, pair.unconditional, pair.target, k, config.denoise_guidance)

            self.scheduler.set_timesteps(TRAIN_TIMESTEPS)
            current_timestep = self.scheduler.timesteps[int(k * TRAIN_TIMESTEPS / steps)]

            positive = self.predict_noise(current_timestep, denoised, pair.unconditional, pair.positive, 1)
            neutral = self.predict_noise(current_timestep, denoised, pair.unconditional, pair.neutral, 1)
            unconditional = self.predict_noise(current_timestep, denoised, pair.unconditional, pair.unconditional, 1)

        with self.network:
            target = self.predict_noise(current_timestep, denoised, pair.unconditional, pair.target, 1)

        loss = self.criteria(target, official_loss_target(positive, neutral, unconditional, pair.guidance_scale,
                                                          pair.action))
        loss_value = loss.item()  # the progress bar's "Loss*1k"
        loss.backward()
        self.optimizer.step()
        self.lr_scheduler.step()
        del positive, neutral, unconditional, target, latents, loss
        if self.device.type == "cuda":  # flush()
            torch.cuda.empty_cache()
        gc.collect()
        return IterationInfo(k=k, timestep=int(current_timestep), loss=loss_value, prompt=pair)


# ------------------------------------------------------------------------------------------ timing


@dataclass
class OfficialResult:
    seconds: list[float] = field(default_factory=list)  # every iteration, in order
    ks: list[int] = field(default_factory=list)
    calls: list[int] = field(default_factory=list)  # UNet calls per iteration
    rows: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    skipped: int = 0  # untimed warm-up iterations at the start
    peak_gib: float = 0.0  # CUDA: peak allocated during the loop; CPU: the process's peak RSS
    lora_modules: int = 0
    lora_params: int = 0

    def timed(self, values: list) -> list:
        return values[self.skipped:]

    @property
    def s_it(self) -> float:
        timed = self.timed(self.seconds)
        return sum(timed) / len(timed)

    @property
    def mean_k(self) -> float:
        timed = self.timed(self.ks)
        return sum(timed) / len(timed)

    def s_it_at(self, k: float) -> float | None:
        """Least-squares s = a + b·k over the timed iterations, at ``k``; None without three of them and two ks."""
        return fit_at_k(list(zip(self.timed(self.seconds), self.timed(self.ks), strict=True)), k)


def fit_at_k(samples: list[tuple[float, int]], k: float) -> float | None:
    """Least-squares s = a + b·k over (seconds, k) samples, evaluated at ``k``; None without three samples and two
    distinct k (a ratio of means at different k would mislead)."""
    if len(samples) < 3 or len({kk for _, kk in samples}) < 2:
        return None
    n = len(samples)
    mean_s = sum(s for s, _ in samples) / n
    mean_k = sum(kk for _, kk in samples) / n
    slope = (sum((kk - mean_k) * (s - mean_s) for s, kk in samples)
             / sum((kk - mean_k) ** 2 for _, kk in samples))
    return mean_s + slope * (k - mean_k)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_rss_gib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (2**30 if sys.platform == "darwin" else 2**20)


def run_official(model, iterations: int, prompts=SHIPPED_AGE, config: OfficialConfig = OfficialConfig(),
                 seed: int = 0, skip: int | None = None, ks: list[int] | None = None) -> OfficialResult:
    """Times ``iterations`` official iterations on ``model`` (left as found afterwards).

    ``skip`` untimed warm-up iterations (default: 0 for one iteration, 1 for up to 3, else 2, as
    ``bench/train_speed.py`` skips its own); ``ks`` forces each iteration's k (default: drawn as the official)."""
    skip = (0 if iterations == 1 else 1 if iterations <= 3 else 2) if skip is None else skip
    result = OfficialResult(skipped=skip)
    loop = OfficialTextSliderLoop(model, prompts, config, seed)
    device = loop.device
    with loop:
        result.lora_modules = len(loop.network.unet_loras)
        result.lora_params = sum(p.numel() for p in loop.network.parameters())
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for i in range(iterations):
            calls, rows = loop.unet_calls, loop.unet_rows
            _sync(device)
            began = time.perf_counter()
            info = loop.iteration(None if ks is None else ks[i])
            _sync(device)
            result.seconds.append(time.perf_counter() - began)
            result.ks.append(info.k)
            result.losses.append(info.loss)
            result.calls.append(loop.unet_calls - calls)
            result.rows.append(loop.unet_rows - rows)
        result.peak_gib = (torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda"
                           else _peak_rss_gib())
    return result
