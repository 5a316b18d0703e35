"""The benchmark's own store of trained sliders (``--sliders-dir``): a re-measurement sees the very weights.

Keyed by the toy UNet's module paths in fp32 (the toy UNet has no kohya key layout), with the effect score and
the settings that made the slider, so a stored slider trained otherwise is refused rather than measured.
"""

from __future__ import annotations

import json
import os

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lib_sliders.files.lora import LoraModule, SliderNetwork
from lib_sliders.training.effect import EffectScore


def write_network(network: SliderNetwork, score: EffectScore | None, settings: dict, path: str) -> None:
    """The bench's own store, keyed by the toy UNet's module paths in fp32 (the toy UNet has no kohya key
    layout), so a re-measurement sees the very weights the first run measured."""
    tensors = {}
    for module_path, module in network.unet.items():
        tensors[f"{module_path}.down"] = module.down.detach().float().contiguous()
        tensors[f"{module_path}.up"] = module.up.detach().float().contiguous()
        tensors[f"{module_path}.alpha"] = torch.tensor(float(module.alpha))
    metadata = {"name": network.name, "arch": ",".join(sorted(network.arch)),
                "effect": json.dumps(score.to_dict() if score else None), "settings": json.dumps(settings)}
    save_file(tensors, path + ".partial", metadata=metadata)
    os.replace(path + ".partial", path)  # a run stopped while writing leaves no file that looks complete


def read_network(path: str) -> tuple[SliderNetwork, EffectScore | None, dict]:
    with safe_open(path, "pt") as file:
        metadata = file.metadata()
        tensors = {key: file.get_tensor(key) for key in file.keys()}
    paths = sorted({key.rsplit(".", 1)[0] for key in tensors})
    unet = {p: LoraModule(tensors[f"{p}.down"], tensors[f"{p}.up"], float(tensors[f"{p}.alpha"])) for p in paths}
    if "settings" not in metadata:
        raise SystemExit(f"{path}: no training settings stored (written by an older fidelity.py): delete it, or "
                         "choose another --sliders-dir")
    stored = json.loads(metadata["effect"])
    score = EffectScore(**{k: v for k, v in stored.items() if k != "does_nothing"}) if stored else None
    arch = frozenset(a for a in metadata["arch"].split(",") if a)
    return SliderNetwork(metadata["name"], unet=unet, arch=arch, source=path), score, json.loads(metadata["settings"])
