"""Double of the built-in Lora's ``networks`` module: loading networks and merging them into weights, lazily.

The merge mode's behaviour is the webui's (``network_apply_weights``, run by the patched ``forward`` of every
Linear/Conv2d/GroupNorm/LayerNorm/MultiheadAttention before the original forward):

* ``load_networks(names, …)`` only sets ``loaded_networks``, which **survives a generation**: nothing is written;
* a layer whose ``network_current_names`` differ from the wanted ``(name, te, unet, dyn)`` tuples copies its
  backup back into its weights, then adds the wanted networks' deltas (summed in fp32, rounded once; from the
  ``fp16_weight`` copy when the webui stores weights in fp8) and records the wanted names;
* the backup (a CPU copy, ``network_weights_backup``/``network_bias_backup``) is taken at the first forward with
  something wanted and **kept** from then on; a weight that changed without one raises ``RuntimeError``;
* so after ``load_networks([])`` each layer gets its weights back only **at its next forward**;
* ``_load_from_state_dict`` forgets the backup (``network_reset_cached_weight``).

Left out: diffusers-name conversion (only compvis-named ``lora_unet_…`` and SD1 ``lora_te_text_model_…`` keys
match), fused q/k/v attention deltas, the functional mode, bundled embeddings, hashes, caching limits.
"""

from __future__ import annotations

import logging
import os
import re

import lora_patches  # noqa: F401  (as in the webui: the patches module is imported first)
import network
import torch
from modules import errors, shared

originals = None  # lora_patches.LoraPatches, set by the script at import
extra_network_lora = None  # set before the UI

available_networks: dict = {}
available_network_aliases: dict = {}
forbidden_network_aliases: dict = {}
available_network_hash_lookup: dict = {}
loaded_networks: list = []
networks_in_memory: dict = {}

_TEXT_KEY = re.compile(r"lora_te_text_model_(encoder_layers_\d+_.+)")


# ------------------------------------------------------------------------------------------ names, files


def assign_network_names_to_compvis_modules(sd_model):
    """Every module of the text encoder(s) and of ``model`` gets ``network_layer_name``: its path with ``_``."""
    model = shared.sd_model
    named = {}
    if model.is_sdxl:
        for index, embedder in enumerate(model.conditioner.embedders):
            if hasattr(embedder, "wrapped"):
                named.update({f"{index}_{path}": m for path, m in embedder.wrapped.named_modules()})
    else:
        named.update(getattr(model.cond_stage_model, "wrapped", model.cond_stage_model).named_modules())
    named.update(model.model.named_modules())
    mapping = {}
    for path, module in named.items():
        module.network_layer_name = path.replace(".", "_")
        mapping[module.network_layer_name] = module
    sd_model.network_layer_mapping = mapping


def list_available_networks():
    for table in (available_networks, available_network_aliases, forbidden_network_aliases,
                  available_network_hash_lookup):
        table.clear()
    forbidden_network_aliases.update({"none": 1, "Addams": 1})
    os.makedirs(shared.cmd_opts.lora_dir, exist_ok=True)
    for folder in (shared.cmd_opts.lora_dir, shared.cmd_opts.lyco_dir_backcompat):
        for root, _, files in os.walk(folder or "", followlinks=True):
            for file in sorted(files):
                name, extension = os.path.splitext(file)
                if extension.lower() not in (".pt", ".ckpt", ".safetensors"):
                    continue
                entry = network.NetworkOnDisk(name, os.path.join(root, file))
                available_networks[name] = entry
                if entry.alias in available_network_aliases:
                    forbidden_network_aliases[entry.alias.lower()] = 1
                available_network_aliases[name] = available_network_aliases[entry.alias] = entry


def _layer_key(file_key: str) -> str:
    text = _TEXT_KEY.fullmatch(file_key)
    if text:
        return "transformer_text_model_" + text.group(1)
    return file_key.replace("lora_unet", "diffusion_model", 1)


def load_network(name, network_on_disk):
    from safetensors.torch import load_file

    net = network.Network(name, network_on_disk)
    if not hasattr(shared.sd_model, "network_layer_mapping"):
        assign_network_names_to_compvis_modules(shared.sd_model)
    mapping = shared.sd_model.network_layer_mapping
    grouped, unmatched = {}, []
    for file_key, tensor in load_file(network_on_disk.filename).items():
        layer_part, _, tensor_part = file_key.partition(".")
        key = _layer_key(layer_part)
        if key not in mapping:
            unmatched.append(file_key)
            continue
        grouped.setdefault(key, network.NetworkWeights(file_key, key, {}, mapping[key])).w[tensor_part] = tensor
    for key, weights in grouped.items():
        net.modules[key] = network.NetworkModule(net, weights)
    if unmatched:
        logging.debug(f"Network {network_on_disk.filename} didn't match keys: {unmatched}")
    return net


def load_networks(names, te_multipliers=None, unet_multipliers=None, dyn_dims=None):
    """Make ``names`` the wanted networks (with their multipliers). Writes no weight."""
    previous = {net.name: net for net in loaded_networks}
    loaded_networks.clear()
    if any(name not in available_network_aliases for name in names):
        list_available_networks()
    not_found = []
    for index, name in enumerate(names):
        on_disk = available_network_aliases.get(name)
        net = previous.get(name) or networks_in_memory.get(name)
        if on_disk is not None and (net is None or os.path.getmtime(on_disk.filename) > net.mtime):
            try:
                net = networks_in_memory[name] = load_network(name, on_disk)
            except Exception as error:
                errors.display(error, f"loading network {on_disk.filename}")
                continue
        if net is None:
            not_found.append(name)
            continue
        net.mentioned_name = name
        net.te_multiplier = te_multipliers[index] if te_multipliers else 1.0
        net.unet_multiplier = unet_multipliers[index] if unet_multipliers else 1.0
        net.dyn_dim = dyn_dims[index] if dyn_dims else 1.0
        loaded_networks.append(net)
    if not_found:
        logging.info(f"Lora not found: {', '.join(not_found)}")
    while networks_in_memory and len(networks_in_memory) > shared.opts.lora_in_memory_limit:
        networks_in_memory.pop(next(iter(networks_in_memory)))


# ------------------------------------------------------------------------------------------ weights


def _weights_and_bias(layer):
    """What a backup holds: an attention's (in_proj_weight, out_proj.weight) and out_proj.bias; else weight, bias."""
    if isinstance(layer, torch.nn.MultiheadAttention):
        return (layer.in_proj_weight, layer.out_proj.weight), layer.out_proj.bias
    return getattr(layer, "weight", None), getattr(layer, "bias", None)


def _cpu_copy(tensor):
    if tensor is None:
        return None
    if isinstance(tensor, tuple):
        return tuple(_cpu_copy(t) for t in tensor)
    return tensor.detach().to("cpu", copy=True)


def network_restore_weights_from_backup(self):
    weights_backup = getattr(self, "network_weights_backup", None)
    bias_backup = getattr(self, "network_bias_backup", None)
    weights, bias = _weights_and_bias(self)
    if weights_backup is not None:
        for tensor, saved in zip(weights if isinstance(weights, tuple) else (weights,),
                                 weights_backup if isinstance(weights_backup, tuple) else (weights_backup,),
                                 strict=True):
            tensor.copy_(saved)
    if bias_backup is not None:
        bias.copy_(bias_backup)


def network_apply_weights(self):
    """Bring this layer's weights to "original + the wanted networks", if they aren't already."""
    layer_name = getattr(self, "network_layer_name", None)
    if layer_name is None:
        return
    current = getattr(self, "network_current_names", ())
    wanted = tuple((net.name, net.te_multiplier, net.unet_multiplier, net.dyn_dim) for net in loaded_networks)
    if wanted:
        weights, bias = _weights_and_bias(self)
        if getattr(self, "network_weights_backup", None) is None:
            no_weight = isinstance(self, torch.nn.LayerNorm) and not self.elementwise_affine
            if current and not no_weight:
                raise RuntimeError(f"{layer_name} - no backup weights found and current weights are not unchanged")
            self.network_weights_backup = _cpu_copy(weights)
        if getattr(self, "network_bias_backup", None) is None:
            if bias is not None and current:
                raise RuntimeError("no backup bias found and current bias are not unchanged")
            self.network_bias_backup = _cpu_copy(bias)
    if current == wanted:
        return
    network_restore_weights_from_backup(self)
    for net in loaded_networks:
        module = net.modules.get(layer_name)
        if module is None or not hasattr(self, "weight"):
            continue
        with torch.no_grad():
            fp16 = getattr(self, "fp16_weight", None)  # the webui's copy of an fp8-stored weight
            base = self.weight if fp16 is None else fp16.to(self.weight.device)
            updown, _ = module.calc_updown(base)
            self.weight.copy_((base.to(updown.dtype) + updown).to(self.weight.dtype))
    self.network_current_names = wanted


def network_reset_cached_weight(self):
    self.network_current_names = ()
    self.network_weights_backup = None
    self.network_bias_backup = None


def _patched_forward(label):
    def forward(self, *args, **kwargs):
        network_apply_weights(self)
        return getattr(originals, f"{label}_forward")(self, *args, **kwargs)

    forward.__name__ = f"network_{label}_forward"
    return forward


def _patched_load_state_dict(label):
    def load_state_dict(self, *args, **kwargs):
        network_reset_cached_weight(self)
        return getattr(originals, f"{label}_load_state_dict")(self, *args, **kwargs)

    load_state_dict.__name__ = f"network_{label}_load_state_dict"
    return load_state_dict


network_Linear_forward = _patched_forward("Linear")
network_Linear_load_state_dict = _patched_load_state_dict("Linear")
network_Conv2d_forward = _patched_forward("Conv2d")
network_Conv2d_load_state_dict = _patched_load_state_dict("Conv2d")
network_GroupNorm_forward = _patched_forward("GroupNorm")
network_GroupNorm_load_state_dict = _patched_load_state_dict("GroupNorm")
network_LayerNorm_forward = _patched_forward("LayerNorm")
network_LayerNorm_load_state_dict = _patched_load_state_dict("LayerNorm")
network_MultiheadAttention_forward = _patched_forward("MultiheadAttention")
network_MultiheadAttention_load_state_dict = _patched_load_state_dict("MultiheadAttention")

list_available_networks()
