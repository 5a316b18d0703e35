"""The computed full-size layouts equal the real module trees; architecture detection from files and models."""

from __future__ import annotations

import functools

import pytest
import torch

from bench.common.tiny_models import build_unet
from lib_sliders.files import keymap
from lib_sliders.files.arch import ARCH_LABELS, ARCHES, arch_from_metadata, detect_arch, detect_model_arch
from lib_sliders.files.layout import ModuleShape, text_layout, unet_layout, unet_norm_paths
from lib_sliders.files.lora import LoraModule
from lib_sliders.prompt.presets import preset_includes, select_layers

NORMS = (torch.nn.GroupNorm, torch.nn.LayerNorm)


def shape_of(module: torch.nn.Module) -> ModuleShape | None:
    if isinstance(module, torch.nn.Conv2d):
        return ModuleShape("conv", module.in_channels, module.out_channels, tuple(module.kernel_size))
    if isinstance(module, torch.nn.Linear):
        return ModuleShape("linear", module.in_features, module.out_features)
    return None


@functools.cache
def full_unet(arch: str) -> torch.nn.Module:
    return build_unet(arch, tiny=False, device="meta")


@pytest.mark.parametrize("arch", ARCHES)
def test_unet_layout_is_the_real_structure(arch):
    unet = full_unet(arch)
    real = {name: shape_of(m) for name, m in unet.named_modules() if shape_of(m)}
    assert unet_layout(arch) == real
    assert unet_norm_paths(arch) == {name for name, m in unet.named_modules() if isinstance(m, NORMS)}


def test_unet_layout_facts():
    assert len(unet_layout("sd1")) == len(unet_layout("sd2"))  # SD2 differs in widths and proj kinds only
    assert unet_layout("sd1")["input_blocks.1.1.proj_in"] == ModuleShape("conv", 320, 320, (1, 1))
    assert unet_layout("sd2")["input_blocks.1.1.proj_in"] == ModuleShape("linear", 320, 320)
    assert unet_layout("sd1")["input_blocks.1.1.transformer_blocks.0.attn2.to_k"].in_features == 768
    assert unet_layout("sd2")["input_blocks.1.1.transformer_blocks.0.attn2.to_k"].in_features == 1024
    assert unet_layout("sdxl")["input_blocks.4.1.transformer_blocks.0.attn2.to_k"] == ModuleShape("linear", 2048, 640)
    assert unet_layout("sdxl")["label_emb.0.0"] == ModuleShape("linear", 2816, 1280)
    assert "middle_block.1.transformer_blocks.9.attn1.to_q" in unet_layout("sdxl")
    assert unet_layout("sdxl") is unet_layout("sdxl")  # cached


TEXT_CONFIGS = {  # (hidden, layers, mlp, heads) per encoder
    "sd1": [(768, 12, 3072, 12)],
    "sd2": [(1024, 24, 4096, 16)],
    "sdxl": [(768, 12, 3072, 12), (1280, 32, 5120, 20)],
}


@pytest.mark.parametrize("arch", ARCHES)
def test_text_layout_is_the_real_clip_structure(arch):
    transformers = pytest.importorskip("transformers")
    layouts = text_layout(arch)
    assert len(layouts) == len(TEXT_CONFIGS[arch])
    for layout, (hidden, layers, mlp, heads) in zip(layouts, TEXT_CONFIGS[arch], strict=True):
        config = transformers.CLIPTextConfig(hidden_size=hidden, num_hidden_layers=layers, intermediate_size=mlp,
                                             num_attention_heads=heads)
        with torch.device("meta"):
            model = transformers.CLIPTextModel(config)
        # transformers 4 nests the tree under ``text_model.``, transformers 5 doesn't.
        real = {name.removeprefix("text_model."): shape_of(m) for name, m in model.named_modules()
                if shape_of(m) and ".layers." in name}
        assert layout == real


# --- detect_arch ---


def file_modules(arch: str, preset: str, naming: str, rank: int = 4) -> dict[str, tuple]:
    """(down shape, up shape) by kohya module name for a full-size ``arch`` slider trained with ``preset``."""
    modules = {}
    for path, shape in unet_layout(arch).items():
        if not preset_includes(preset, path):
            continue
        name = path if naming == "ldm" else keymap.ldm_to_diffusers(path, arch)
        down = (rank, shape.in_features, *shape.kernel) if shape.kind == "conv" else (rank, shape.in_features)
        up = (shape.out_features, rank, 1, 1) if shape.kind == "conv" else (shape.out_features, rank)
        modules["lora_unet_" + name.replace(".", "_")] = (down, up)
    assert modules
    return modules


def text_modules(arch: str, rank: int = 4) -> dict[str, tuple]:
    return {
        keymap.path_to_text_file_key(index, path, arch): ((rank, shape.in_features), (shape.out_features, rank))
        for index, encoder in enumerate(text_layout(arch))
        for path, shape in encoder.items()
    }


METADATA = {
    "sd1": {"ss_base_model_version": "sd_v1"},
    "sd2": {"modelspec.architecture": "stable-diffusion-v2-768-v/lora"},
    "sdxl": {"ss_base_model_version": "sdxl_base_v1-0"},
}


@pytest.mark.parametrize("naming", ["ldm", "diffusers"])
@pytest.mark.parametrize("preset", ["noxattn", "xattn", "full", "selfattn"])
@pytest.mark.parametrize("arch", ARCHES)
def test_detect_arch_from_names_and_shapes(arch, preset, naming):
    modules = file_modules(arch, preset, naming)
    has_context = preset in ("xattn", "full")
    expected = {arch} if arch == "sdxl" or has_context else {"sd1", "sd2"}
    assert detect_arch(modules, {}) == expected
    assert detect_arch(modules, METADATA[arch]) == {arch}
    assert detect_arch({**modules, **text_modules(arch)}, None) == {arch}  # the text encoder's width tells


def test_detect_arch_metadata_cannot_override_names():
    modules = file_modules("sdxl", "noxattn", "ldm")
    assert detect_arch(modules, METADATA["sd1"]) == {"sdxl"}
    assert detect_arch(file_modules("sd1", "noxattn", "diffusers"), METADATA["sdxl"]) == {"sd1", "sd2"}


def test_detect_arch_text_only_and_mismatches():
    assert detect_arch(text_modules("sd1"), {}) == {"sd1"}
    assert detect_arch(text_modules("sd2"), {}) == {"sd2"}
    assert detect_arch(text_modules("sdxl"), {}) == {"sdxl"}
    sd1_unet = file_modules("sd1", "noxattn", "diffusers")
    assert detect_arch({**sd1_unet, **text_modules("sdxl")}, {}) == frozenset()  # te1/te2 prefixes are SDXL's
    sdxl_only = {"lora_unet_input_blocks_4_1_transformer_blocks_1_attn1_to_q": ((4, 640), (640, 4))}
    assert detect_arch({**sd1_unet, **sdxl_only}, {}) == frozenset()
    assert detect_arch({"lora_unet_nothing_here": ((4, 8), (8, 4))}, {}) == frozenset()
    assert detect_arch({"lora_te_text_model_encoder_layers_0_mlp_fc9": ((4, 8), (8, 4))}, {}) == frozenset()
    assert detect_arch({}, METADATA["sd1"]) == frozenset()
    # Keys of other kinds (an embedded embedding) are left to the caller.
    assert detect_arch({**sd1_unet, "bundle_emb_x": ((1,), (1,))}, METADATA["sd1"]) == {"sd1"}


def test_detect_arch_resnet_only_sgm_file_that_fits_all_names():
    """A few SGM-named resnet layers exist in every arch: full-size shapes decide where they differ."""
    def pick(arch, paths):
        return {k: v for k, v in file_modules(arch, "noxattn", "ldm").items()
                if any(k.startswith(f"lora_unet_{p}") for p in paths)}

    assert detect_arch(pick("sdxl", ["output_blocks_2_0"]), {}) == {"sdxl"}  # 1920 in here, 2560 in SD1
    assert detect_arch(pick("sd1", ["output_blocks_2_0"]), {}) == {"sd1", "sd2"}
    assert detect_arch(pick("sd1", ["input_blocks_1_0"]), {}) == {"sd1", "sd2", "sdxl"}  # truly ambiguous
    assert detect_arch(pick("sd1", ["input_blocks_1_0"]), METADATA["sdxl"]) == {"sdxl"}


def tiny_file(arch: str, preset: str, extra: tuple[str, ...] = ()) -> dict[str, LoraModule]:
    """A slider file's modules for a tiny ``arch`` UNet: real names, non-full-size widths."""
    unet = build_unet(arch, tiny=True, device="meta")
    layers = select_layers(unet, preset)
    layers.update({name: m for name, m in unet.named_modules() if name.endswith(extra) and extra})
    modules = {}
    for path, layer in layers.items():
        down = torch.empty((2, *layer.weight.shape[1:]), device="meta")
        up = torch.empty((layer.weight.shape[0], 2, *([1, 1] if down.dim() == 4 else [])), device="meta")
        modules[keymap.ldm_to_unet_file_key(path, arch)] = LoraModule(down, up, 1.0)
    return modules


def test_detect_arch_on_tiny_models():
    assert detect_arch(tiny_file("sdxl", "full"), {}) == {"sdxl"}
    assert detect_arch(tiny_file("sd1", "full"), {}) == {"sd1", "sd2"}  # context 32: no full-size width
    assert detect_arch(tiny_file("sd2", "xattn"), {}) == {"sd1", "sd2"}
    assert detect_arch(tiny_file("sd1", "noxattn", (".proj_in",)), {}) == {"sd1"}  # a 1×1 conv proj_in
    assert detect_arch(tiny_file("sd2", "noxattn", (".proj_in",)), {}) == {"sd2"}  # a Linear one
    assert detect_arch(tiny_file("sd2", "noxattn"), METADATA["sd2"]) == {"sd2"}


@pytest.mark.parametrize(("metadata", "expected"), [
    ({"ss_base_model_version": "sd_v1"}, "sd1"),
    ({"ss_base_model_version": "sd_v2"}, "sd2"),
    ({"ss_base_model_version": "sd_v2_v"}, "sd2"),
    ({"ss_base_model_version": "sdxl_base_v1-0"}, "sdxl"),
    ({"ss_v2": "True"}, "sd2"),
    ({"ss_v2": "False"}, None),
    ({"modelspec.architecture": "stable-diffusion-v1"}, "sd1"),
    ({"modelspec.architecture": "stable-diffusion-v2-512/lora"}, "sd2"),
    ({"modelspec.architecture": "stable-diffusion-v2-768-v"}, "sd2"),
    ({"modelspec.architecture": "stable-diffusion-xl-v1-base/lora"}, "sdxl"),
    ({"modelspec.architecture": "stable-diffusion-v3-medium/lora"}, None),
    ({"sliders.arch": "sd2", "ss_base_model_version": "sd_v1"}, "sd2"),
    ({"ss_output_name": "x"}, None),
    ({}, None),
    (None, None),
])
def test_arch_from_metadata(metadata, expected):
    assert arch_from_metadata(metadata) == expected


def test_arch_labels():
    assert set(ARCH_LABELS) == set(ARCHES) == {"sd1", "sd2", "sdxl"}


@pytest.mark.parametrize("tiny", [True, False])
@pytest.mark.parametrize("arch", ARCHES)
def test_detect_model_arch(arch, tiny):
    unet = build_unet(arch, tiny=True, device="meta") if tiny else full_unet(arch)
    assert detect_model_arch(unet) == arch
