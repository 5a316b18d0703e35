"""Training sliders on SD WebUI Forge: the trainer's backend over the model Forge loaded.

The trainer (``lib_sliders.training``) only needs ε for noisy latents, conditionings and latents
(``DiffusionBackend``). On Forge (``docs/forge.md``):

* **The bare model.** Forge merges its LoRAs into the weights when it loads a patcher (``LoraLoader.refresh``).
  Training loads the *original* patchers instead (``forge_objects_original``: no LoRA patches), so Forge itself
  puts its backed-up weights back; generation afterwards loads the LoRA patchers again and Forge merges them anew.
  ``sd_model.forge_objects`` points at the original objects while training (the text encoder and VAE calls read
  it) and at ``forge_objects_after_applying_lora`` afterwards, as Forge's processing sets it before sampling.
* **The UNet on the compute device.** ``memory_management.load_model_gpu`` loads it; a UNet Forge could only load
  in part ("Swap Loaded": some layers stay on the CPU) or stores quantized (nf4/fp4/gguf) is refused. Encoding
  prompts or images loads the text encoder or VAE, which may push the UNet out: it is loaded again afterwards.
* **ε** comes from the UNet module itself (ldm signature: ``x``, integer-valued timesteps, ``context``, ``y`` for
  SDXL's vector), as on A1111 — not through ``KModel.apply_model``, which takes σ and returns the denoised latent.
  The schedule and the prediction type are the predictor's (``KModel.predictor``: ``alphas_cumprod``,
  ``prediction_type``).
* **Inference tensors.** Forge loads checkpoints, merges LoRAs and computes conditionings and latents under
  ``torch.inference_mode()``; the UNet's weights, conditionings and latents are copied out of it before they meet
  the training graph (the copies have the same values).
* **In-place additions.** Forge's transformer blocks add attention outputs into ``x`` in place (``x += n``,
  ``backend/nn/unet.py``) after ``norm1``/``norm2`` kept ``x`` for their backward pass; with trainable deltas
  upstream that breaks the backward pass. While training, each LayerNorm of the UNet is handed a copy of its input
  when gradients are on (a forward pre-hook; sampling without gradients pays nothing).
* **Layers.** The trainer sees the UNet through a view that shows Forge's Linears as ``torch.nn.Linear``
  (``ForgeModuleView``) and passes parameters, train/eval and other attributes through to the UNet itself.

Forge Classic and reForge (the older line, ``ldm_patched`` instead of ``backend``) have no such memory manager:
training stays refused there (``host_kind``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..errors import SliderError
from ..training.backend import Conditioning, ModelBackend, v_to_eps
from .forge_runtime import ForgeModuleView, stored_quantized


class ForgeTrainingView(ForgeModuleView):
    """``ForgeModuleView`` that also passes the module's parameters, mode and attributes through, as the trainer
    uses them (``unet.parameters()``, ``unet.eval()``, ``unet.input_blocks``, ``unet.in_channels``…)."""

    @property
    def training(self) -> bool:
        target = self.__dict__.get("target")
        return True if target is None else target.training

    @training.setter
    def training(self, value: bool) -> None:
        pass  # the module's own mode is what counts (train() below sets it)

    def train(self, mode: bool = True):
        self.target.train(mode)
        return self

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        return self.target.named_parameters(prefix=prefix, recurse=recurse, remove_duplicate=remove_duplicate)

    def parameters(self, recurse: bool = True):
        return self.target.parameters(recurse=recurse)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__["target"], name)


def _copy_input_for_backward(module, args):
    if torch.is_grad_enabled() and args and isinstance(args[0], torch.Tensor) and args[0].requires_grad:
        return (args[0].clone(), *args[1:])
    return None


def _out_of_inference_mode(module: torch.nn.Module) -> None:
    """Forge loads checkpoints and merges LoRAs under ``torch.inference_mode()``: such weights can't take part in a
    backward pass (a GroupNorm saves its weight for it). Each is replaced by a normal copy, same values, no
    gradient; generation afterwards doesn't mind (one tensor at a time: the old one goes when nothing holds it)."""
    for layer in module.modules():
        for name, parameter in list(layer._parameters.items()):
            if parameter is not None and parameter.is_inference():
                layer._parameters[name] = torch.nn.Parameter(parameter.clone(), requires_grad=False)
        for name, buffer in list(layer._buffers.items()):
            if buffer is not None and buffer.is_inference():
                layer._buffers[name] = buffer.clone()


def _out_of_inference(cond: Conditioning) -> Conditioning:
    if isinstance(cond, dict):
        return {key: value.clone() for key, value in cond.items()}
    return cond.clone()


class ForgeModelBackend(ModelBackend):
    """``DiffusionBackend`` over a Forge engine (``sd_model``), on its un-patched UNet, text encoders and VAE."""

    def __init__(self, sd_model, memory_management, device: torch.device | str | None = None,
                 wrap_prompts: Callable[[list[str]], Any] | None = None):
        self.model = sd_model
        self.wrap_prompts = wrap_prompts
        self.memory_management = memory_management
        self.patcher = sd_model.forge_objects_original.unet
        kmodel = self.patcher.model
        self.diffusion_model = kmodel.diffusion_model
        self.unet = ForgeTrainingView(self.diffusion_model)
        self.device = torch.device(device) if device is not None else memory_management.get_torch_device()
        first = next(self.diffusion_model.parameters())
        self.dtype = first.dtype  # the storage dtype: fp8 storage trains in fp16/bf16 as on A1111
        self.compute_dtype = getattr(kmodel, "computation_dtype", first.dtype)
        predictor = kmodel.predictor
        self.alphas_cumprod = torch.as_tensor(predictor.alphas_cumprod).to(self.device, torch.float32).clone()
        self.v_prediction = getattr(predictor, "prediction_type", "epsilon") == "v_prediction"
        self.latent_scale = 8
        self._norm_hooks = [module.register_forward_pre_hook(_copy_input_for_backward)
                            for module in self.diffusion_model.modules() if isinstance(module, torch.nn.LayerNorm)]
        self.load_unet()

    def close(self) -> None:
        """Take the training-only hooks off the UNet."""
        for handle in self._norm_hooks:
            handle.remove()
        self._norm_hooks = []

    def load_unet(self) -> None:
        """The un-patched UNet wholly on the compute device, or a ``SliderError`` saying why not."""
        self.memory_management.load_model_gpu(self.patcher)
        for name, parameter in self.diffusion_model.named_parameters():
            if parameter.device != self.device:
                raise SliderError(f"training needs the whole UNet on {self.device}, but Forge keeps {name} on "
                                  f"{parameter.device} (not enough GPU memory for it: close other programs, or "
                                  "train at a smaller model/resolution)")
        _out_of_inference_mode(self.diffusion_model)

    def encode_prompts(self, prompts: list[str]) -> Conditioning:
        batch = list(prompts) if self.wrap_prompts is None else self.wrap_prompts(list(prompts))
        cond = _out_of_inference(self.model.get_learned_conditioning(batch))
        self.load_unet()  # the text encoder may have pushed it out
        return cond

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        context, vector = (cond["crossattn"], cond.get("vector")) if isinstance(cond, dict) else (cond, None)
        dtype = self.compute_dtype if not torch.is_autocast_enabled(x_t.device.type) else x_t.dtype
        kwargs = {} if vector is None else {"y": vector.to(dtype)}
        output = self.diffusion_model(x_t.to(dtype), t.float(), context=context.to(dtype), transformer_options={},
                                      **kwargs).to(x_t.dtype)
        if self.v_prediction:
            return v_to_eps(output, x_t, self.alphas_cumprod[t])
        return output

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            # Forge's encode_first_stage gives the scaled latent (its get_first_stage_encoding returns x as is).
            encoded = self.model.encode_first_stage(images.to(self.device, torch.float32))
            latents = self.model.get_first_stage_encoding(encoded).float().clone()
        self.load_unet()  # the VAE may have pushed it out
        return latents

    def encoders(self) -> list[torch.nn.Module]:
        return []  # Forge's memory manager decides where its text encoders and VAE live

    def first_stage_dtype(self) -> torch.dtype:
        return torch.float32


def quantized_layers(backend: ForgeModelBackend) -> list[str]:
    """UNet layers stored quantized (nf4/fp4/gguf: not ``[out, in]`` floats), by path."""
    return [path for path, layer in backend.diffusion_model.named_modules()
            if isinstance(getattr(layer, "weight", None), torch.Tensor) and hasattr(layer, "in_features")
            and stored_quantized(layer)]


def prepare_forge_training(sd_model, memory_management, wrap_prompts, device=None) -> ForgeModelBackend:
    """Point Forge at its un-patched model and return the trainer's backend over it (``restore_after_training``
    undoes the first part)."""
    sd_model.forge_objects = sd_model.forge_objects_original.shallow_copy()
    backend = None
    try:
        backend = ForgeModelBackend(sd_model, memory_management, device=device, wrap_prompts=wrap_prompts)
        quantized = quantized_layers(backend)
        if quantized:
            raise SliderError(f"training needs a UNet stored as floats, but Forge stores {quantized[0]} (and "
                              f"{len(quantized) - 1} more) quantized (nf4/fp4/gguf): choose another storage type in "
                              "Forge's settings")
    except BaseException:
        restore_after_training(sd_model, backend)
        raise
    return backend


def restore_after_training(sd_model, backend: ForgeModelBackend | None = None) -> None:
    """``forge_objects`` as Forge's processing sets it before sampling (Forge merges its LoRAs again on its own
    when it next loads those patchers), and the backend's hooks off the UNet."""
    if backend is not None:
        backend.close()
    sd_model.forge_objects = sd_model.forge_objects_after_applying_lora.shallow_copy()
