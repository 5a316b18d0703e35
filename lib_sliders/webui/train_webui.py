"""Training on the model the webui has loaded: refusals, a clean model, progress, the preview strip.

``prepare`` checks that training can run (a model is loaded, it is SD 1.x/2.x/SDXL, not split across devices by
``--lowvram``/``--medvram``; on Forge: its own backend, ``host_kind``), takes every slider and Lora network off the
weights, and turns off the webui's cross-attention optimisations unless the user's setting keeps them for training
(the webui's own trainers do the same); ``restore`` puts the optimisations back. On Forge, ``forge_training`` does
the model part with Forge's patchers and memory manager. The trainer itself leaves the weights,
train/eval mode and ``requires_grad`` as it found them.
"""

from __future__ import annotations

import contextlib
import os

import torch
from modules import devices, processing, prompt_parser, sd_hijack, shared

try:
    from modules import lowvram
except ImportError:  # Forge Classic has no lowvram module (training is refused there: host_kind)
    lowvram = None

from ..errors import SliderError
from ..prompt.prompt_tags import format_number
from ..training.backend import ModelBackend
from . import forge_training, host_kind
from .models import model_arch
from .train_jobs import TrainingHost, TrainJob

PREVIEW_IMAGES = 5


def _require_model():
    model = shared.sd_model
    refused = host_kind.refusal(host_kind.TRAINING, model)
    if refused:  # Forge Classic / reForge: no Forge backend to train with
        raise SliderError(refused)
    if model is None:
        raise SliderError("no model is loaded: load a checkpoint first")
    if lowvram is not None and lowvram.is_enabled(model):
        raise SliderError("training needs the whole model on one device: restart the webui without --lowvram/--medvram")
    if model_arch(model) is None:
        raise SliderError("the loaded model is not SD 1.x, SD 2.x or SDXL: sliders can't be trained on it")
    return model


def _load_forge_model() -> None:
    """Forge loads the checkpoint chosen in the UI only when a job starts (``sd_models.forge_model_reload``, called
    by ``process_images``; until then ``shared.sd_model`` is a placeholder): training loads it the same way, so it
    trains on the checkpoint the UI shows, also before the first image."""
    from modules import sd_models

    reload = getattr(sd_models, "forge_model_reload", None)
    if reload is not None and host_kind.is_forge():
        reload()


def restore_lora_weights(model) -> int:
    """Take the built-in Lora's networks off ``model``'s weights now; returns how many layers were put back.

    Lora merges into weights and restores them lazily: after a generation with ``<lora:…>`` the weights hold it
    until each layer's next forward (``network_apply_weights``, called from its patched forward). Training must
    start from the bare model, and anything that backs weights up meanwhile (merged sampling) would keep the Lora
    in them for good. So nothing is wanted any more (``load_networks([])``), and every layer that has a network
    merged runs Lora's own ``network_apply_weights``: with nothing wanted it copies its backup back and marks
    itself clean. Nothing to do when the Lora extension is off.
    """
    try:
        import networks
    except ImportError:
        return 0
    if not hasattr(networks, "load_networks") or not hasattr(networks, "network_apply_weights"):
        return 0  # some other module of that name
    networks.load_networks([])
    restored = 0
    with torch.no_grad():  # as in a generation: the copies go into parameters
        for module in model.modules():
            if getattr(module, "network_current_names", ()):
                networks.network_apply_weights(module)
                restored += 1
    return restored


def make_host(runtime, sliders_dir, queue_lock, on_saved, library=None) -> TrainingHost:
    """``library``: a callable returning the slider list (``SliderLibrary``), for training among sliders."""
    state = {"optimizations_undone": False}

    def prepare():
        _load_forge_model()
        model = _require_model()
        runtime.clear()
        model_width = getattr(model, "is_sdxl", False)

        def wrap(prompts):
            # SDXL's conditioner reads the target size from the prompt list; SD 1/2 ignore it.
            size = 1024 if model_width else 512
            return prompt_parser.SdConditioning(prompts, width=size, height=size)

        if host_kind.is_forge(model):  # Forge's own patchers and memory manager (forge_training)
            from backend import memory_management

            backend = forge_training.prepare_forge_training(model, memory_management, wrap)
            state["forge"] = (model, backend)
            return backend
        restore_lora_weights(model)
        if not getattr(shared.opts, "training_xattention_optimizations", False):
            sd_hijack.undo_optimizations()
            state["optimizations_undone"] = True
        return ModelBackend(model, device=devices.device, wrap_prompts=wrap)

    def restore():
        forge = state.pop("forge", None)
        if forge is not None:
            forge_training.restore_after_training(*forge)
        if state["optimizations_undone"]:
            sd_hijack.apply_optimizations()
            state["optimizations_undone"] = False
        devices.torch_gc()

    def base_model():
        model = shared.sd_model
        info = getattr(model, "sd_checkpoint_info", None)
        return getattr(info, "name_for_extra", None), getattr(model, "sd_model_hash", None)

    def prediction_type():
        model = shared.sd_model
        if host_kind.is_forge(model):
            predictor = getattr(model.forge_objects.unet.model, "predictor", None)
            return "v" if getattr(predictor, "prediction_type", None) == "v_prediction" else "epsilon"
        return "v" if getattr(model, "parameterization", "eps") == "v" else "epsilon"

    def on_progress(job: TrainJob):
        state_ = shared.state
        state_.job_count = 1
        state_.sampling_steps = max(job.total, 1)
        state_.sampling_step = job.iteration
        eta = f", ETA {job.eta_seconds:.0f} s" if job.eta_seconds is not None else ""
        loss = f", loss {job.loss:.5f}" if job.loss is not None else ""
        rate = f", {job.its_per_second:.2f} it/s" if job.its_per_second else ""
        state_.textinfo = f"Training slider {job.config.name}: {job.iteration}/{job.total}{loss}{rate}{eta}"

    @contextlib.contextmanager
    def webui_job(job: TrainJob):
        # What the webui's own API calls do around a job: a fresh state (clears a stale Interrupt).
        shared.state.begin(job=f"sliders_train_{job.id}")
        try:
            yield
        finally:
            shared.state.end()

    return TrainingHost(
        job_context=webui_job,
        sliders_dir=sliders_dir, prepare=prepare, restore=restore, base_model=base_model,
        prediction_type=prediction_type, lock=queue_lock, on_progress=on_progress,
        interrupted=lambda: bool(shared.state.interrupted), make_preview=lambda job: make_preview(job, runtime),
        on_saved=on_saved,
        slider_names=(lambda: library().names()) if library is not None else (lambda: ()),
        load_slider=(lambda name: library().load(name)) if library is not None else None,
        # On the package alone: a submitted job must not load a model (``prepare`` checks the model too).
        unavailable=lambda: host_kind.refusal(host_kind.TRAINING),
    )


def preview_prompt(job: TrainJob) -> str:
    config = job.config
    if config.mode == "text" and config.prompts:
        return config.prompts[0].target or config.prompts[0].neutral
    return config.image_prompt


def make_preview(job: TrainJob, runtime) -> str | None:
    """A strip of the new slider from −range to +range (same seed) saved as the card's preview."""
    from PIL import Image

    low, high = job.config.alpha_range
    tag = f"<slider:{job.config.name}:{format_number(low)}..{format_number(high)}>"
    size = 1024 if getattr(shared.sd_model, "is_sdxl", False) else 512
    size = min(size, job.config.resolution)
    p = processing.StableDiffusionProcessingTxt2Img(
        sd_model=shared.sd_model, prompt=[f"{preview_prompt(job)} {tag}"] * PREVIEW_IMAGES,
        seed=[job.config.seed] * PREVIEW_IMAGES, batch_size=PREVIEW_IMAGES, n_iter=1, steps=20, cfg_scale=7.0,
        width=size, height=size, do_not_save_grid=True, do_not_save_samples=True,
    )
    try:
        processed = processing.process_images(p)
    finally:
        runtime.clear()
        p.close()
    images = [image for image in processed.images if isinstance(image, Image.Image)][:PREVIEW_IMAGES]
    if not images:
        return None
    strip = Image.new("RGB", (sum(i.width for i in images), max(i.height for i in images)))
    x = 0
    for image in images:
        strip.paste(image, (x, 0))
        x += image.width
    path = os.path.splitext(job.output)[0] + ".png"
    temporary = path + ".tmp"
    strip.save(temporary, format="PNG")
    os.replace(temporary, path)
    return path
