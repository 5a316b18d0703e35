"""Double of the built-in Lora's ``network`` module: a file on disk, a loaded network, its per-layer modules.

Only plain LoRA (``lora_down``/``lora_up``, optional ``alpha``) is modelled. A module's delta for a layer is
``up·down`` (a k×k ``down`` after a 1×1 ``up`` composes as a convolution) × alpha/rank × the network's multiplier —
the text-encoder one for layers named ``transformer…``, the UNet one otherwise — computed in fp32.
Left out: hashes (``shorthash`` is empty), other module types, DoRA, biases, the functional path.
"""

from __future__ import annotations

import os
from collections import namedtuple

import torch
from modules import shared

NetworkWeights = namedtuple("NetworkWeights", ["network_key", "sd_key", "w", "sd_module"])


class NetworkOnDisk:
    def __init__(self, name, filename):
        self.name, self.filename = name, filename
        self.is_safetensors = filename.lower().endswith(".safetensors")
        self.metadata = {}
        if self.is_safetensors:
            from safetensors import safe_open

            with safe_open(filename, framework="pt") as handle:
                self.metadata = dict(handle.metadata() or {})
        self.alias = self.metadata.get("ss_output_name", name)
        self.hash = self.shorthash = ""

    def read_hash(self):
        pass

    def get_alias(self):
        import networks

        by_file = shared.opts.lora_preferred_name == "Filename"
        return self.name if by_file or self.alias.lower() in networks.forbidden_network_aliases else self.alias


class Network:
    def __init__(self, name, network_on_disk: NetworkOnDisk):
        self.name, self.network_on_disk = name, network_on_disk
        self.te_multiplier = self.unet_multiplier = 1.0
        self.dyn_dim = None
        self.modules = {}  # compvis layer name → NetworkModule
        self.bundle_embeddings = {}
        self.mtime = os.path.getmtime(network_on_disk.filename)
        self.mentioned_name = None


class NetworkModule:
    """One layer's LoRA: ``calc_updown(weight)`` → ``(delta shaped like weight, extra bias or None)``."""

    def __init__(self, net: Network, weights: NetworkWeights):
        self.network, self.sd_key, self.sd_module = net, weights.sd_key, weights.sd_module
        self.network_key = weights.network_key
        self.down, self.up = weights.w["lora_down.weight"], weights.w["lora_up.weight"]
        self.dim = self.down.shape[0]
        self.alpha = float(weights.w["alpha"]) if "alpha" in weights.w else None

    def multiplier(self):
        return self.network.te_multiplier if "transformer" in self.sd_key[:20] else self.network.unet_multiplier

    def calc_scale(self):
        return 1.0 if self.alpha is None else self.alpha / self.dim

    def calc_updown(self, target):
        down = self.down.to(target.device, torch.float32)
        up = self.up.to(target.device, torch.float32)
        if down.dim() == 4 and down.shape[2:] != (1, 1):
            delta = torch.nn.functional.conv2d(down.transpose(0, 1), up).transpose(0, 1)
        else:
            delta = up.flatten(1) @ down.flatten(1)
        return delta.reshape(target.shape) * (self.calc_scale() * self.multiplier()), None
