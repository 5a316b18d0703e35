"""Slider files: kohya-exact writing, bit-exact round trips, the official trainer's .pt files, LoCon/PEFT
variants, metadata and hashes, atomic writes, and a clear SliderFileError for every kind of bad input."""

from __future__ import annotations

import functools
import hashlib
import json
import os

import pytest
import safetensors.torch
import torch
from safetensors import safe_open

from bench.common.random_sliders import random_slider
from bench.common.tiny_models import ARCHES, build_unet
from lib_sliders import __version__
from lib_sliders.errors import SliderFileError
from lib_sliders.files import slider_file
from lib_sliders.files.keymap import ldm_to_diffusers
from lib_sliders.files.lora import LoraModule, SliderNetwork
from lib_sliders.files.metadata import slider_info
from lib_sliders.files.slider_file import check_compatible, load_slider, save_slider


@functools.cache
def tiny_unet(arch: str) -> torch.nn.Module:
    return build_unet(arch)


def read_file(path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt") as file:
        return {key: file.get_tensor(key) for key in file.keys()}, file.metadata()


def assert_same_modules(loaded: dict[str, LoraModule], expected: dict[str, LoraModule]) -> None:
    assert loaded.keys() == expected.keys()
    for path, module in expected.items():
        got = loaded[path]
        assert got.down.dtype == module.down.dtype and torch.equal(got.down, module.down), path
        assert got.up.dtype == module.up.dtype and torch.equal(got.up, module.up), path
        assert got.alpha == module.alpha, path


def save_tensors(path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None):
    if str(path).endswith(".safetensors"):
        safetensors.torch.save_file(tensors, str(path), metadata=metadata)
    else:
        torch.save(tensors, path)
    return path


def lora_tensors(name: str, rank: int = 4, n_in: int = 32, n_out: int = 32, alpha: float | None = 1.0) -> dict:
    """One Linear LoRA module in kohya naming."""
    tensors = {f"{name}.lora_down.weight": torch.randn(rank, n_in), f"{name}.lora_up.weight": torch.randn(n_out, rank)}
    if alpha is not None:
        tensors[f"{name}.alpha"] = torch.tensor(alpha)
    return tensors


SD1_ATTN1_Q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
SDXL_ATTN1_Q = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"


# --------------------------------------------------------------------------- round trip and file layout


@pytest.mark.parametrize("preset", ["noxattn", "full"])
@pytest.mark.parametrize("arch", ARCHES)
def test_round_trip_is_bit_exact_at_fp32(tmp_path, arch, preset):
    network = random_slider(tiny_unet(arch), preset, rank=4, alpha=2.0, seed=3)
    path = tmp_path / f"{arch}_{preset}.safetensors"
    written = save_slider(network, path, arch=arch, dtype=torch.float32)

    loaded = load_slider(path)
    assert_same_modules(loaded.unet, network.unet)
    assert loaded.arch == {arch}  # sliders.arch tells SD1 from SD2 even where the names can't
    assert loaded.name == f"{arch}_{preset}" and loaded.source == str(path)
    assert loaded.metadata == written
    assert not loaded.has_text and len(loaded.text) == (2 if arch == "sdxl" else 1)


@pytest.mark.parametrize("arch, name", [
    ("sd1", SD1_ATTN1_Q),
    ("sd1", "lora_unet_down_blocks_0_resnets_0_conv1"),
    ("sd1", "lora_unet_up_blocks_0_upsamplers_0_conv"),
    ("sd1", "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_out_0"),
    ("sd2", "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_attn1_to_v"),
    ("sdxl", SDXL_ATTN1_Q),
    ("sdxl", "lora_unet_middle_block_1_transformer_blocks_1_attn1_to_k"),
    ("sdxl", "lora_unet_output_blocks_2_2_conv"),  # SDXL's first upsampler follows a transformer
    ("sdxl", "lora_unet_output_blocks_0_0_skip_connection"),
])
def test_file_keys_are_kohya_names(tmp_path, arch, name):
    network = random_slider(tiny_unet(arch), "noxattn")
    save_slider(network, tmp_path / "s.safetensors", arch=arch)
    tensors, _ = read_file(tmp_path / "s.safetensors")
    assert {f"{name}.lora_down.weight", f"{name}.lora_up.weight", f"{name}.alpha"} <= tensors.keys()


@pytest.mark.parametrize("arch", ARCHES)
def test_file_holds_only_lora_tensors(tmp_path, arch):
    network = random_slider(tiny_unet(arch), "full")
    save_slider(network, tmp_path / "s.safetensors", arch=arch)
    tensors, _ = read_file(tmp_path / "s.safetensors")
    assert len(tensors) == 3 * len(network.unet)
    modules = {key.split(".", 1)[0] for key in tensors}
    assert len(modules) == len(network.unet)
    assert all(name.startswith("lora_unet_") for name in modules)
    for module in modules:
        assert tensors[f"{module}.alpha"].dim() == 0
        assert {k for k in tensors if k.startswith(module + ".")} == {
            f"{module}.lora_down.weight", f"{module}.lora_up.weight", f"{module}.alpha"}
    assert {t.dtype for t in tensors.values()} == {torch.float16}  # default save dtype, alpha included


def test_text_encoder_modules_round_trip(tmp_path):
    g = torch.Generator().manual_seed(0)

    def module(n_in, n_out):
        return LoraModule(torch.randn(2, n_in, generator=g), torch.randn(n_out, 2, generator=g), 1.0)

    network = SliderNetwork(name="te", text=[{"encoder.layers.0.self_attn.q_proj": module(768, 768)},
                                             {"encoder.layers.31.mlp.fc2": module(5120, 1280)}])
    save_slider(network, tmp_path / "te.safetensors", arch="sdxl", dtype=torch.float32)
    tensors, _ = read_file(tmp_path / "te.safetensors")
    assert "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight" in tensors
    assert "lora_te2_text_model_encoder_layers_31_mlp_fc2.alpha" in tensors
    loaded = load_slider(tmp_path / "te.safetensors")
    assert loaded.arch == {"sdxl"}
    for index in (0, 1):
        assert_same_modules(loaded.text[index], network.text[index])


# --------------------------------------------------------------------------- metadata and hashes


def test_metadata_keys(tmp_path):
    network = random_slider(tiny_unet("sd1"), "noxattn", rank=4, alpha=1.0)
    path = tmp_path / "age.safetensors"
    save_slider(network, path, arch="sd1", title="Age", prompts={"target": "person"}, alpha_range=(-5, 5))
    _, metadata = read_file(path)
    assert all(isinstance(value, str) for value in metadata.values())
    assert metadata["ss_network_module"] == "networks.lora"
    assert metadata["ss_network_dim"] == "4" and metadata["ss_network_alpha"] == "1.0"
    assert json.loads(metadata["ss_network_args"]) == {"conv_dim": "4", "conv_alpha": "1.0"}
    assert metadata["ss_base_model_version"] == "sd_v1" and metadata["ss_v2"] == "False"
    assert metadata["ss_output_name"] == "Age" and metadata["modelspec.title"] == "Age"
    assert metadata["modelspec.sai_model_spec"] == "1.0.1"
    assert metadata["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert metadata["modelspec.implementation"] == "diffusers"
    assert metadata["modelspec.resolution"] == "512x512"
    assert metadata["modelspec.date"][:4].isdigit()
    assert metadata["modelspec.usage_hint"] == "Use <slider:Age:α> (α from -5 to 5)"
    assert metadata["sliders.version"] == __version__ and metadata["sliders.arch"] == "sd1"
    info = slider_info(metadata)
    assert info.alpha_range == (-5.0, 5.0) and info.default_start == 0.0
    assert info.prompts == {"target": "person"} and info.training is None and info.version == __version__


@pytest.mark.parametrize("arch, prediction, expected", [
    ("sd2", "v", ("sd_v2_v", "True", "stable-diffusion-v2-768-v/lora", "diffusers", "768x768")),
    ("sd2", None, ("sd_v2", "True", "stable-diffusion-v2-512/lora", "diffusers", "512x512")),
    ("sdxl", "epsilon", ("sdxl_base_v1-0", "False", "stable-diffusion-xl-v1-base/lora",
                         "https://github.com/Stability-AI/generative-models", "1024x1024")),
])
def test_metadata_per_arch(tmp_path, arch, prediction, expected):
    network = random_slider(tiny_unet(arch), "selfattn")
    metadata = save_slider(network, tmp_path / "s.safetensors", arch=arch, prediction_type=prediction)
    keys = ("ss_base_model_version", "ss_v2", "modelspec.architecture", "modelspec.implementation", "modelspec.resolution")
    assert tuple(metadata[k] for k in keys) == expected
    assert metadata.get("modelspec.prediction_type") == prediction
    assert "ss_network_args" not in metadata  # no LoCon convs in a selfattn slider


def test_extra_metadata_overrides_and_usage_hint_follows(tmp_path):
    network = random_slider(tiny_unet("sd1"), "selfattn")
    extra = {"sliders.alpha_range": "[-2, 4]", "ssmd_author": "me", "sliders.training": {"steps": 500}}
    metadata = save_slider(network, tmp_path / "s.safetensors", arch="sd1", extra_metadata=extra)
    assert metadata["ssmd_author"] == "me" and json.loads(metadata["sliders.training"]) == {"steps": 500}
    assert slider_info(metadata).alpha_range == (-2.0, 4.0)
    assert metadata["modelspec.usage_hint"].endswith("(α from -2 to 4)")


def test_hashes_match_kohya_recomputed_independently(tmp_path):
    network = random_slider(tiny_unet("sd1"), "noxattn", rank=16)  # > 1.06 MiB: the legacy hash sees real bytes
    path = tmp_path / "s.safetensors"
    save_slider(network, path, arch="sd1", extra_metadata={"ssmd_author": "x"})
    tensors, metadata = read_file(path)

    ss_only = safetensors.torch.save(tensors, metadata={k: v for k, v in metadata.items() if k.startswith("ss_")})
    assert len(ss_only) > 0x110000
    header = int.from_bytes(ss_only[:8], "little")
    assert metadata["sshs_model_hash"] == hashlib.sha256(ss_only[8 + header:]).hexdigest()
    assert metadata["sshs_legacy_hash"] == hashlib.sha256(ss_only[0x100000:0x110000]).hexdigest()[:8]

    # ModelSpec: sha256 of the tensor data of the file itself (the same bytes whatever the header).
    data = path.read_bytes()
    header = int.from_bytes(data[:8], "little")
    assert metadata["modelspec.hash_sha256"] == "0x" + hashlib.sha256(data[8 + header:]).hexdigest()


def test_slider_info_falls_back_on_bad_values():
    info = slider_info({"sliders.alpha_range": "[3, -3]", "sliders.default_start": "soon",
                        "sliders.prompts": "{not json", "sliders.training": "[1, 2]"})
    assert info.alpha_range == (-3.0, 3.0) and info.default_start == 0.0
    assert info.prompts is None and info.training is None and info.version is None
    assert slider_info(None).alpha_range == (-3.0, 3.0)
    assert slider_info({"sliders.default_start": "0.25", "sliders.alpha_range": "[-1.5, 2]"}) == slider_info(
        {"sliders.default_start": "0.25", "sliders.alpha_range": "[-1.5, 2.0]"})


# --------------------------------------------------------------------------- atomic writes


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    network = random_slider(tiny_unet("sd1"), "selfattn")

    def fail(*args):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(slider_file.os, "replace", fail)
    with pytest.raises(RuntimeError, match="disk on fire"):
        save_slider(network, tmp_path / "s.safetensors", arch="sd1")
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_keeps_the_old_file(tmp_path, monkeypatch):
    network = random_slider(tiny_unet("sd1"), "selfattn")
    path = tmp_path / "s.safetensors"
    save_slider(network, path, arch="sd1")
    before = path.read_bytes()

    def fail(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(slider_file.os, "fsync", fail)
    with pytest.raises(SliderFileError, match="cannot write: No space left on device") as error:
        save_slider(random_slider(tiny_unet("sd1"), "selfattn", seed=9), path, arch="sd1", overwrite=True)
    assert error.value.path == str(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["s.safetensors"]


def test_refuses_to_overwrite_unless_asked(tmp_path):
    network = random_slider(tiny_unet("sd1"), "selfattn")
    path = tmp_path / "s.safetensors"
    save_slider(network, path, arch="sd1")
    with pytest.raises(SliderFileError, match="already exists"):
        save_slider(network, path, arch="sd1")
    save_slider(random_slider(tiny_unet("sd1"), "selfattn", seed=5), path, arch="sd1", overwrite=True, dtype=torch.float32)
    assert_same_modules(load_slider(path).unet, random_slider(tiny_unet("sd1"), "selfattn", seed=5).unet)
    assert os.stat(path).st_mode & 0o777 == 0o644


@pytest.mark.parametrize("name, problem", [
    ("s.pt", "saved as .safetensors"),
    ("missing/s.safetensors", "does not exist"),
])
def test_save_refuses_bad_targets(tmp_path, name, problem):
    with pytest.raises(SliderFileError, match=problem):
        save_slider(random_slider(tiny_unet("sd1"), "selfattn"), tmp_path / name, arch="sd1")


def test_save_refuses_a_slider_for_another_arch(tmp_path):
    network = random_slider(tiny_unet("sdxl"), "selfattn", arch=frozenset({"sdxl"}))
    with pytest.raises(SliderFileError, match="made for SDXL as SD 1.x"):
        save_slider(network, tmp_path / "s.safetensors", arch="sd1")


# --------------------------------------------------------------------------- other producers' files


def official_state_dict(network: SliderNetwork, arch: str) -> dict[str, torch.Tensor]:
    """What rohitgandikota/sliders saves: diffusers-named kohya keys (SDXL too), bf16, 0-dim alpha, torch.save."""
    state = {}
    for path, module in network.unet.items():
        name = "lora_unet_" + ldm_to_diffusers(path, arch).replace(".", "_")
        state[f"{name}.lora_down.weight"] = module.down.to(torch.bfloat16)
        state[f"{name}.lora_up.weight"] = module.up.to(torch.bfloat16)
        state[f"{name}.alpha"] = torch.tensor(module.alpha, dtype=torch.bfloat16)
    return state


@pytest.mark.parametrize("arch, name, ldm_path", [
    ("sd1", "lora_unet_up_blocks_0_upsamplers_0_conv", "output_blocks.2.1.conv"),
    ("sdxl", "lora_unet_up_blocks_0_upsamplers_0_conv", "output_blocks.2.2.conv"),
    ("sdxl", "lora_unet_down_blocks_1_attentions_0_transformer_blocks_1_attn1_to_out_0",
     "input_blocks.4.1.transformer_blocks.1.attn1.to_out.0"),
])
def test_official_pt_loads_with_every_key_matched(tmp_path, arch, name, ldm_path):
    network = random_slider(tiny_unet(arch), "noxattn", alpha=1.0)
    state = official_state_dict(network, arch)
    assert f"{name}.lora_down.weight" in state
    path = tmp_path / "official.pt"
    torch.save(state, path)

    loaded = load_slider(path)
    assert len(loaded.unet) == len({key.split(".", 1)[0] for key in state})
    assert loaded.arch == ({"sdxl"} if arch == "sdxl" else {"sd1", "sd2"})  # no metadata, and noxattn
    assert loaded.metadata == {}
    expected = {p: m.to(dtype=torch.bfloat16) for p, m in network.unet.items()}
    assert_same_modules(loaded.unet, expected)
    assert torch.equal(loaded.unet[ldm_path].down, state[f"{name}.lora_down.weight"])


def test_locon_cp_matches_the_webui_math(tmp_path):
    g = torch.Generator().manual_seed(0)
    rank, n_in, n_out = 4, 32, 32
    down = torch.randn(rank, n_in, 1, 1, generator=g)
    mid = torch.randn(rank, rank, 3, 3, generator=g)
    up = torch.randn(n_out, rank, 1, 1, generator=g)
    name = "lora_unet_down_blocks_0_resnets_0_conv1"
    tensors = {f"{name}.lora_down.weight": down, f"{name}.lora_mid.weight": mid,
               f"{name}.lora_up.weight": up, f"{name}.alpha": torch.tensor(2.0)}
    loaded = load_slider(save_tensors(tmp_path / "cp.safetensors", tensors))

    module = loaded.unet["input_blocks.1.0.in_layers.2"]
    # The webui's lyco_helpers.rebuild_cp_decomposition(up, down, mid) times alpha / dim.
    expected = torch.einsum("n m k l, i n, m j -> i j k l", mid, up.reshape(n_out, -1), down.reshape(rank, -1)) * 2.0 / rank
    torch.testing.assert_close(module.delta_weight(), expected, rtol=1e-5, atol=1e-5)
    assert module.down.shape == (rank, n_in, 3, 3)


def test_locon_3x3_conv_and_peft_names_and_missing_alpha(tmp_path):
    g = torch.Generator().manual_seed(1)
    conv = "lora_unet_down_blocks_0_resnets_0_conv2"
    linear = SD1_ATTN1_Q
    tensors = {
        f"{conv}.lora_down.weight": torch.randn(4, 32, 3, 3, generator=g),
        f"{conv}.lora_up.weight": torch.randn(32, 4, 1, 1, generator=g),
        f"{conv}.alpha": torch.tensor(1.0),
        f"{linear}.lora_A.weight": torch.randn(8, 32, generator=g),  # PEFT: A is down, B is up
        f"{linear}.lora_B.weight": torch.randn(32, 8, generator=g),
    }
    loaded = load_slider(save_tensors(tmp_path / "mixed.safetensors", tensors))
    conv_module = loaded.unet["input_blocks.1.0.out_layers.3"]
    assert torch.equal(conv_module.down, tensors[f"{conv}.lora_down.weight"]) and conv_module.alpha == 1.0
    peft = loaded.unet["input_blocks.1.1.transformer_blocks.0.attn1.to_q"]
    assert torch.equal(peft.down, tensors[f"{linear}.lora_A.weight"])
    assert torch.equal(peft.up, tensors[f"{linear}.lora_B.weight"])
    assert peft.alpha == 8.0 and peft.scale == 1.0  # missing alpha means alpha = rank


# --------------------------------------------------------------------------- bad input


def assert_refused(path, *fragments) -> SliderFileError:
    with pytest.raises(SliderFileError) as error:
        load_slider(path)
    assert error.value.path == str(path)
    assert str(error.value).startswith(f"{path}: ")
    assert "\n" not in str(error.value)
    for fragment in fragments:
        assert fragment in error.value.problem
    return error.value


def test_refuses_missing_file_folder_and_other_extensions(tmp_path):
    assert_refused(tmp_path / "nope.safetensors", "file not found")
    (tmp_path / "dir.safetensors").mkdir()
    assert_refused(tmp_path / "dir.safetensors", "not a file")
    (tmp_path / "notes.txt").write_text("hi")
    assert_refused(tmp_path / "notes.txt", "unsupported file type '.txt'")
    (tmp_path / "empty.safetensors").write_bytes(b"")
    assert_refused(tmp_path / "empty.safetensors", "file is empty")


def test_refuses_truncated_and_garbage_files(tmp_path):
    good = save_tensors(tmp_path / "good.safetensors", lora_tensors(SD1_ATTN1_Q))
    data = good.read_bytes()
    (tmp_path / "half.safetensors").write_bytes(data[: len(data) // 2])
    assert_refused(tmp_path / "half.safetensors", "truncated or not a safetensors file")
    garbage = bytes(range(7, 250)) * 8
    (tmp_path / "garbage.safetensors").write_bytes(garbage)
    assert_refused(tmp_path / "garbage.safetensors", "truncated or not a safetensors file")
    (tmp_path / "garbage.pt").write_bytes(garbage)
    assert_refused(tmp_path / "garbage.pt", "not a PyTorch checkpoint")
    good_pt = save_tensors(tmp_path / "good.pt", lora_tensors(SD1_ATTN1_Q))
    (tmp_path / "half.pt").write_bytes(good_pt.read_bytes()[:300])
    assert_refused(tmp_path / "half.pt", "truncated or not a PyTorch checkpoint")
    (tmp_path / "pickle.bin").write_bytes(b"\x80\x02garbage" * 20)  # looks like a pickle, isn't one
    assert_refused(tmp_path / "pickle.bin", "truncated or not a PyTorch checkpoint")


class NotATensor:
    """Anything weights_only refuses to build."""


def test_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({**lora_tensors(SD1_ATTN1_Q), "payload": NotATensor()}, path)
    assert_refused(path, "refusing to unpickle objects other than tensors")
    ckpt = tmp_path / "evil.ckpt"
    torch.save(NotATensor(), ckpt)
    assert_refused(ckpt, "refusing to unpickle")


def test_refuses_checkpoints_and_other_formats(tmp_path):
    checkpoint = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3),
                  "first_stage_model.decoder.conv_in.bias": torch.zeros(4)}
    assert_refused(save_tensors(tmp_path / "model.safetensors", checkpoint), "not a LoRA: no lora_unet_/lora_te_ keys (is this a checkpoint?)")
    assert_refused(save_tensors(tmp_path / "model.ckpt", checkpoint), "is this a checkpoint?")
    peft = {"unet.down_blocks.0.attentions.0.proj_in.lora_A.weight": torch.zeros(4, 32)}
    assert_refused(save_tensors(tmp_path / "peft.safetensors", peft), "not a kohya-format LoRA")
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    assert_refused(tmp_path / "list.pt", "not a LoRA", "list")


@pytest.mark.parametrize("param, kind", [
    ("hada_w1_a", "LoHa"), ("lokr_w1", "LoKr"), ("oft_blocks", "OFT"), ("boft_blocks", "BOFT"),
    ("diff", "full (diff)"), ("dora_scale", "DoRA"),
])
def test_refuses_lycoris_types(tmp_path, param, kind):
    tensors = {f"{SD1_ATTN1_Q}.{param}": torch.zeros(4, 4), f"{SD1_ATTN1_Q}.alpha": torch.tensor(1.0)}
    assert_refused(save_tensors(tmp_path / "lyco.safetensors", tensors),
                   f"unsupported network type {kind} (only LoRA/LoCon sliders are supported")


def test_refuses_half_modules_and_rank_mismatch(tmp_path):
    tensors = lora_tensors(SD1_ATTN1_Q)
    del tensors[f"{SD1_ATTN1_Q}.lora_up.weight"]
    assert_refused(save_tensors(tmp_path / "a.safetensors", tensors), f"module {SD1_ATTN1_Q} has lora_down but no lora_up")
    tensors = lora_tensors(SD1_ATTN1_Q)
    del tensors[f"{SD1_ATTN1_Q}.lora_down.weight"]
    assert_refused(save_tensors(tmp_path / "b.safetensors", tensors), f"module {SD1_ATTN1_Q} has lora_up but no lora_down")
    tensors = lora_tensors(SD1_ATTN1_Q)
    tensors[f"{SD1_ATTN1_Q}.lora_up.weight"] = torch.zeros(32, 8)
    assert_refused(save_tensors(tmp_path / "c.safetensors", tensors),
                   f"rank mismatch in module {SD1_ATTN1_Q}: lora_down has rank 4, lora_up has rank 8")


def test_refuses_unknown_modules_and_architectures(tmp_path):
    tensors = {**lora_tensors(SD1_ATTN1_Q), **lora_tensors("lora_unet_foo_bar"), **lora_tensors("lora_unet_zap")}
    assert_refused(save_tensors(tmp_path / "unknown.safetensors", tensors), "unknown module 'lora_unet_foo_bar' and 1 more")
    # Each name exists in some model, but no model has both (SD1's 4th level, SDXL's attention at up_blocks.0).
    tensors = {**lora_tensors("lora_unet_down_blocks_3_resnets_0_time_emb_proj"),
               **lora_tensors("lora_unet_up_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q")}
    assert_refused(save_tensors(tmp_path / "mixed.safetensors", tensors), "unknown architecture")
    # Names that fit every model, but SD1/SD2 and SDXL put up_blocks.0's upsampler in different places.
    tensors = {**lora_tensors("lora_unet_up_blocks_0_upsamplers_0_conv"), **lora_tensors("lora_unet_down_blocks_1_resnets_0_conv1")}
    assert_refused(save_tensors(tmp_path / "either.safetensors", tensors),
                   "unknown architecture: fits SD 1.x or SD 2.x or SDXL, which place its layers differently")
    tensors = {**lora_tensors(SD1_ATTN1_Q), "lora_unet_extra_tensor": torch.zeros(3)}
    assert_refused(save_tensors(tmp_path / "extra.safetensors", tensors), "unexpected tensor 'lora_unet_extra_tensor'")


def test_check_compatible_names_the_file(tmp_path):
    save_slider(random_slider(tiny_unet("sdxl"), "selfattn"), tmp_path / "xl.safetensors", arch="sdxl")
    network = load_slider(tmp_path / "xl.safetensors")
    check_compatible(network, "sdxl")
    with pytest.raises(SliderFileError) as error:
        check_compatible(network, "sd1")
    assert error.value.path == str(tmp_path / "xl.safetensors")
    assert error.value.problem == "made for SDXL, but the loaded model is SD 1.x"

    torch.save(official_state_dict(random_slider(tiny_unet("sd1"), "selfattn"), "sd1"), tmp_path / "either.pt")
    either = load_slider(tmp_path / "either.pt")
    check_compatible(either, "sd1")
    check_compatible(either, "sd2")
    with pytest.raises(SliderFileError, match="made for SD 1.x or SD 2.x, but the loaded model is SDXL"):
        check_compatible(either, "sdxl")
