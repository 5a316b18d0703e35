"""Module-name mapping, checked against diffusers' own LDM converters and the real module trees."""

from __future__ import annotations

import functools
import re

import pytest
import torch

from bench.common.tiny_models import build_unet
from lib_sliders.files import keymap
from lib_sliders.files.layout import ARCH_IDS, text_layout, unet_layout, unet_norm_paths

# The LDM yaml (``model.params.unet_config.params``) of each full-size model, as diffusers reads it.
LDM_UNET_PARAMS = {
    "sd1": dict(model_channels=320, channel_mult=[1, 2, 4, 4], attention_resolutions=[4, 2, 1], num_heads=8,
                transformer_depth=1, context_dim=768),
    "sd2": dict(model_channels=320, channel_mult=[1, 2, 4, 4], attention_resolutions=[4, 2, 1], num_head_channels=64,
                transformer_depth=1, context_dim=1024, use_linear_in_transformer=True),
    "sdxl": dict(model_channels=320, channel_mult=[1, 2, 4], attention_resolutions=[4, 2], num_head_channels=64,
                 transformer_depth=[1, 2, 10], context_dim=2048, use_linear_in_transformer=True,
                 num_classes="sequential", adm_in_channels=2816),
}


def all_unet_paths(arch: str) -> list[str]:
    return [*unet_layout(arch), *sorted(unet_norm_paths(arch))]


@functools.cache
def diffusers_truth(arch: str) -> dict[str, str]:
    """LDM module path → diffusers module path, by diffusers' ``convert_ldm_unet_checkpoint``.

    The checkpoint has the real full-size model's parameter names (meta-device build) with each tensor
    holding its own index, so reading the indices back after conversion gives the converter's rename map.
    """
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, create_unet_diffusers_config_from_ldm

    names = list(build_unet(arch, tiny=False, device="meta").state_dict())
    # 4-d tensors: diffusers' model-type sniffing reads shape[1] of some keys.
    ckpt = {f"model.diffusion_model.{name}": torch.full((1, 1, 1, 1), float(i)) for i, name in enumerate(names)}
    params = dict(in_channels=4, out_channels=4, num_res_blocks=2, use_spatial_transformer=True, legacy=False,
                  **LDM_UNET_PARAMS[arch])
    original_config = {"model": {"params": {
        "unet_config": {"params": params},
        "first_stage_config": {"params": {"ddconfig": {"ch_mult": [1, 2, 4, 4]}}},
    }}}
    config = create_unet_diffusers_config_from_ldm(original_config, ckpt)
    converted = convert_ldm_unet_checkpoint(ckpt, config)
    assert len(converted) == len(names)  # a pure rename, nothing dropped or split
    truth = {}
    for diffusers_name, tensor in converted.items():
        ldm_name = names[int(tensor.item())]
        ldm_module, _, param = ldm_name.rpartition(".")
        diffusers_module, _, diffusers_param = diffusers_name.rpartition(".")
        assert param == diffusers_param
        truth[ldm_module] = diffusers_module
    return truth


@pytest.mark.parametrize("arch", ARCH_IDS)
def test_ldm_to_diffusers_matches_diffusers_converter(arch):
    truth = diffusers_truth(arch)
    paths = all_unet_paths(arch)
    assert set(truth) == set(paths)  # every module with parameters is a Linear/Conv2d or a norm
    for path in paths:
        assert keymap.ldm_to_diffusers(path, arch) == truth[path], path
        assert keymap.diffusers_to_ldm(truth[path], arch) == path


def test_upsampler_index_follows_attention():
    # The webui's Lora maps SDXL's up_blocks.0 upsampler to output_blocks.2.1.conv, which is a transformer.
    assert keymap.diffusers_to_ldm("up_blocks.0.upsamplers.0.conv", "sdxl") == "output_blocks.2.2.conv"
    assert keymap.ldm_to_diffusers("output_blocks.2.2.conv", "sdxl") == "up_blocks.0.upsamplers.0.conv"
    assert keymap.unet_file_key_to_ldm("up_blocks_0_upsamplers_0_conv", "sdxl") == "output_blocks.2.2.conv"
    assert keymap.unet_file_key_to_ldm("up_blocks_1_upsamplers_0_conv", "sdxl") == "output_blocks.5.2.conv"
    assert keymap.diffusers_to_ldm("up_blocks.0.upsamplers.0.conv", "sd1") == "output_blocks.2.1.conv"
    assert keymap.diffusers_to_ldm("up_blocks.1.upsamplers.0.conv", "sd2") == "output_blocks.5.2.conv"


def test_examples():
    assert (keymap.diffusers_to_ldm("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", "sd1")
            == "input_blocks.1.1.transformer_blocks.0.attn1.to_q")
    assert keymap.ldm_to_diffusers("middle_block.1.transformer_blocks.9.attn2.to_k", "sdxl") == (
        "mid_block.attentions.0.transformer_blocks.9.attn2.to_k")
    assert keymap.ldm_to_diffusers("label_emb.0.2", "sdxl") == "add_embedding.linear_2"
    assert keymap.unet_file_key_to_ldm("down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0", "sd1") == (
        "input_blocks.1.1.transformer_blocks.0.attn1.to_out.0")
    assert keymap.unet_file_key_to_ldm("time_embedding_linear_2", "sd2") == "time_embed.2"
    assert keymap.unet_file_key_to_ldm("diffusion_model_output_blocks_11_1_proj_out", "sd1") == (
        "output_blocks.11.1.proj_out")
    assert keymap.unet_file_key_to_ldm("lora_unet_mid_block_resnets_1_time_emb_proj", "sdxl") == (
        "middle_block.2.emb_layers.1")


@pytest.mark.parametrize("arch", ARCH_IDS)
def test_file_keys_round_trip_in_both_namings(arch):
    for path in all_unet_paths(arch):
        diffusers = keymap.ldm_to_diffusers(path, arch)
        for flat in (path.replace(".", "_"), diffusers.replace(".", "_")):
            assert keymap.unet_file_key_to_ldm(flat, arch) == path
            assert keymap.unet_file_key_to_ldm("lora_unet_" + flat, arch) == path
        assert keymap.unet_file_key_to_ldm("diffusion_model_" + path.replace(".", "_"), arch) == path
        written = (path if arch == "sdxl" else diffusers).replace(".", "_")
        assert keymap.ldm_to_unet_file_key(path, arch) == "lora_unet_" + written


@pytest.mark.parametrize(("path", "arch"), [
    ("input_blocks.1.1.proj_in", "sdxl"),  # no attention at SDXL level 0
    ("input_blocks.10.1.proj_in", "sd1"),  # nor at SD1's last level
    ("input_blocks.4.1.transformer_blocks.2.attn1.to_q", "sdxl"),  # depth 2 there
    ("middle_block.1.transformer_blocks.1.attn1.to_q", "sd2"),
    ("output_blocks.2.1.conv", "sdxl"),  # the webui's wrong upsampler name
    ("output_blocks.2.2.conv", "sd1"),
    ("input_blocks.1.0.skip_connection", "sd1"),  # an Identity: channels don't change
    ("input_blocks.12.0.in_layers.2", "sd1"),
    ("output_blocks.9.0.in_layers.2", "sdxl"),
    ("label_emb.0.0", "sd1"),
    ("input_blocks.1.1.transformer_blocks.0.attn1.to_x", "sd1"),
    ("input_blocks.1.1", "sd1"),
])
def test_unknown_ldm_paths_raise(path, arch):
    with pytest.raises(KeyError, match=re.escape(path)):
        keymap.ldm_to_diffusers(path, arch)
    with pytest.raises(KeyError):
        keymap.unet_file_key_to_ldm(path.replace(".", "_"), arch)


@pytest.mark.parametrize(("path", "arch"), [
    ("down_blocks.3.attentions.0.proj_in", "sd1"),
    ("down_blocks.0.attentions.0.proj_in", "sdxl"),
    ("down_blocks.3.downsamplers.0.conv", "sd1"),
    ("down_blocks.0.upsamplers.0.conv", "sd1"),
    ("up_blocks.3.upsamplers.0.conv", "sd1"),
    ("up_blocks.3.resnets.0.conv1", "sdxl"),
    ("up_blocks.17.resnets.0.conv1", "sdxl"),
    ("mid_block.attentions.1.proj_in", "sd1"),
    ("mid_block.resnets.2.conv1", "sd1"),
    ("down_blocks.0.resnets.0.conv3", "sd1"),
    ("add_embedding.linear_1", "sd2"),
    ("unet.conv_in", "sd1"),
])
def test_unknown_diffusers_paths_raise(path, arch):
    with pytest.raises(KeyError, match=re.escape(path)):
        keymap.diffusers_to_ldm(path, arch)
    with pytest.raises(KeyError):
        keymap.unet_file_key_to_ldm(path.replace(".", "_"), arch)


def test_unknown_arch_raises():
    with pytest.raises(KeyError, match="sd3"):
        keymap.diffusers_to_ldm("conv_in", "sd3")


# --- text encoders ---


@pytest.mark.parametrize("arch", ARCH_IDS)
def test_text_file_keys_round_trip(arch):
    for index, encoder in enumerate(text_layout(arch)):
        for path in encoder:
            key = keymap.path_to_text_file_key(index, path, arch)
            prefix = f"lora_te{index + 1}_" if arch == "sdxl" else "lora_te_"
            assert key == prefix + "text_model_" + path.replace(".", "_")
            assert keymap.text_file_key_to_path(key) == (index, path)


def test_text_examples_and_errors():
    assert keymap.text_file_key_to_path("lora_te_text_model_encoder_layers_11_self_attn_out_proj") == (
        0, "encoder.layers.11.self_attn.out_proj")
    assert keymap.text_file_key_to_path("lora_te2_text_model_encoder_layers_31_mlp_fc2") == (
        1, "encoder.layers.31.mlp.fc2")
    for bad in ("lora_te3_text_model_encoder_layers_0_mlp_fc1", "lora_te_text_model_encoder_layers_0_mlp_fc3",
                "lora_te_text_model_embeddings_token_embedding", "lora_unet_conv_in"):
        with pytest.raises(KeyError):
            keymap.text_file_key_to_path(bad)
    with pytest.raises(KeyError):
        keymap.path_to_text_file_key(1, "encoder.layers.0.mlp.fc1", "sd1")  # SD1 has one encoder
    with pytest.raises(KeyError):
        keymap.path_to_text_file_key(0, "encoder.layers.12.mlp.fc1", "sdxl")  # CLIP-L has 12 layers


@pytest.mark.parametrize(("key", "expected"), [
    ("lora_unet_x.lora_down.weight", ("lora_unet_x", "lora_down.weight")),
    ("lora_unet_x.lora_up.weight", ("lora_unet_x", "lora_up.weight")),
    ("lora_unet_x.lora_mid.weight", ("lora_unet_x", "lora_mid.weight")),
    ("lora_te1_y.alpha", ("lora_te1_y", "alpha")),
    ("lora_unet_x.lora_A.weight", ("lora_unet_x", "lora_A.weight")),
    ("lora_unet_x.lora_B.weight", ("lora_unet_x", "lora_B.weight")),
    ("lora_unet_x.dora_scale", ("lora_unet_x", "dora_scale")),
    ("lora_unet_x.hada_w1_a", ("lora_unet_x", "hada_w1_a")),
])
def test_split_file_key(key, expected):
    assert keymap.split_file_key(key) == expected


@pytest.mark.parametrize("key", ["lora_unet_x", ".alpha", "lora_unet_x."])
def test_split_file_key_rejects(key):
    with pytest.raises(KeyError):
        keymap.split_file_key(key)
