"""Files we write load in diffusers' ``load_lora_weights`` with every key consumed, and the diffusers UNet
with the LoRA gives the output of the LDM UNet with the same deltas merged into its weights (the webui's math).

The diffusers UNet is the tiny LDM UNet converted by diffusers' own single-file converter, so both
models hold the same weights under their own names.
"""

from __future__ import annotations

import logging

import pytest
import torch

from bench.common import tiny_models
from bench.common.random_sliders import random_slider
from bench.common.tiny_models import TINY_CONFIGS, build_unet, randomize_, unet_inputs
from lib_sliders.files.slider_file import save_slider

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("peft")

from diffusers import UNet2DConditionModel  # noqa: E402
from diffusers.loaders import StableDiffusionLoraLoaderMixin, StableDiffusionXLLoraLoaderMixin  # noqa: E402
from diffusers.loaders.single_file_utils import (  # noqa: E402
    convert_ldm_unet_checkpoint,
    create_unet_diffusers_config_from_ldm,
)
from peft.tuners.lora import LoraLayer  # noqa: E402

# The converter reads the VAE depth from the original config only to size sample_size.
_VAE = {"params": {"ddconfig": {"ch_mult": [1, 2, 4, 4]}}}


def to_diffusers(ldm_unet: torch.nn.Module, unet_params: dict, config_key: str) -> UNet2DConditionModel:
    original = {"model": {"params": {config_key: {"params": unet_params}, "first_stage_config": _VAE}}}
    checkpoint = {"model.diffusion_model." + k: v for k, v in ldm_unet.state_dict().items()}
    config = create_unet_diffusers_config_from_ldm(original, checkpoint)
    unet = UNet2DConditionModel(**config)
    unet.load_state_dict(convert_ldm_unet_checkpoint(checkpoint, config), strict=True)
    return unet.eval().requires_grad_(False)


class Pipeline:
    """Just enough of a pipeline for the loader mixins' ``load_lora_weights`` (UNet-only sliders)."""

    hf_device_map = None
    components: dict = {}

    def __init__(self, unet):
        self.unet = unet
        self.text_encoder = None
        self.text_encoder_2 = None


class SD1Pipeline(Pipeline, StableDiffusionLoraLoaderMixin):
    pass


class SDXLPipeline(Pipeline, StableDiffusionXLLoraLoaderMixin):
    pass


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def load_with_diffusers(pipeline: Pipeline, path) -> list[str]:
    """``load_lora_weights(path)``; returns diffusers' warnings other than "no text-encoder keys"."""
    records = Records()
    logger = logging.getLogger("diffusers")
    logger.addHandler(records)
    try:
        pipeline.load_lora_weights(str(path))
    finally:
        logger.removeHandler(records)
    return [m for m in records.messages if not m.startswith("No LoRA keys associated to NoneType")]


@torch.no_grad()
def merge_into(ldm_unet: torch.nn.Module, network) -> None:
    """The webui's Lora: ``W += up·down·alpha/rank`` on every target layer."""
    for path, module in network.unet.items():
        weight = ldm_unet.get_submodule(path).weight
        weight += module.delta_weight().reshape(weight.shape)


def lora_layers(unet) -> int:
    return sum(isinstance(m, LoraLayer) for m in unet.modules())


@torch.no_grad()
def output_without_lora(unet, inputs):
    """The diffusers UNet's output with the LoRA switched off."""
    unet.disable_adapters()
    try:
        return unet(inputs["x"], inputs["timesteps"], encoder_hidden_states=inputs["context"]).sample
    finally:
        unet.enable_adapters()


def test_sd1_file_loads_in_diffusers_and_matches_ldm(tmp_path):
    config = TINY_CONFIGS["sd1"]
    ldm = build_unet("sd1")
    params = dict(in_channels=4, out_channels=4, model_channels=config["model_channels"], attention_resolutions=[4, 2, 1],
                  num_res_blocks=2, channel_mult=config["channel_mult"], num_heads=config["num_heads"],
                  use_spatial_transformer=True, transformer_depth=1, context_dim=config["context_dim"], legacy=False)
    unet = to_diffusers(ldm, params, "unet_config")
    inputs = unet_inputs(ldm, "sd1")

    def diffusers_out():
        return unet(inputs["x"], inputs["timesteps"], encoder_hidden_states=inputs["context"]).sample

    with torch.no_grad():
        torch.testing.assert_close(diffusers_out(), ldm(**inputs), rtol=0, atol=1e-4)  # the conversion itself

    network = random_slider(ldm, "full", rank=4, alpha=2.0, seed=7)
    path = tmp_path / "slider.safetensors"
    save_slider(network, path, arch="sd1", dtype=torch.float32)

    assert load_with_diffusers(SD1Pipeline(unet), path) == []
    assert lora_layers(unet) == len(network.unet) == 214  # attention q/k/v/out, resnet convs, samplers

    merge_into(ldm, network)
    with torch.no_grad():
        expected = ldm(**inputs)
        got = diffusers_out()
    scale = expected.abs().max().item()
    assert (got - expected).abs().max().item() <= 1e-4 * max(scale, 1.0)
    assert (expected - output_without_lora(unet, inputs)).abs().max() > 1e-2  # the slider did change the output


def test_sdxl_file_loads_in_diffusers_and_matches_sgm(tmp_path):
    # diffusers' converter recognises SDXL (text_time conditioning) only with its real context/ADM widths.
    config = dict(TINY_CONFIGS["sdxl"], context_dim=1280, adm_in_channels=2816)
    ldm = randomize_(tiny_models._sgm_unet(config)).eval().requires_grad_(False)
    from comfy.ldm.modules.diffusionmodules.util import timestep_embedding  # importable once tiny_models set comfy up
    params = dict(in_channels=4, out_channels=4, model_channels=config["model_channels"], attention_resolutions=[4, 2],
                  num_res_blocks=2, channel_mult=config["channel_mult"], num_head_channels=8, use_linear_in_transformer=True,
                  transformer_depth=[0, 2, 2], context_dim=1280, adm_in_channels=2816, num_classes="sequential", legacy=False)
    unet = to_diffusers(ldm, params, "network_config")

    g = torch.Generator().manual_seed(3)
    x, t = torch.randn(2, 4, 16, 16, generator=g), torch.randint(0, 1000, (2,), generator=g)
    context, pooled = torch.randn(2, 7, 1280, generator=g), torch.randn(2, 1280, generator=g)
    time_ids = torch.tensor([[64.0, 64, 0, 0, 64, 64]] * 2)
    y = torch.cat([pooled] + [timestep_embedding(time_ids[:, i], 256) for i in range(6)], dim=1)

    @torch.no_grad()
    def outputs():
        return (ldm(x, t, context=context, y=y),
                unet(x, t, encoder_hidden_states=context, added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample)

    torch.testing.assert_close(*outputs(), rtol=0, atol=1e-4)

    network = random_slider(ldm, "full", rank=4, alpha=2.0, seed=7)
    # SGM names, including output_blocks.2.2.conv: the upsampler the webui misplaces for diffusers names.
    assert "output_blocks.2.2.conv" in network.unet
    path = tmp_path / "slider.safetensors"
    save_slider(network, path, arch="sdxl", dtype=torch.float32)

    assert load_with_diffusers(SDXLPipeline(unet), path) == []
    assert lora_layers(unet) == len(network.unet)

    merge_into(ldm, network)
    expected, got = outputs()
    assert (got - expected).abs().max().item() <= 1e-4 * max(expected.abs().max().item(), 1.0)
