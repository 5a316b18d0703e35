"""The Forge flavour of the webui double: ``modules_forge`` on ``sys.path`` and a model shaped like Forge's.

Names follow SD WebUI Forge at ``dfdcbab`` (lllyasviel/stable-diffusion-webui-forge):

* ``forge_on_path()``: ``tests/webui_double/forge_root`` first on ``sys.path`` (the real webui root holds
  ``modules_forge/``), undone with the package's modules afterwards. Wrap ``webui_env`` in it: the UI is then built
  as on Forge.
* ``make_forge_model(model)``: a double of ``backend/diffusion_engine/sd15.py``'s ``StableDiffusion``
  (a ``ForgeDiffusionEngine``) around the toy SD1 model of ``conftest_helpers``, sharing its modules: the UNet only
  as ``forge_objects.unet.model.diffusion_model`` (``UnetPatcher`` → ``KModel``), the text encoder as
  ``forge_objects.clip.cond_stage_model.clip_l``, the VAE as ``forge_objects.vae.first_stage_model``; the webui
  flags ``is_sd1`` … ``is_sd3`` and ``cond_stage_model = first_stage_model = None`` as the engine's
  ``fix_for_webui_backward_compatibility`` sets them; **no** ``model.diffusion_model``. Sampling in real Forge goes
  through ``forge_objects.unet`` and ``backend/sampling/sampling_function.py``; the double's sampler calls
  ``apply_model``/``alphas_cumprod`` instead, which go to the toy model.
* ``without_optimization_switches(sd_hijack)``: Forge's ``modules/sd_hijack.py`` has only the ``model_hijack``
  stub, no module-level ``undo_optimizations``/``apply_optimizations``.
"""

from __future__ import annotations

import contextlib
import os
import sys

import torch

FORGE_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "forge_root")


def _purge_forge_modules() -> None:
    for name in [n for n in sys.modules if n == "modules_forge" or n.startswith("modules_forge.")]:
        del sys.modules[name]


@contextlib.contextmanager
def forge_on_path():
    _purge_forge_modules()
    sys.path.insert(0, FORGE_ROOT)
    try:
        yield FORGE_ROOT
    finally:
        while FORGE_ROOT in sys.path:
            sys.path.remove(FORGE_ROOT)
        _purge_forge_modules()


class ForgeObjects:
    """``backend/diffusion_engine/base.py`` ``ForgeObjects``."""

    def __init__(self, unet, clip, vae, clipvision):
        self.unet = unet
        self.clip = clip
        self.vae = vae
        self.clipvision = clipvision

    def shallow_copy(self):
        return ForgeObjects(self.unet, self.clip, self.vae, self.clipvision)


class KModel(torch.nn.Module):
    """``backend/modules/k_model.py`` ``KModel``: the UNet at ``diffusion_model``."""

    def __init__(self, diffusion_model: torch.nn.Module):
        super().__init__()
        self.diffusion_model = diffusion_model
        parameter = next(diffusion_model.parameters())
        self.storage_dtype = parameter.dtype
        self.computation_dtype = parameter.dtype


class UnetPatcher:
    """``backend/patcher/unet.py`` ``UnetPatcher`` (a ``ModelPatcher``): what a patch would be added to."""

    def __init__(self, model: KModel):
        self.model = model
        self.lora_patches = {}
        self.object_patches = {}
        self.model_options = {"transformer_options": {}}
        self.controlnet_linked_list = None

    def clone(self):
        n = UnetPatcher(self.model)
        n.lora_patches = self.lora_patches.copy()
        n.object_patches = self.object_patches.copy()
        n.model_options = {**self.model_options, "transformer_options": dict(self.model_options["transformer_options"])}
        return n


class CLIP:
    """``backend/patcher/clip.py`` ``CLIP``: text encoders by name in ``cond_stage_model``."""

    def __init__(self, encoders: dict[str, torch.nn.Module]):
        self.cond_stage_model = torch.nn.ModuleDict(encoders)
        self.tokenizer = {}


class VAE:
    """``backend/patcher/vae.py`` ``VAE``."""

    def __init__(self, first_stage_model: torch.nn.Module, latent_channels: int = 4):
        self.first_stage_model = first_stage_model
        self.latent_channels = latent_channels


class ForgeEngineDouble:
    """A ``ForgeDiffusionEngine`` (SD 1.5) around ``toy``'s modules."""

    def __init__(self, toy):
        self._toy = toy  # only for the double's sampler and conditioning, below
        unet = UnetPatcher(KModel(toy.model.diffusion_model))
        clip = CLIP({"clip_l": toy.cond_stage_model})
        vae = VAE(toy.first_stage_model)
        self.forge_objects = ForgeObjects(unet=unet, clip=clip, vae=vae, clipvision=None)
        self.forge_objects_original = self.forge_objects.shallow_copy()
        self.forge_objects_after_applying_lora = self.forge_objects.shallow_copy()
        self.current_lora_hash = str([])
        self.is_inpaint = False
        # fix_for_webui_backward_compatibility(), then the SD 1.5 engine's flag
        self.tiling_enabled = False
        self.first_stage_model = None
        self.cond_stage_model = None
        self.use_distilled_cfg_scale = False
        self.is_sd1, self.is_sd2, self.is_sdxl, self.is_sd3 = True, False, False, False
        # set by modules/sd_models.py forge_model_reload()
        self.extra_generation_params = {}
        self.comments = []
        self.sd_checkpoint_info = toy.sd_checkpoint_info
        self.filename = toy.sd_checkpoint_info.filename
        self.sd_model_hash = toy.sd_model_hash

    def is_webui_legacy_model(self):
        return self.is_sd1 or self.is_sd2 or self.is_sdxl or self.is_sd3

    def set_clip_skip(self, clip_skip):
        pass

    def get_learned_conditioning(self, prompt):
        return self._toy.get_learned_conditioning(prompt)

    def decode_first_stage(self, x):
        return self._toy.decode_first_stage(x)

    def encode_first_stage(self, x):
        return self._toy.encode_first_stage(x)

    def get_first_stage_encoding(self, x):
        return self._toy.get_first_stage_encoding(x)

    # double-only: what the double's k-diffusion sampler reads (Forge's own sampler uses forge_objects.unet)
    @property
    def alphas_cumprod(self):
        return self._toy.alphas_cumprod

    def apply_model(self, x, t, cond):
        return self._toy.apply_model(x, t, cond)


def make_forge_model(toy) -> ForgeEngineDouble:
    return ForgeEngineDouble(toy)


def without_optimization_switches(sd_hijack) -> None:
    for name in ("undo_optimizations", "apply_optimizations"):
        if hasattr(sd_hijack, name):
            delattr(sd_hijack, name)
