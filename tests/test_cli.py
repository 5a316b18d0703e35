"""``python -m lib_sliders inspect|convert``: output, conversion, and one ``error: <path>: <problem>`` line
(exit code 2, no traceback) for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from lib_sliders.cli import main
from lib_sliders.files.keymap import ldm_to_diffusers
from lib_sliders.files.layout import unet_layout
from lib_sliders.files.lora import LoraModule, SliderNetwork
from lib_sliders.files.slider_file import load_slider, save_slider
from lib_sliders.prompt.presets import preset_includes

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def layout_slider(arch: str, preset: str, rank: int = 1, seed: int = 0) -> SliderNetwork:
    """A random slider shaped like the full-size model (no model built), so presets are recognisable."""
    g = torch.Generator().manual_seed(seed)
    modules = {}
    for path, shape in unet_layout(arch).items():
        if preset_includes(preset, path):
            down = torch.randn(rank, shape.in_features, *(shape.kernel if shape.kind == "conv" else ()), generator=g)
            up = torch.randn(shape.out_features, rank, *((1, 1) if shape.kind == "conv" else ()), generator=g)
            modules[path] = LoraModule(down, up, alpha=1.0)
    return SliderNetwork(name="layout", unet=modules)


def official_pt(network: SliderNetwork, arch: str, path) -> None:
    """The official trainer's file: diffusers-named kohya keys, bf16, 0-dim alpha, torch.save."""
    state = {}
    for layer, module in network.unet.items():
        name = "lora_unet_" + ldm_to_diffusers(layer, arch).replace(".", "_")
        state[f"{name}.lora_down.weight"] = module.down.to(torch.bfloat16)
        state[f"{name}.lora_up.weight"] = module.up.to(torch.bfloat16)
        state[f"{name}.alpha"] = torch.tensor(module.alpha, dtype=torch.bfloat16)
    torch.save(state, path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    age = folder / "age.safetensors"
    save_slider(layout_slider("sd1", "noxattn", rank=2), age, arch="sd1", title="age",
                alpha_range=(-5, 5), prompts={"target": "person", "positive": "old person"})
    official_pt(layout_slider("sd1", "noxattn", seed=1), "sd1", folder / "official.pt")
    (folder / "truncated.safetensors").write_bytes(age.read_bytes()[:1000])
    return folder


@pytest.fixture(scope="module")
def runs(files):
    """Every subprocess case at once: each pays the torch import, so run them side by side."""
    cases = {
        "inspect": ["inspect", str(files / "age.safetensors")],
        "inspect_json": ["inspect", str(files / "age.safetensors"), "--json"],
        "convert": ["convert", str(files / "official.pt"), str(files / "official.safetensors"), "--arch", "sd1", "--dtype", "fp32"],
        "missing": ["inspect", str(files / "missing.safetensors")],
        "truncated": ["convert", str(files / "truncated.safetensors"), str(files / "out.safetensors")],
    }
    processes = {
        name: subprocess.Popen([sys.executable, "-m", "lib_sliders", *args], cwd=REPO_ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for name, args in cases.items()
    }
    results = {}
    for name, process in processes.items():
        stdout, stderr = process.communicate(timeout=120)
        results[name] = (process.returncode, stdout, stderr)
    return results


def test_inspect_text(runs, files):
    code, stdout, stderr = runs["inspect"]
    assert code == 0, stderr
    lines = stdout.splitlines()
    assert f"file:          {files / 'age.safetensors'}" in lines
    assert "architecture:  SD 1.x (sd1)" in lines
    assert "rank:          2" in lines and "alpha:         1.0" in lines
    assert "UNet:          150 modules (preset noxattn): attn1 64, attn2 0, conv 86, other 0" in lines
    assert "text encoder:  none" in lines
    assert "slider range:  -5 to 5, default start 0" in lines
    assert "  ss_network_module: networks.lora" in lines
    assert '  sliders.prompts: {"positive": "old person", "target": "person"}' in lines


def test_inspect_json(runs):
    code, stdout, stderr = runs["inspect_json"]
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["arch"] == ["sd1"]
    assert summary["rank"] == 2 and summary["alpha"] == 1.0
    assert summary["modules"] == {"unet": 150, "attn1": 64, "attn2": 0, "conv": 86, "other": 0, "text": 0}
    assert summary["preset"] == "noxattn"
    assert summary["text_encoders"] == [0]
    assert summary["alpha_range"] == [-5.0, 5.0] and summary["default_start"] == 0.0
    assert summary["metadata"]["sliders.arch"] == "sd1"
    assert json.loads(summary["metadata"]["sliders.prompts"])["positive"] == "old person"


def test_convert_official_pt(runs, files):
    code, stdout, stderr = runs["convert"]
    assert code == 0, stderr
    assert stdout.startswith(f"wrote {files / 'official.safetensors'} (150 modules, SD 1.x, fp32)")
    source = load_slider(files / "official.pt")
    converted = load_slider(files / "official.safetensors")
    assert source.arch == {"sd1", "sd2"} and converted.arch == {"sd1"}
    assert converted.unet.keys() == source.unet.keys()
    for path, module in source.unet.items():
        assert torch.equal(converted.unet[path].down, module.down.float())
        assert torch.equal(converted.unet[path].up, module.up.float())
        assert converted.unet[path].alpha == module.alpha
    assert converted.metadata["ss_output_name"] == "official"


@pytest.mark.parametrize("case, fragment", [
    ("missing", "missing.safetensors: file not found"),
    ("truncated", "truncated.safetensors: file is truncated or not a safetensors file"),
])
def test_bad_input_subprocess(runs, case, fragment):
    code, stdout, stderr = runs[case]
    assert code == 2
    assert stdout == ""
    assert len(stderr.splitlines()) == 1
    assert stderr.startswith("error: ") and fragment in stderr
    assert "Traceback" not in stderr


def run_main(capsys, *args) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_error(result, path, fragment):
    code, stdout, stderr = result
    assert code == 2 and stdout == ""
    assert stderr.count("\n") == 1
    assert stderr.startswith(f"error: {path}: ")
    assert fragment in stderr


def test_convert_needs_arch_when_ambiguous(capsys, files, tmp_path):
    result = run_main(capsys, "convert", str(files / "official.pt"), str(tmp_path / "x.safetensors"))
    assert_error(result, files / "official.pt", "fits SD 1.x or SD 2.x; pass --arch sd1 or --arch sd2")
    result = run_main(capsys, "convert", str(files / "official.pt"), str(tmp_path / "x.safetensors"), "--arch", "sdxl")
    assert_error(result, files / "official.pt", "made for SD 1.x or SD 2.x, not SDXL")
    assert not (tmp_path / "x.safetensors").exists()
    code, stdout, _ = run_main(capsys, "convert", str(files / "official.pt"), str(tmp_path / "x.safetensors"), "--arch", "sd2")
    assert code == 0 and load_slider(tmp_path / "x.safetensors").arch == {"sd2"}


def test_convert_refuses_bad_destinations(capsys, files, tmp_path):
    source = str(files / "age.safetensors")
    assert_error(run_main(capsys, "convert", source, str(tmp_path / "x.pt")), tmp_path / "x.pt", "output must be a .safetensors file")
    existing = tmp_path / "there.safetensors"
    existing.write_bytes(b"keep me")
    assert_error(run_main(capsys, "convert", source, str(existing)), existing, "already exists (pass --overwrite")
    assert existing.read_bytes() == b"keep me"
    code, _, _ = run_main(capsys, "convert", source, str(existing), "--overwrite", "--dtype", "bf16")
    assert code == 0
    converted = load_slider(existing)
    assert next(iter(converted.unet.values())).down.dtype == torch.bfloat16
    # sliders.* settings survive a conversion; the rest is regenerated.
    assert converted.metadata["sliders.alpha_range"] == "[-5.0, 5.0]"
    assert json.loads(converted.metadata["sliders.prompts"])["target"] == "person"
    assert converted.metadata["ss_output_name"] == "there"


def test_bad_inputs_in_process(capsys, tmp_path):
    import safetensors.torch

    checkpoint = tmp_path / "model.safetensors"
    safetensors.torch.save_file({"model.diffusion_model.out.2.weight": torch.zeros(4, 4)}, str(checkpoint))
    assert_error(run_main(capsys, "inspect", str(checkpoint)), checkpoint, "not a LoRA")
    loha = tmp_path / "loha.safetensors"
    safetensors.torch.save_file({"lora_unet_down_blocks_0_resnets_0_conv1.hada_w1_a": torch.zeros(4, 4)}, str(loha))
    assert_error(run_main(capsys, "inspect", str(loha)), loha, "unsupported network type LoHa")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x80\x02garbage" * 20)
    assert_error(run_main(capsys, "inspect", str(garbage)), garbage, "file is truncated or not a PyTorch checkpoint")
    assert_error(run_main(capsys, "inspect", str(tmp_path)), tmp_path, "not a file")
