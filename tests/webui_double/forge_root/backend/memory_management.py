"""``backend/memory_management.py`` of Forge (``dfdcbab``), as far as the extension uses it: the double's
``load_model_gpu`` / ``current_loaded_models`` (``webui_double.forge_double``) and a CPU device."""

import torch
from webui_double.forge_double import current_loaded_models, load_model_gpu  # noqa: F401 — Forge's names

__all__ = ["current_loaded_models", "get_torch_device", "load_model_gpu"]


def get_torch_device():
    return torch.device("cpu")
