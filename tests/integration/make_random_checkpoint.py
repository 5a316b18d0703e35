"""Random-weight full-size checkpoints for a real webui (no weights exist offline), original layout, safetensors.

    WEBUI/venv/bin/python tests/integration/make_random_checkpoint.py WEBUI_DIR OUT.safetensors \\
        [--arch sd15|sd2-v|sdxl] [--seed N] [--fp32]

Run it with the webui's own Python: the models are built from the webui's classes (``repositories/``), so the key
names and shapes are the ones its loader expects, and ``modules/sd_models_config.py`` picks the right config:

* ``sd15`` — ``ldm`` UNet (context 768, 8 heads), ``ldm`` VAE, transformers ``CLIPTextModel`` (ViT-L) under
  ``cond_stage_model.transformer.*``, DDPM schedule buffers → ``v1-inference.yaml``;
* ``sd2-v`` — ``ldm`` UNet (context 1024, 64-channel heads, linear projections in the transformers), the same VAE,
  open_clip's ViT-H-14 text tower under ``cond_stage_model.model.*``, schedule buffers → ``v2-inference-v.yaml``.
  The webui tells v-prediction from ε by one UNet call (``is_using_v_parameterization_for_sd2``: mean of
  ``unet(0.5, t=999, cond=0.5) - 0.5`` below −1): the UNet's last bias is shifted so that the call gives −1.5 on
  the weights as stored;
* ``sdxl`` — ``sgm`` UNet (SDXL base: depths 0/2/10, context 2048, ADM 2816), ``sgm`` VAE, conditioners
  ``conditioner.embedders.0.transformer.*`` (CLIP ViT-L, transformers) and ``conditioner.embedders.1.model.*``
  (open_clip ViT-bigG-14 text tower) → ``sd_xl_base.yaml``. No schedule buffers: sgm computes its own.

Every UNet and VAE weight is redrawn (1-D: base + 0.1·N(0, 1), base 1 for norm weights; ≥ 2-D: N(0, 1)/√fan-in, so
the zero-initialised output layers carry signal too); the text encoders keep their libraries' own initialisation.
Storage is fp16 unless ``--fp32``. The same ``--seed`` gives the same file; ``--arch sd15`` gives the checkpoint
the host's earlier ``make_random_sd15.py`` gave (bit for bit, same seed). SDXL's UNet and VAE are built on the meta
device and filled one tensor at a time, and the file is written tensor by tensor: SDXL peaks at 10.7 GB RSS (its fp16
tensors and one fp32 text encoder), 64 s on 2 cores, where fp32 construction plus ``save_file`` would need 20+ GB.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch

ARCHS = ("sd15", "sd2-v", "sdxl")
NORMS = (torch.nn.GroupNorm, torch.nn.LayerNorm, torch.nn.BatchNorm2d)
VAE_CONFIG = dict(double_z=True, z_channels=4, resolution=256, in_channels=3, out_ch=3, ch=128, ch_mult=[1, 2, 4, 4],
                  num_res_blocks=2, attn_resolutions=[], dropout=0.0)
V_CHECK_TARGET = -1.5  # the webui's test for v-prediction: below -1


@torch.no_grad()
def redraw(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Give ``module`` random weights in ``dtype``, one tensor at a time (it may sit on the meta device); the
    numbers are drawn in fp32 in ``modules()`` order (as ``randn_like`` on fp32 weights would)."""
    for mod in module.modules():
        for name, p in list(mod.named_parameters(recurse=False)):
            if p.ndim == 1:
                base = 1.0 if (isinstance(mod, NORMS) and name == "weight") else 0.0
                value = base + 0.1 * torch.randn(p.shape)
            else:
                value = torch.randn(p.shape) / math.sqrt(math.prod(p.shape[1:]))
            mod._parameters[name] = torch.nn.Parameter(value.to(dtype), requires_grad=False)
    if any(b.is_meta for b in module.buffers()):
        raise RuntimeError(f"{type(module).__name__} has buffers: redraw() only fills parameters")
    return module


def construct(build, meta: bool):
    """``meta``: build without memory or random numbers (SDXL); else as usual, on the CPU in fp32: the classes'
    own initialisation then draws from the seeded generator before ``redraw`` does, as the earlier tool did."""
    if not meta:
        return build()
    with torch.device("meta"):
        return build()


def ldm_unet(arch: str):  # SD 1.x/2.x: small enough to build in fp32 first
    from ldm.modules.diffusionmodules.openaimodel import UNetModel

    common = dict(image_size=32, in_channels=4, out_channels=4, model_channels=320, attention_resolutions=[4, 2, 1],
                  num_res_blocks=2, channel_mult=[1, 2, 4, 4], use_spatial_transformer=True, transformer_depth=1,
                  use_checkpoint=False, legacy=False)
    if arch == "sd15":
        return construct(lambda: UNetModel(num_heads=8, context_dim=768, **common), meta=False)
    return construct(lambda: UNetModel(num_head_channels=64, use_linear_in_transformer=True, context_dim=1024,
                                       **common), meta=False)


def sgm_unet():
    from sgm.modules.diffusionmodules.openaimodel import UNetModel

    return construct(lambda: UNetModel(
        adm_in_channels=2816, num_classes="sequential", use_checkpoint=False, in_channels=4, out_channels=4,
        model_channels=320, attention_resolutions=[4, 2], num_res_blocks=2, channel_mult=[1, 2, 4],
        num_head_channels=64, use_spatial_transformer=True, use_linear_in_transformer=True,
        transformer_depth=[1, 2, 10], context_dim=2048, spatial_transformer_attn_type="softmax", legacy=False),
        meta=True)


def vae(package: str) -> torch.nn.Module:
    if package == "sgm":
        from sgm.modules.diffusionmodules.model import Decoder, Encoder
    else:
        from ldm.modules.diffusionmodules.model import Decoder, Encoder

    class VAE(torch.nn.Module):  # the attribute names of AutoencoderKL (no lightning needed)
        def __init__(self):
            super().__init__()
            self.encoder = Encoder(**VAE_CONFIG)
            self.decoder = Decoder(**VAE_CONFIG)
            self.quant_conv = torch.nn.Conv2d(2 * 4, 2 * 4, 1)
            self.post_quant_conv = torch.nn.Conv2d(4, 4, 1)

    return construct(VAE, meta=package == "sgm")


def clip_l() -> dict[str, torch.Tensor]:
    """CLIP ViT-L/14 text model, transformers layout (``text_model.*``), its own initialisation."""
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                            num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                            layer_norm_eps=1e-5, projection_dim=768, bos_token_id=0, eos_token_id=2, pad_token_id=1)
    state = CLIPTextModel(config).state_dict()
    if not any(k.startswith("text_model.") for k in state):  # transformers 5 drops the prefix
        state = {"text_model." + k: v for k, v in state.items()}
    state.setdefault("text_model.embeddings.position_ids", torch.arange(77).unsqueeze(0))
    return state


def open_clip_text(arch: str) -> dict[str, torch.Tensor]:
    """open_clip's text tower of ``arch`` with its own initialisation, keyed as in ``open_clip.CLIP`` without
    ``visual.*`` (what ``FrozenOpenCLIPEmbedder``/``FrozenOpenCLIPEmbedder2`` hold as ``.model``)."""
    import open_clip
    from open_clip.model import CLIPTextCfg, _build_text_tower

    config = open_clip.get_model_config(arch)
    tower = _build_text_tower(config["embed_dim"], CLIPTextCfg(**config["text_cfg"]))
    state = dict(tower.state_dict())
    state["logit_scale"] = torch.tensor(math.log(1 / 0.07))
    return state


def ddpm_schedule() -> dict[str, torch.Tensor]:
    """``ldm`` ``DDPM.register_schedule`` buffers: linear 0.00085..0.012, 1000 steps, v_posterior 0."""
    steps = 1000
    betas = np.linspace(0.00085 ** 0.5, 0.0120 ** 0.5, steps, dtype=np.float64) ** 2
    alphas = 1.0 - betas
    cumprod = np.cumprod(alphas, axis=0)
    previous = np.append(1.0, cumprod[:-1])
    variance = betas * (1.0 - previous) / (1.0 - cumprod)
    schedule = {
        "betas": betas, "alphas_cumprod": cumprod, "alphas_cumprod_prev": previous,
        "sqrt_alphas_cumprod": np.sqrt(cumprod), "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - cumprod),
        "log_one_minus_alphas_cumprod": np.log(1.0 - cumprod), "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / cumprod),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / cumprod - 1), "posterior_variance": variance,
        "posterior_log_variance_clipped": np.log(np.maximum(variance, 1e-20)),
        "posterior_mean_coef1": betas * np.sqrt(previous) / (1.0 - cumprod),
        "posterior_mean_coef2": (1.0 - previous) * np.sqrt(alphas) / (1.0 - cumprod),
    }
    return {k: torch.tensor(v, dtype=torch.float32) for k, v in schedule.items()}


@torch.no_grad()
def v_check(unet: torch.nn.Module) -> float:
    """The webui's ``is_using_v_parameterization_for_sd2`` number (v-prediction when below -1), in fp32."""
    x = torch.ones((1, 4, 8, 8)) * 0.5
    return (unet(x, torch.asarray([999]), context=torch.ones((1, 2, 1024)) * 0.5) - x).mean().item()


@torch.no_grad()
def make_v_prediction(unet: torch.nn.Module, dtype: torch.dtype) -> float:
    """Shift the UNet's last bias so the webui detects v-prediction on the weights as stored; returns the check."""
    as_stored = unet.float()  # weights already rounded to ``dtype``
    bias = as_stored.out[2].bias
    for _ in range(3):
        value = v_check(as_stored)
        if value < V_CHECK_TARGET + 0.25:
            break
        bias.copy_((bias + (V_CHECK_TARGET - value)).to(dtype).float())  # the mean output moves by the shift
    value = v_check(as_stored)
    if not value < -1:
        raise RuntimeError(f"v-prediction check gives {value:.3f}, not below -1")
    return value


def timed(label: str, build):
    start = time.time()
    result = build()
    count = sum(v.numel() for v in result.values()) if isinstance(result, dict) else \
        sum(p.numel() for p in result.parameters())
    print(f"{label} {count / 1e6:.2f}M {time.time() - start:.1f}s", flush=True)
    return result, count


def build(arch: str, dtype: torch.dtype) -> tuple[dict[str, torch.Tensor], int]:
    """The checkpoint's tensors in ``dtype`` (each part converted as soon as it is built) and its parameter count."""
    state: dict[str, torch.Tensor] = {}
    total = 0

    def add(prefix: str, tensors: dict[str, torch.Tensor]) -> None:
        for key, value in tensors.items():
            state[prefix + key] = (value.to(dtype) if value.is_floating_point() else value).contiguous()

    unet, n = timed("unet", lambda: redraw(sgm_unet() if arch == "sdxl" else ldm_unet(arch), dtype))
    total += n
    if arch == "sd2-v":
        print(f"v-prediction check {make_v_prediction(unet, dtype):.3f} (webui: v when < -1)", flush=True)
    add("model.diffusion_model.", unet.state_dict())
    del unet
    autoencoder, n = timed("vae", lambda: redraw(vae("sgm" if arch == "sdxl" else "ldm"), dtype))
    total += n
    add("first_stage_model.", autoencoder.state_dict())
    del autoencoder
    if arch == "sd15":
        text, n = timed("clip-l", clip_l)
        add("cond_stage_model.transformer.", text)
    elif arch == "sd2-v":
        text, n = timed("open_clip ViT-H-14 text", lambda: open_clip_text("ViT-H-14"))
        add("cond_stage_model.model.", text)
    else:
        text, n = timed("clip-l", clip_l)
        add("conditioner.embedders.0.transformer.", text)
        total += n
        del text
        text, n = timed("open_clip ViT-bigG-14 text", lambda: open_clip_text("ViT-bigG-14"))
        add("conditioner.embedders.1.model.", text)
    total += n
    del text
    if arch != "sdxl":
        add("", ddpm_schedule())  # stored in ``dtype`` too, as the earlier tool did
    return state, total


SAFETENSORS_DTYPES = {torch.float16: "F16", torch.float32: "F32", torch.int64: "I64"}


def save_streaming(tensors: dict[str, torch.Tensor], path: str, metadata: dict[str, str]) -> None:
    """Write a .safetensors file tensor by tensor (``safetensors.torch.save_file`` first builds the whole file in
    memory: another 7 GB for SDXL). Same format: little-endian u64 header size, JSON header padded with spaces to
    8 bytes, then the raw data in header order."""
    header: dict[str, dict] = {"__metadata__": metadata}
    offset = 0
    order = sorted(tensors)
    for key in order:
        tensor = tensors[key]
        size = tensor.numel() * tensor.element_size()
        header[key] = {"dtype": SAFETENSORS_DTYPES[tensor.dtype], "shape": list(tensor.shape),
                       "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as file:
        file.write(struct.pack("<Q", len(encoded)))
        file.write(encoded)
        for key in order:
            file.write(tensors[key].contiguous().view(-1).view(torch.uint8).numpy().data)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("webui", help="the webui's folder (its repositories/ hold ldm and sgm)")
    parser.add_argument("out", help="the .safetensors file to write")
    parser.add_argument("--arch", choices=ARCHS, default="sd15")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--fp32", action="store_true", help="store fp32 (default fp16)")
    args = parser.parse_args(argv)
    repositories = os.path.join(args.webui, "repositories")
    sys.path[:0] = [os.path.join(repositories, "stable-diffusion-stability-ai"),
                    os.path.join(repositories, "generative-models")]
    torch.manual_seed(args.seed)
    dtype = torch.float32 if args.fp32 else torch.float16
    out, total = build(args.arch, dtype)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    start = time.time()
    note = f"random-weight {args.arch} (seed {args.seed}), not a trained model"
    if args.arch == "sd15":  # as make_random_sd15.py wrote it
        note = f"random-weight SD1.5 (seed {args.seed}), not a trained model"
    save_streaming(out, args.out, metadata={"format": "pt", "note": note})
    print(f"saved {len(out)} tensors, {total / 1e6:.2f}M params, {os.path.getsize(args.out)} B -> {args.out} "
          f"({time.time() - start:.1f}s)")


if __name__ == "__main__":
    main()
