"""Random full-size slider files for a real webui (no weights exist offline, so the integration tests make them).

    python tests/integration/make_sliders.py SLIDERS_DIR [LORA_DIR] [--arch sd1|sd2|sdxl]

writes into SLIDERS_DIR, for the model kind ``--arch`` (default ``sd1``: the webui's checkpoint is SD 1.x):
* ``it_age.safetensors`` — noxattn preset (UNet only; SDXL: xattn, see below), recommended α range [-4, 4];
* ``it_text.safetensors`` — UNet attn2 + text-encoder q/k/v/out (exercises the text-encoder path);
* ``it_xl.safetensors`` — always SDXL: must be refused with a clear message on an SD 1.x/2.x model;

and into LORA_DIR (the webui's Lora folder) ``it_lora.safetensors``: the same weights as ``it_age`` without our
slider metadata, so the built-in Lora applies it (its result must match ``<slider:it_age:1>``).

The deltas are random but sized so that α = 2 visibly changes a 64 px image of a random-weight model.

On SDXL ``it_age``/``it_lora`` use the xattn preset: the built-in Lora (and merge mode) back up every weight a
network touches, and noxattn touches ≈ 2.2 G of the fp32 UNet's 2.6 G parameters (+9 GB: a 24 GB machine ran out of
memory); xattn touches ≈ 0.55 G (+2.2 GB).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import safetensors.torch
import torch

from lib_sliders.files.layout import ModuleShape, text_layout, unet_layout
from lib_sliders.files.lora import LoraModule, SliderNetwork
from lib_sliders.files.slider_file import save_slider
from lib_sliders.prompt.presets import preset_includes


def random_module(shape: ModuleShape, rank: int, generator: torch.Generator, gain: float) -> LoraModule:
    down_shape = (rank, shape.in_features, *shape.kernel) if shape.kind == "conv" else (rank, shape.in_features)
    up_shape = (shape.out_features, rank, 1, 1) if shape.kind == "conv" else (shape.out_features, rank)
    fan_in = torch.Size(down_shape[1:]).numel()
    down = torch.randn(down_shape, generator=generator) / fan_in**0.5
    up = torch.randn(up_shape, generator=generator) * gain / rank**0.5
    return LoraModule(down=down, up=up, alpha=float(rank))


def make(arch: str, preset: str, name: str, seed: int, with_text: bool = False, gain: float = 0.5) -> SliderNetwork:
    generator = torch.Generator().manual_seed(seed)
    unet = {path: random_module(shape, 4, generator, gain)
            for path, shape in sorted(unet_layout(arch).items()) if preset_includes(preset, path)}
    text = []
    if with_text:
        text = [{path: random_module(shape, 4, generator, gain) for path, shape in sorted(layers.items())
                 if "self_attn" in path} for layers in text_layout(arch)]
    return SliderNetwork(name=name, unet=unet, text=text, arch=frozenset({arch}))


def main(out: str, lora_out: str | None = None, arch: str = "sd1") -> None:
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    age = make(arch, "xattn" if arch == "sdxl" else "noxattn", "it_age", 1)
    save_slider(age, folder / "it_age.safetensors", arch=arch, alpha_range=(-4.0, 4.0), overwrite=True)
    if lora_out:
        Path(lora_out).mkdir(parents=True, exist_ok=True)
        lora = Path(lora_out) / "it_lora.safetensors"
        header = save_slider(age, lora, arch=arch, overwrite=True)
        # A plain LoRA to the webui: rewrite without our sliders.* keys (tensors unchanged).
        tensors = safetensors.torch.load_file(lora)
        plain = {k: v for k, v in header.items() if not k.startswith("sliders.")}
        safetensors.torch.save_file(tensors, lora, metadata=plain)
    save_slider(make(arch, "xattn", "it_text", 2, with_text=True), folder / "it_text.safetensors", arch=arch,
                overwrite=True)
    save_slider(make("sdxl", "xattn", "it_xl", 3), folder / "it_xl.safetensors", arch="sdxl", overwrite=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sliders_dir", nargs="?", default="models/sliders")
    parser.add_argument("lora_dir", nargs="?")
    parser.add_argument("--arch", choices=("sd1", "sd2", "sdxl"), default="sd1", help="the loaded model's kind")
    args = parser.parse_args()
    main(args.sliders_dir, args.lora_dir, args.arch)
