"""Sliders on SD WebUI Forge: the same runtime and engine as on A1111, pointed at Forge's UNet.

Forge (``docs/forge.md``) keeps the webui's job flow — ``Script.process`` / ``before_process_batch``, the ``slider``
extra network's ``activate`` per batch (and again for the hires pass), ``on_cfg_denoiser`` once per sampling step,
``Script.postprocess`` — so planning, infotext, X/Y/Z axes and error handling are ``SlidersRuntime``'s. What
differs is the model underneath, and this module adapts the engine to it:

* **The UNet** is ``sd_model.forge_objects.unet.model.diffusion_model`` (``UnetPatcher`` → ``KModel``), with ldm
  names, so slider paths map as on A1111. Every clone of the patcher shares that module, so the engine's forward
  hooks act on whatever patcher Forge samples with this batch (its own ``shallow_copy`` of ``forge_objects`` before
  sampling, FreeU's clone, …); they are taken off when the job ends, as on A1111, and no patcher is changed.
* **Its layers** are ``ForgeOperations``: ``Conv2d`` subclasses ``torch.nn.Conv2d``, but ``Linear`` subclasses
  ``torch.nn.Module`` only (``in_features``, ``out_features``, a ``weight`` parameter; ``F.linear`` with the weight
  fetched per call). The engine only hooks and packs deltas for ``torch.nn.Linear``/``Conv2d`` layers, so it gets a
  view of the UNet (``ForgeModuleView``) that shows such a layer as a ``torch.nn.Linear`` of its shape, reading its
  weight and putting hooks on the real layer. A layer whose weight is stored quantized (Forge's nf4/fp4/gguf UNet
  storage: packed, not ``[out, in]`` floats) is refused by name.
* **The rows of a UNet call** follow Forge's sampling function (``backend/sampling/sampling_function.py``,
  ``calc_cond_uncond_batch``): each call is one or more chunks of the batch's B latents, in image order, one chunk
  per cond (sub-prompt) or uncond entry, listed in ``transformer_options["cond_or_uncond"]`` which ``KModel`` passes
  to the UNet. So row r of a call is image r mod B, whatever the chunk order, the memory-driven split into several
  calls, or a dropped uncond (CFG 1, "skip early CFG"). A forward pre-hook on the UNet, ahead of the engine's,
  sets each row's α for the call from that; ``on_cfg_denoiser`` (still the webui's callback on Forge) only moves
  the step gates (``start=``/``stop=``).
* **Weights are never written by the engine**: Forge's own LoRA merges into the same weights when it loads a
  patcher (with its own backups). With the "Merge one-α sliders" setting, a slider with one α for the batch and no
  step gate has its UNet part merged *by Forge*, as a patch set on a clone of the UNet patcher
  (``forge_patches``); the rest stays on hooks.
* **Text encoders** are ``forge_objects.clip.cond_stage_model``'s ``clip_l`` / ``clip_h`` / ``clip_g`` (HF CLIP
  text models, HF layer names as slider files use them, ``ForgeOperations`` Linears too): seen through the same
  view, with the engine's text hooks. The text encoder runs in ``setup_conds`` after ``activate``, as on A1111, and
  the webui's cond cache is dropped when text-encoder sliders change (``SlidersRuntime._check_cond_cache``; Forge
  keeps A1111's ``cached_c``/``cached_uc`` with the key first).

``lib_sliders`` still imports nothing from Forge: the model is reached through plain attributes.
"""

from __future__ import annotations

import dataclasses
import logging

import torch

from ..apply.engine import ActiveSlider, SliderEngine
from ..errors import SliderError
from .forge_patches import ForgeUnetPatches, UnetPatch, can_patch
from .row_layout import plan_row_alphas
from .runtime import SlidersRuntime

logger = logging.getLogger("concept_sliders")


def forge_unet(sd_model) -> torch.nn.Module:
    """The UNet module of a model Forge loaded (``UnetPatcher.model`` is the ``KModel``)."""
    return sd_model.forge_objects.unet.model.diffusion_model


def _forge_unet_or_none(sd_model):
    try:
        return forge_unet(sd_model)
    except AttributeError:
        return None


def _is_linear_like(layer: torch.nn.Module) -> bool:
    """A ``ForgeOperations.Linear`` (or a fork's equivalent): a Linear's attributes, not its class."""
    return (not isinstance(layer, torch.nn.Linear) and hasattr(layer, "in_features") and hasattr(layer, "out_features")
            and "weight" in dict(layer.named_parameters(recurse=False)))


def stored_quantized(layer: torch.nn.Module) -> bool:
    """A Linear-like layer whose weight isn't ``[out, in]`` floats (Forge's nf4/fp4/gguf storage)."""
    weight = layer.weight
    return not weight.dtype.is_floating_point or tuple(weight.shape) != (layer.out_features, layer.in_features)


class _LinearView(torch.nn.Linear):
    """A ``torch.nn.Linear`` face for a Forge Linear: its shape and weight; hooks go onto the real layer.

    Built without ``torch.nn.Linear.__init__`` (which would allocate a weight): nothing of it is a parameter, and the
    real layer is kept outside the module tree.
    """

    def __init__(self, layer: torch.nn.Module, path: str):
        torch.nn.Module.__init__(self)
        weight = layer.weight
        if stored_quantized(layer):
            raise SliderError(f"the UNet layer {path} is stored quantized ({type(layer).__name__}, "
                              f"{str(weight.dtype).replace('torch.', '')} {tuple(weight.shape)}); sliders can't be "
                              "added to a UNet stored in nf4/fp4/gguf on Forge, choose another storage type")
        self.in_features = layer.in_features
        self.out_features = layer.out_features
        object.__setattr__(self, "target", layer)

    @property
    def weight(self) -> torch.Tensor:
        return self.target.weight

    @property
    def bias(self):
        return getattr(self.target, "bias", None)

    def register_forward_hook(self, hook, *args, **kwargs):
        return self.target.register_forward_hook(hook, *args, **kwargs)

    def register_forward_pre_hook(self, hook, *args, **kwargs):
        return self.target.register_forward_pre_hook(hook, *args, **kwargs)

    def forward(self, x):
        return self.target(x)


class ForgeModuleView(torch.nn.Module):
    """What the engine sees of a Forge module (the UNet, a text encoder): its layers found by path or listed by
    ``named_modules`` (Forge Linears as ``_LinearView``); hooks on the view go onto the module itself."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        object.__setattr__(self, "target", module)  # not a child: the view owns nothing
        self._views: dict[str, _LinearView] = {}

    def _view(self, path: str, layer: torch.nn.Module) -> torch.nn.Module:
        if not _is_linear_like(layer):
            return layer  # torch's Linear/Conv2d (Forge's Conv2d subclasses it), or what the engine will name
        view = self._views.get(path)
        if view is None or view.target is not layer:
            view = self._views[path] = _LinearView(layer, path)
        return view

    def get_submodule(self, target: str) -> torch.nn.Module:
        return self._view(target, self.target.get_submodule(target))

    def named_modules(self, memo=None, prefix: str = "", remove_duplicate: bool = True):
        for name, module in self.target.named_modules(prefix=prefix, remove_duplicate=remove_duplicate):
            try:
                yield name, self._view(name, module)
            except SliderError:
                yield name, module  # a quantized layer: not a target (validation names a missing layer)

    def register_forward_hook(self, hook, *args, **kwargs):
        return self.target.register_forward_hook(hook, *args, **kwargs)

    def register_forward_pre_hook(self, hook, *args, **kwargs):
        return self.target.register_forward_pre_hook(hook, *args, **kwargs)

    def forward(self, *args, **kwargs):
        return self.target(*args, **kwargs)


# Forge's text encoders in ``forge_objects.clip.cond_stage_model``, in the order slider files number them
# (``lora_te1``/``lora_te2``): SD 1.5 ``clip_l``, SD 2.x ``clip_h``, SDXL ``clip_l`` then ``clip_g``.
TEXT_ENCODER_KEYS = ("clip_l", "clip_h", "clip_g")


def forge_text_encoders(sd_model) -> list[torch.nn.Module]:
    encoders = getattr(getattr(getattr(sd_model, "forge_objects", None), "clip", None), "cond_stage_model", None)
    if encoders is None:
        return []
    # A JointTextEncoder: Forge's own ModuleDict (backend/nn/base.py), a plain Module with the encoders as children,
    # not torch.nn.ModuleDict (no ``in``/``[]``).
    children = dict(encoders.named_children())
    return [children[key] for key in TEXT_ENCODER_KEYS if key in children]


class ForgeSlidersRuntime(SlidersRuntime):
    """``SlidersRuntime`` on Forge's UNet, with each UNet call's rows read from Forge's ``cond_or_uncond``."""

    def __init__(self, host):
        # The engine never merges: Forge's own LoRA merges into these weights when a patcher is loaded
        # (LoraLoader.refresh, restoring its backups first), so a delta the engine merged could be captured or
        # wiped there. One-α sliders are merged through Forge's patches instead (_take_out_patched).
        super().__init__(dataclasses.replace(host, lora_may_write_weights=lambda p: True))
        self._rows_handle = None
        self._patches = ForgeUnetPatches()
        self._wanted: list[tuple[object, UnetPatch]] = []  # (planned slider, its UNet patch) for this batch

    # ------------------------------------------------------------------ the engine on Forge's UNet

    def _engine_for(self, sd_model) -> SliderEngine:
        unet = forge_unet(sd_model)
        engine = self._engine
        if engine is not None and self._engine_model is sd_model and engine.unet.target is unet:
            return engine
        self.clear()
        # Text-encoder deltas as forward hooks too (Forge's LoRA merges into the CLIP weights when it loads them).
        texts = [ForgeModuleView(encoder) for encoder in forge_text_encoders(sd_model)]
        engine = self._engine = SliderEngine(ForgeModuleView(unet), texts, text_mode="hooks")
        self._engine_model = sd_model
        engine.contain_errors = True
        engine.on_failure = self._late_failure
        engine.on_rows_mismatch = self._rows_mismatch
        # Before the engine's own pre-hook (registered when sliders are applied), which picks the rows' α.
        self._rows_handle = unet.register_forward_pre_hook(self._before_unet, with_kwargs=True, prepend=True)
        return engine

    def _on_current_model(self) -> bool:
        model = self.host.sd_model()
        return (self._engine is not None and self._engine_model is model
                and self._engine.unet.target is _forge_unet_or_none(model))

    def clear(self) -> None:
        if self._rows_handle is not None:
            self._rows_handle.remove()
            self._rows_handle = None
        self._wanted = []
        self._patches.restore()
        super().clear()

    # ------------------------------------------------------------------ one-α sliders as Forge patches

    def _take_out_patched(self, p, sliders: list[ActiveSlider], planned: list) -> tuple[list[ActiveSlider], tuple]:
        """With the merge setting, sliders with one α for the batch and no step gate get their UNet part merged
        by Forge (``forge_patches``); the engine keeps their text-encoder part."""
        self._wanted = []
        if (self.host.apply_mode() != "auto" or getattr(p, "scripts", None) is None
                or not can_patch(self.host.sd_model())):
            return sliders, ()  # without the script's process_before_every_sampling nothing would patch them
        kept, patched = [], []
        for slider, column in zip(sliders, planned, strict=True):
            if column.network.unet and column.is_uniform and slider.start <= 0 and slider.stop >= 1:
                self._wanted.append((column, UnetPatch(column.name, column.network,
                                                       float(column.image_alphas[0]) * column.unet)))
                slider = dataclasses.replace(slider, network=dataclasses.replace(slider.network, unet={}))
                patched.append(column.name)
            kept.append(slider)
        return kept, tuple(patched)

    def before_every_sampling(self, p) -> None:
        if not self._wanted or self._applied is None or p is not self._applied_p:
            return
        applied = {id(column) for column in self._applied.sliders}
        patches = [patch for column, patch in self._wanted if id(column) in applied]
        for patch, count in self._patches.apply(p.sd_model, patches):
            self.report(p, f"<slider:{patch.name}>: Forge's UNet has no parameter for {count} of its layers; "
                           "merged without them")

    # ------------------------------------------------------------------ rows

    def _set_row_alphas(self, params, p, plan, engine) -> None:
        """Nothing per step: Forge's denoiser batch (``params.x``) is the B latents; the rows are set per UNet call."""

    def _before_unet(self, module, args, kwargs):
        engine, plan = self._engine, self._applied
        if engine is None or plan is None or not engine.sliders or not plan.sliders:
            return None
        x = args[0] if args else kwargs.get("x")
        if x is None:
            return None
        rows = int(x.shape[0])
        options = kwargs.get("transformer_options") or {}
        chunks = options.get("cond_or_uncond") if isinstance(options, dict) else None
        layout = (rows, len(chunks) if chunks else None)
        if layout == self._layout:
            return None
        self._layout = layout
        images = len(plan.sliders[0].image_alphas)
        engine.set_alphas(plan_row_alphas(plan, self._call_row_images(images, rows, layout[1])))
        return None

    def _call_row_images(self, images: int, rows: int, chunks: int | None) -> list[int] | None:
        """Image of each row of a UNet call: chunks of the batch's images, in image order (see the module docstring).

        None when the rows aren't such chunks (another extension's own UNet call): the first image's α for all.
        """
        if images < 1:
            return None
        if chunks is None:  # a call without Forge's layout: whole copies of the batch, or not ours to read
            chunks = rows // images if rows % images == 0 else None
        if chunks and rows == chunks * images:
            return [row % images for row in range(rows)]
        job = getattr(self._applied_p, "sliders_job", None)
        holder = job if job is not None else self  # once per job
        if not getattr(holder, "rows_warned", False):
            holder.rows_warned = True
            logger.warning("Concept Sliders: a UNet call with %d rows isn't made of the batch's %d images (another "
                           "extension's extra pass?); its rows get the first image's α", rows, images)
        return None
