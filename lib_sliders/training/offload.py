"""Modules the training loop never calls, moved off the GPU for the duration of a run.

Prompts and images are encoded once before the loop; from then on the text encoders and the VAE only
hold memory (SDXL's two text encoders: 1.5 GiB in fp16). They go to the CPU while the slider trains
and back to where they were afterwards: ``Module.to`` swaps each parameter's data in place, so the
model object keeps its parameters (and their values, copied exactly both ways).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch


def _device_of(module: torch.nn.Module) -> torch.device | None:
    """The one device all of the module's tensors are on, or None (empty, or spread over several)."""
    devices = {t.device for t in [*module.parameters(), *module.buffers()]}
    return devices.pop() if len(devices) == 1 else None


@contextlib.contextmanager
def modules_on_cpu(modules: Iterable[torch.nn.Module], enabled: bool = True):
    """Moves the modules that sit wholly on a CUDA device to the CPU, and back on exit.

    Modules already on the CPU, or spread over devices (the webui's low-VRAM modes move them on demand),
    are left alone."""
    moved: list[tuple[torch.nn.Module, torch.device]] = []
    if enabled:
        for module in modules:
            device = _device_of(module)
            if device is not None and device.type == "cuda":
                module.to("cpu")
                moved.append((module, device))
    try:
        yield len(moved)
    finally:
        for module, device in moved:
            module.to(device)
