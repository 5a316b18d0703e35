"""Resumable training checkpoints: the loop's state saved to, and restored from, one file.

A safetensors file (tensors) + JSON metadata (everything else): no pickle at all, so the webui's pickle checker
(which rejects newer torch zip entries) and weights_only loading never come into it. A checkpoint resumes only
a run with the same settings, apart from those in ``RESUMABLE_CHANGES``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile

import safetensors
import safetensors.torch
import torch

from ..errors import SliderError
from ..files.lora import SliderNetwork

STATE_FORMAT = "sliders-training-state/2"
RESUMABLE_CHANGES = ("iterations", "estimate_start", "default_start", "alpha_range")


def save_state(checkpoint_path: str | os.PathLike, config, network: SliderNetwork, optimizer,
               generator: torch.Generator, iteration: int, losses: list[float]) -> None:
    """Write the loop's state (weights, optimiser, generator, losses, config) to ``checkpoint_path`` atomically."""
    tensors = {"generator": generator.get_state()}
    for path, module in network.unet.items():
        tensors[f"weights/{path}/down"] = module.down.detach().cpu().contiguous()
        tensors[f"weights/{path}/up"] = module.up.detach().cpu().contiguous()
    optimizer_state = optimizer.state_dict()
    per_param = {}
    for index, values in optimizer_state["state"].items():
        per_param[str(index)] = sorted(values)
        for key, value in values.items():
            tensors[f"optimizer/{index}/{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    state = {"iteration": iteration, "config": config.to_dict(), "losses": list(losses),
             "param_groups": optimizer_state["param_groups"], "optimizer_keys": per_param}
    metadata = {"format": STATE_FORMAT, "state": json.dumps(state)}
    directory = os.path.dirname(os.path.abspath(checkpoint_path))
    handle, temporary = tempfile.mkstemp(dir=directory, suffix=".tmp")
    os.close(handle)
    try:
        safetensors.torch.save_file(tensors, temporary, metadata=metadata)
        os.replace(temporary, checkpoint_path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _resumable_changes(config) -> tuple[str, ...]:
    if config.train_from_start:  # the start decides which steps train
        return tuple(k for k in RESUMABLE_CHANGES if k not in ("estimate_start", "default_start"))
    return RESUMABLE_CHANGES


def load_state(path, config, network: SliderNetwork, optimizer, generator: torch.Generator) -> tuple[int, list[float]]:
    """Restore a ``save_state`` checkpoint into ``network``, ``optimizer`` and ``generator``: (iteration, losses).
    Refused when it was made with settings that change what the loop does."""
    try:
        with safetensors.safe_open(str(path), framework="pt") as file:
            metadata = file.metadata() or {}
            tensors = {key: file.get_tensor(key) for key in file.keys()}  # noqa: SIM118 — not a dict
        state = json.loads(metadata.get("state", "null"))
    except Exception as error:
        raise SliderError(f"{path}: not a training checkpoint ({error})") from None
    if metadata.get("format") != STATE_FORMAT or not isinstance(state, dict):
        raise SliderError(f"{path}: not a training checkpoint")
    current = config.to_dict()
    # A field newer than the checkpoint takes its default there (what the run that saved it did).
    saved = {**type(config)(name=config.name).to_dict(), **state["config"]}
    for key in _resumable_changes(config):  # settings that don't change what the loop does
        saved.pop(key, None)
        current.pop(key, None)
    if saved != current:
        changed = sorted(k for k in current if saved.get(k) != current.get(k))
        raise SliderError(f"{path}: checkpoint was made with different settings ({', '.join(changed)})")
    with torch.no_grad():
        for path_, module in network.unet.items():
            module.down.copy_(tensors[f"weights/{path_}/down"])
            module.up.copy_(tensors[f"weights/{path_}/up"])
    groups = state["param_groups"]
    for group in groups:
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({
        "state": {int(index): {key: tensors[f"optimizer/{index}/{key}"] for key in keys}
                  for index, keys in state["optimizer_keys"].items()},
        "param_groups": groups,
    })
    generator.set_state(tensors["generator"])
    return int(state["iteration"]), list(state["losses"])
