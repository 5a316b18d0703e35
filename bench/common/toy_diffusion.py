"""Doubles of the webui's loaded model objects (``shared.sd_model``) around the real tiny UNets.

The trainer runs on whatever the webui has loaded: an SD1/SD2 ``ldm…ddpm.LatentDiffusion`` or the
webui-extended SDXL ``sgm…DiffusionEngine``. Neither can be built in CI (``ldm.models`` needs
pytorch_lightning, ``sgm`` is not on PyPI, and both want real weights), so these classes reproduce
their public surface with the same attribute and method names and the same call paths:

* ``model.model`` is a wrapper whose ``forward`` does what ``DiffusionWrapper`` (SD1/SD2:
  ``diffusion_model(x, t, context=cat(c_crossattn, 1))``) or ``OpenAIWrapper`` (SDXL:
  ``diffusion_model(x, timesteps=t, context=c["crossattn"], y=c["vector"])``) do, around the real
  tiny UNets of ``tiny_models.build_unet``;
* ``apply_model``, ``get_learned_conditioning``, ``encode_first_stage``, ``get_first_stage_encoding``
  and ``decode_first_stage`` follow ldm's ``LatentDiffusion`` and the webui's ``sd_models_xl`` patches;
* ``first_stage_model`` is a tiny KL autoencoder built from ldm's real ``Encoder``/``Decoder``;
* the text encoders are deterministic toys (hashed word embeddings + one causal transformer layer)
  whose conditionings are compositional: prompts sharing words share most of their tokens.

Everything is seeded, frozen and in eval mode; ``make_toy_model`` builds one in well under a second.
"""

from __future__ import annotations

import contextlib
import io
import re
import zlib

import torch
from ldm.modules.diffusionmodules.model import Decoder, Encoder
from ldm.modules.diffusionmodules.util import extract_into_tensor, make_beta_schedule, timestep_embedding
from ldm.modules.distributions.distributions import DiagonalGaussianDistribution

from bench.common.tiny_models import TINY_CONFIGS, build_unet

MAX_LENGTH = 77  # CLIP's context: BOS + 75 tokens + EOS
VOCAB_BUCKETS = 4096
SIZE_EMBED_DIM = 8  # per scalar of the SDXL size conditionings (256 in the real model)
SCALE_FACTORS = {"sd1": 0.18215, "sd2": 0.18215, "sdxl": 0.13025}


def linear_alphas_cumprod(num_timesteps: int = 1000) -> torch.Tensor:
    """SD's "scaled linear" schedule, computed as ldm/sgm do (float64 cumprod, stored as float32)."""
    betas = torch.from_numpy(make_beta_schedule("linear", num_timesteps, linear_start=0.00085, linear_end=0.012))
    return torch.cumprod(1.0 - betas, dim=0).to(torch.float32)


def split_words(prompt: str) -> list[str]:
    """Lower-cased words of ``prompt``; whitespace and punctuation only separate them."""
    return re.findall(r"\w+", prompt.lower())


def word_bucket(word: str) -> int:
    # zlib.crc32 is stable across processes; Python's hash() of str is salted per process.
    return zlib.crc32(word.encode("utf-8")) % VOCAB_BUCKETS


# --------------------------------------------------------------------------------------------- text


class ToyTextEncoder(torch.nn.Module):
    """A CLIP-shaped toy text encoder: ``list[str]`` → ``[B, 77, width]`` (and optionally a pooled vector).

    Words map to hashed embeddings at positions 1..n (0 = BOS, the rest EOS/pad), plus a small positional
    embedding, then one causal transformer layer as in CLIP, so a word only changes its own position and
    the ones after it. ``pooled_dim`` adds a bias-free ``text_projection`` of the first EOS position,
    like OpenCLIP bigG's pooled output in SDXL.
    """

    input_key = "txt"  # the sgm conditioner feeds this key of its batch to the embedder

    def __init__(self, width: int, pooled_dim: int | None = None, num_heads: int = 4):
        super().__init__()
        self.width = width
        self.bos_id, self.eos_id = VOCAB_BUCKETS, VOCAB_BUCKETS + 1
        self.token_embedding = torch.nn.Embedding(VOCAB_BUCKETS + 2, width)
        self.positional_embedding = torch.nn.Parameter(0.1 * torch.randn(MAX_LENGTH, width))
        self.layer = torch.nn.TransformerEncoderLayer(
            width, num_heads if width % num_heads == 0 else 1, dim_feedforward=2 * width, dropout=0.0,
            batch_first=True,
        )
        causal = torch.triu(torch.ones(MAX_LENGTH, MAX_LENGTH, dtype=torch.bool), diagonal=1)
        self.register_buffer("causal_mask", causal, persistent=False)
        self.text_projection = torch.nn.Linear(width, pooled_dim, bias=False) if pooled_dim else None

    def tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids ``[B, 77]`` and the index of each prompt's first EOS token ``[B]`` (words past 75 are cut)."""
        ids = torch.full((len(prompts), MAX_LENGTH), self.eos_id, dtype=torch.long)
        ids[:, 0] = self.bos_id
        eos_index = torch.empty(len(prompts), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            buckets = [word_bucket(word) for word in split_words(prompt)][: MAX_LENGTH - 2]
            ids[row, 1 : 1 + len(buckets)] = torch.tensor(buckets, dtype=torch.long)
            eos_index[row] = 1 + len(buckets)
        device = self.token_embedding.weight.device
        return ids.to(device), eos_index.to(device)

    def forward(self, prompts: list[str]) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        ids, eos_index = self.tokenize(list(prompts))
        hidden = self.token_embedding(ids) + self.positional_embedding
        hidden = self.layer(hidden, src_mask=self.causal_mask, is_causal=True)
        if self.text_projection is None:
            return hidden
        pooled = self.text_projection(hidden[torch.arange(len(ids), device=ids.device), eos_index])
        return hidden, pooled


class ToySizeEmbedder(torch.nn.Module):
    """sgm's ``ConcatTimestepEmbedderND``: each scalar of a size tuple → a sinusoidal embedding, concatenated."""

    def __init__(self, input_key: str, outdim: int = SIZE_EMBED_DIM):
        super().__init__()
        self.input_key = input_key
        self.outdim = outdim

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        batch, count = values.shape
        embedded = timestep_embedding(values.reshape(-1), self.outdim)
        return embedded.reshape(batch, count * self.outdim)


class ToyConditioner(torch.nn.Module):
    """sgm's ``GeneralConditioner``: run every embedder on its key, file outputs by rank, concatenate.

    Embedders as in SDXL base: ``[0]`` CLIP-L (crossattn), ``[1]`` bigG (crossattn + pooled vector),
    ``[2..4]`` original size, crop top-left and target size (vector).
    """

    OUTPUT_DIM2KEYS = {2: "vector", 3: "crossattn"}
    KEY2CATDIM = {"vector": 1, "crossattn": 2}

    def __init__(self, context_dim: int, adm_in_channels: int):
        super().__init__()
        size_keys = ("original_size_as_tuple", "crop_coords_top_left", "target_size_as_tuple")
        pooled_dim = adm_in_channels - len(size_keys) * 2 * SIZE_EMBED_DIM
        if pooled_dim <= 0:
            raise ValueError(f"adm_in_channels={adm_in_channels} leaves no room for the pooled text vector")
        clip_l_width = context_dim * 3 // 8  # SDXL's 768 : 1280 split of its 2048 context
        self.embedders = torch.nn.ModuleList([
            ToyTextEncoder(clip_l_width),
            ToyTextEncoder(context_dim - clip_l_width, pooled_dim=pooled_dim),
            *(ToySizeEmbedder(key) for key in size_keys),
        ])

    def forward(self, batch: dict, force_zero_embeddings: list[str] | None = None) -> dict[str, torch.Tensor]:
        outputs: dict[str, list[torch.Tensor]] = {}
        for embedder in self.embedders:
            result = embedder(batch[embedder.input_key])
            for tensor in result if isinstance(result, tuple) else (result,):
                if embedder.input_key in (force_zero_embeddings or []):
                    tensor = torch.zeros_like(tensor)
                outputs.setdefault(self.OUTPUT_DIM2KEYS[tensor.dim()], []).append(tensor)
        return {key: torch.cat(tensors, dim=self.KEY2CATDIM[key]) for key, tensors in outputs.items()}


# ------------------------------------------------------------------------------------------ autoencoder


class ToyAutoencoderKL(torch.nn.Module):
    """ldm's ``AutoencoderKL`` (inference part) around the real ``Encoder``/``Decoder``, tiny widths.

    ldm's class is a LightningModule, so it is rebuilt here with the same submodule names. With
    ``sample_on_encode`` (sgm's ``AutoencodingEngine`` with a sampling ``DiagonalGaussianRegularizer``),
    ``encode`` returns a sampled tensor instead of the posterior.
    """

    def __init__(self, embed_dim: int = 4, sample_on_encode: bool = False, latent_std: float | None = None):
        super().__init__()
        config = dict(ch=32, out_ch=3, ch_mult=[1, 2, 2, 2], num_res_blocks=2, attn_resolutions=[], in_channels=3,
                      resolution=64, z_channels=4, double_z=True)
        with contextlib.redirect_stdout(io.StringIO()):  # ldm prints every attention block it makes
            self.encoder = Encoder(**config)
            self.decoder = Decoder(**config)
        self.quant_conv = torch.nn.Conv2d(2 * config["z_channels"], 2 * embed_dim, 1)
        self.post_quant_conv = torch.nn.Conv2d(embed_dim, config["z_channels"], 1)
        self.sample_on_encode = sample_on_encode
        with torch.no_grad():
            # Real VAEs have a near-deterministic posterior (tiny std); a fresh one has std ≈ 1, which would
            # bury the mean in sampling noise.
            self.quant_conv.bias[embed_dim:] = -8.0
            if latent_std is not None:
                self._calibrate_mean(embed_dim, latent_std)

    @torch.no_grad()
    def _calibrate_mean(self, embed_dim: int, latent_std: float) -> None:
        # scale_factor is chosen so that real latents × scale_factor have unit std; make the toy's do too
        # (measured on a fixed random probe image), so signal and noise mix in realistic proportions.
        probe = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
        mean = self.quant_conv(self.encoder(probe))[:, :embed_dim]
        gain = latent_std / mean.std().item()
        self.quant_conv.weight[:embed_dim] *= gain
        self.quant_conv.bias[:embed_dim] *= gain

    def encode(self, x: torch.Tensor) -> DiagonalGaussianDistribution | torch.Tensor:
        posterior = DiagonalGaussianDistribution(self.quant_conv(self.encoder(x)))
        return posterior.sample() if self.sample_on_encode else posterior

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z))


# -------------------------------------------------------------------------------------------- wrappers


class DiffusionWrapper(torch.nn.Module):
    """ldm's ``DiffusionWrapper`` with ``conditioning_key="crossattn"`` (the only one SD1/SD2 txt2img uses)."""

    def __init__(self, diffusion_model: torch.nn.Module, conditioning_key: str = "crossattn"):
        super().__init__()
        self.diffusion_model = diffusion_model
        self.conditioning_key = conditioning_key

    def forward(self, x: torch.Tensor, t: torch.Tensor, c_concat: list | None = None,
                c_crossattn: list | None = None, c_adm=None) -> torch.Tensor:
        if self.conditioning_key != "crossattn":
            raise NotImplementedError(f"toy DiffusionWrapper only does 'crossattn', not {self.conditioning_key!r}")
        return self.diffusion_model(x, t, context=torch.cat(c_crossattn, 1))


class OpenAIWrapper(torch.nn.Module):
    """sgm's ``OpenAIWrapper``: concat channels (if any), then ``diffusion_model(x, timesteps=, context=, y=)``."""

    def __init__(self, diffusion_model: torch.nn.Module):
        super().__init__()
        self.diffusion_model = diffusion_model
        self.conditioning_key = "crossattn"  # set by the webui's extend_sdxl

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: dict, **kwargs) -> torch.Tensor:
        x = torch.cat((x, c.get("concat", torch.Tensor([]).type_as(x))), dim=1)
        return self.diffusion_model(x, timesteps=t, context=c.get("crossattn"), y=c.get("vector"), **kwargs)


# ------------------------------------------------------------------------------------------------ models


class _ToyModelBase(torch.nn.Module):
    """What the webui adds to every loaded model: arch flags, schedule, device/dtype (LightningModule's)."""

    is_sd1 = is_sd2 = is_sdxl = False
    is_ssd = is_sd3 = is_sdxl_inpaint = False
    lowvram = False
    latent_channels = 4
    cond_stage_key = "txt"

    def __init__(self, parameterization: str, scale_factor: float):
        super().__init__()
        if parameterization not in ("eps", "v"):
            raise ValueError(f"parameterization must be 'eps' or 'v', not {parameterization!r}")
        self.parameterization = parameterization
        self.scale_factor = scale_factor
        self.num_timesteps = 1000
        self.register_buffer("alphas_cumprod", linear_alphas_cumprod(self.num_timesteps))

    @property
    def device(self) -> torch.device:
        return next(self.model.diffusion_model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.diffusion_model.parameters()).dtype


class ToyLatentDiffusion(_ToyModelBase):
    """ldm's ``LatentDiffusion`` as loaded by the webui for SD1/SD2 (``parameterization`` "eps" or "v")."""

    def __init__(self, diffusion_model: torch.nn.Module, context_dim: int, parameterization: str = "eps",
                 scale_factor: float = 0.18215):
        super().__init__(parameterization, scale_factor)
        self.model = DiffusionWrapper(diffusion_model)
        self.cond_stage_model = ToyTextEncoder(context_dim)
        self.first_stage_model = ToyAutoencoderKL(latent_std=1.0 / scale_factor)
        # The q-sample/v helpers of ldm's DDPM read these buffers.
        self.register_buffer("sqrt_alphas_cumprod", self.alphas_cumprod.sqrt())
        self.register_buffer("sqrt_one_minus_alphas_cumprod", (1.0 - self.alphas_cumprod).sqrt())

    def get_learned_conditioning(self, c: list[str]) -> torch.Tensor:
        return self.cond_stage_model(c)

    def apply_model(self, x_noisy: torch.Tensor, t: torch.Tensor, cond, return_ids: bool = False) -> torch.Tensor:
        if not isinstance(cond, dict):  # hybrid callers pass a ready dict
            cond = {"c_crossattn": cond if isinstance(cond, list) else [cond]}
        x_recon = self.model(x_noisy, t, **cond)
        if isinstance(x_recon, tuple) and not return_ids:
            return x_recon[0]
        return x_recon

    @torch.no_grad()
    def encode_first_stage(self, x: torch.Tensor) -> DiagonalGaussianDistribution:
        return self.first_stage_model.encode(x)

    def get_first_stage_encoding(self, encoder_posterior) -> torch.Tensor:
        if isinstance(encoder_posterior, DiagonalGaussianDistribution):
            z = encoder_posterior.sample()
        elif isinstance(encoder_posterior, torch.Tensor):
            z = encoder_posterior
        else:
            raise NotImplementedError(f"encoder_posterior of type {type(encoder_posterior)!r} not supported")
        return self.scale_factor * z

    def decode_first_stage(self, z: torch.Tensor) -> torch.Tensor:
        return self.first_stage_model.decode(1.0 / self.scale_factor * z)

    # ldm DDPM helpers (same formulas), handy as independent oracles in tests.
    def q_sample(self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return (extract_into_tensor(self.sqrt_alphas_cumprod, t, x_start.shape) * x_start
                + extract_into_tensor(self.sqrt_one_minus_alphas_cumprod, t, x_start.shape) * noise)

    def get_v(self, x: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (extract_into_tensor(self.sqrt_alphas_cumprod, t, x.shape) * noise
                - extract_into_tensor(self.sqrt_one_minus_alphas_cumprod, t, x.shape) * x)

    def predict_eps_from_z_and_v(self, x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return (extract_into_tensor(self.sqrt_alphas_cumprod, t, x_t.shape) * v
                + extract_into_tensor(self.sqrt_one_minus_alphas_cumprod, t, x_t.shape) * x_t)


class ToyDiffusionEngine(_ToyModelBase):
    """sgm's ``DiffusionEngine`` after the webui's ``sd_models_xl`` patches and ``extend_sdxl`` (SDXL base)."""

    is_sdxl = True

    def __init__(self, diffusion_model: torch.nn.Module, context_dim: int, adm_in_channels: int,
                 parameterization: str = "eps", scale_factor: float = 0.13025):
        super().__init__(parameterization, scale_factor)
        self.model = OpenAIWrapper(diffusion_model)
        self.conditioner = ToyConditioner(context_dim, adm_in_channels)
        self.first_stage_model = ToyAutoencoderKL(sample_on_encode=True, latent_std=1.0 / scale_factor)

    @property
    def cond_stage_model(self) -> ToyConditioner:
        # sd_hijack points cond_stage_model at the conditioner when SDXL has two text encoders.
        return self.conditioner

    def get_learned_conditioning(self, batch: list[str]) -> dict[str, torch.Tensor]:
        """As the webui's: size conditionings from ``batch.width/height`` (default 1024), crop (0, 0)."""
        width = getattr(batch, "width", 1024) or 1024
        height = getattr(batch, "height", 1024) or 1024
        is_negative_prompt = getattr(batch, "is_negative_prompt", False)
        tensor_args = dict(device=self.device, dtype=self.dtype)
        sdxl_conds = {
            "txt": batch,
            "original_size_as_tuple": torch.tensor([height, width], **tensor_args).repeat(len(batch), 1),
            "crop_coords_top_left": torch.tensor([0, 0], **tensor_args).repeat(len(batch), 1),
            "target_size_as_tuple": torch.tensor([height, width], **tensor_args).repeat(len(batch), 1),
        }
        force_zero_negative_prompt = is_negative_prompt and all(prompt == "" for prompt in batch)
        return self.conditioner(sdxl_conds, force_zero_embeddings=["txt"] if force_zero_negative_prompt else [])

    def apply_model(self, x: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        return self.model(x, t, cond)

    @torch.no_grad()
    def encode_first_stage(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale_factor * self.first_stage_model.encode(x)

    def get_first_stage_encoding(self, x: torch.Tensor) -> torch.Tensor:
        return x  # SDXL's encode_first_stage already samples and scales

    @torch.no_grad()
    def decode_first_stage(self, z: torch.Tensor) -> torch.Tensor:
        return self.first_stage_model.decode(1.0 / self.scale_factor * z)


# ----------------------------------------------------------------------------------------------- factory


def make_toy_model(arch: str, parameterization: str = "eps", seed: int = 0) -> ToyLatentDiffusion | ToyDiffusionEngine:
    """A seeded, frozen, eval-mode double of the webui's loaded model for ``arch`` ("sd1", "sd2", "sdxl")."""
    if arch not in TINY_CONFIGS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {sorted(TINY_CONFIGS)}")
    config = TINY_CONFIGS[arch]
    unet = build_unet(arch, seed=seed)  # re-drawn weights, so its output is not the zero-init 0
    with torch.random.fork_rng(devices=[]):  # seeded default inits that leave the caller's RNG alone
        torch.manual_seed(seed)
        if arch == "sdxl":
            model = ToyDiffusionEngine(unet, config["context_dim"], config["adm_in_channels"], parameterization,
                                       SCALE_FACTORS[arch])
        else:
            model = ToyLatentDiffusion(unet, config["context_dim"], parameterization, SCALE_FACTORS[arch])
            model.is_sd1, model.is_sd2 = arch == "sd1", arch == "sd2"
    return model.eval().requires_grad_(False)
