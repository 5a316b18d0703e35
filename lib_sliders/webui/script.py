"""The always-on script "Concept Sliders" and the callbacks that connect the runtime to the webui.

``register()`` is called once per (re)load of the entry script: settings and X/Y/Z axes at import, the
extra network and the cards page in ``on_before_ui`` (the webui clears both registries before that),
routes in ``on_app_started``, the training tab in ``on_ui_tabs``, per-step α in ``on_cfg_denoiser``, model swaps
in ``on_model_loaded``, renamed sliders found by hash in ``on_infotext_pasted``.
"""

from __future__ import annotations

import logging
import sys

from modules import call_queue, extra_networks, prompt_parser, script_callbacks, scripts, shared, ui_extra_networks

from ..apply.job_plan import varies_across_images
from ..library.slider_library import SliderLibrary
from ..prompt.pasted_names import rename_by_hash
from . import api, host_kind, settings, xyz
from .args import EMPTY_ARGS, parse_args
from .forge_runtime import ForgeSlidersRuntime
from .network import ExtraNetworkSlider
from .overrides import apply_overrides
from .runtime import Host, SlidersRuntime
from .strip_seeds import share_first_seed
from .train_jobs import TrainingJobs
from .user_metadata import merged_info, read_user_metadata

logger = logging.getLogger("concept_sliders")
TITLE = "Concept Sliders"


class LibraryHolder:
    """The ``SliderLibrary`` for the current folder settings; rebuilt when they change."""

    def __init__(self):
        self._library: SliderLibrary | None = None
        self._key: tuple | None = None

    def __call__(self) -> SliderLibrary:
        key = (tuple(settings.slider_dirs()), tuple(settings.lora_dirs()),
               bool(settings.opt("sliders_include_lora_dir")))
        if self._library is None or key != self._key:
            self._library = SliderLibrary(list(key[0]), list(key[1]), include_lora_sliders=key[2])
            self._key = key
        return self._library


library = LibraryHolder()


def slider_info(name: str) -> dict | None:
    lib = library()
    entry = lib.get(name)
    if entry is None:
        return None
    return merged_info(lib.info(name), read_user_metadata(entry.path))


def same_slider(a: str, b: str) -> bool:
    if a == b:
        return True
    entry_a, entry_b = library().get(a), library().get(b)
    return entry_a is not None and entry_b is not None and entry_a.path == entry_b.path


def count_subprompts(prompts) -> list[int]:
    res_indexes, _, _ = prompt_parser.get_multicond_prompt_list(list(prompts))
    return [len(indexes) for indexes in res_indexes]


def lora_may_write_weights(p) -> bool:
    """Whether the built-in Lora could merge into (or restore) UNet weights during this batch.

    It backs weights up lazily at its first forward; anything we merged would then be captured in its
    backup. Only when it has nothing loaded, nothing merged and nothing coming is merging safe.
    """
    networks = sys.modules.get("networks")
    if networks is None or not hasattr(networks, "loaded_networks"):
        return False
    if networks.loaded_networks or getattr(shared.opts, "sd_lora", "None") not in ("None", "", None):
        return True
    # The hires pass activates its own prompt's networks: a Lora named only there writes the weights then.
    for data in (getattr(p, "extra_network_data", None), getattr(p, "hr_extra_network_data", None)):
        if data and ("lora" in data or "lyco" in data):
            return True
    model = shared.sd_model
    unet = getattr(getattr(model, "model", None), "diffusion_model", None)
    return unet is None or any(getattr(m, "network_current_names", ()) for m in unet.modules())


# Forge: the same runtime on Forge's UNet (forge_runtime); decided by its package, there before any model loads.
runtime = (ForgeSlidersRuntime if host_kind.forge_installed() else SlidersRuntime)(Host(
    sd_model=lambda: shared.sd_model,
    library=library,
    apply_mode=settings.apply_mode,
    add_hashes=lambda: bool(settings.opt("sliders_add_hashes_to_infotext")),
    count_subprompts=count_subprompts,
    lora_may_write_weights=lora_may_write_weights,
))


def _training_jobs() -> TrainingJobs:
    from .train_webui import make_host

    def first_slider_dir() -> str:
        return settings.slider_dirs()[0]

    return TrainingJobs(make_host(runtime, first_slider_dir, call_queue.queue_lock,
                                  on_saved=lambda job: library().refresh(), library=library))


training_jobs = _training_jobs()


class ConceptSlidersScript(scripts.Script):
    def title(self):
        return TITLE

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        from . import accordion  # gradio widgets only when a UI (or the API's defaults) is built

        lib = library()
        built = accordion.build(
            self.elem_id, lib.names(), slider_info,
            default_alpha_max=float(settings.opt("sliders_default_alpha_max")),
            max_rows=int(settings.opt("sliders_accordion_rows")),
            refresh_names=lambda: (lib.refresh(), lib.names())[1],
            note=host_kind.ui_note(host_kind.GENERATION),
        )
        self.infotext_fields = built.infotext_fields
        self.paste_field_names = built.paste_field_names
        return [built.state]

    def before_process(self, p, *args):
        runtime.clear()  # whatever an interrupted job left behind

    def process(self, p, *args):
        parsed = parse_args(args[0] if args else EMPTY_ARGS)
        requests = apply_overrides(p, parsed.requests, same=same_slider,
                                   default_alpha=float(settings.opt("sliders_default_alpha")))
        if host_kind.refuse_generation(p, runtime.report, bool(requests or parsed.problems), shared.sd_model):
            return  # Forge: sliders aren't applied there yet (docs/forge.md); the job is told once
        runtime.start_job(p, requests)
        for problem in parsed.problems:
            runtime.report(p, problem)
        if settings.opt("sliders_strip_same_seed") and varies_across_images(requests, p.all_prompts or []):
            share_first_seed(p)

    def before_process_batch(self, p, *args, batch_number=0, prompts=None, **kwargs):
        if getattr(p, "disable_extra_networks", False):
            return
        prompts = list(prompts if prompts is not None else p.prompts)
        if host_kind.refuse_generation(p, runtime.report, host_kind.prompts_have_sliders(prompts), shared.sd_model):
            return  # the webui still strips the tags from the prompts
        runtime.plan_batch(p, prompts, batch_number)

    def process_before_every_sampling(self, p, *args, **kwargs):
        runtime.before_every_sampling(p)

    def postprocess(self, p, processed, *args):
        runtime.finish(p)


# ---------------------------------------------------------------------------------------------- wiring


def _on_before_ui():
    extra_networks.register_extra_network(ExtraNetworkSlider(runtime))
    from .page import ExtraNetworksPageSliders

    ui_extra_networks.register_page(ExtraNetworksPageSliders(
        library, settings.slider_dirs, lambda: float(settings.opt("sliders_default_alpha"))))


def _on_app_started(demo, app):
    api.register_routes(app, library)
    api.register_training_routes(app, lambda: training_jobs)


def _on_ui_tabs():
    from .train_tab import create_tab

    return [(create_tab(training_jobs, library, note=host_kind.ui_note(host_kind.TRAINING)), "Concept Sliders",
             "concept_sliders")]


def _on_cfg_denoiser(params):
    runtime.on_cfg_denoiser(params)


def _on_model_loaded(sd_model):
    runtime.on_model_loaded(sd_model)


def _on_infotext_pasted(infotext, params):
    # Runs before the webui fills the fields (and in the API's PNG Info): a slider renamed on disk since
    # the image was made is found again by its hash.
    lib = library()
    renames = rename_by_hash(params, lambda name: lib.get(name) is not None, lib.name_for_hash)
    for old, new in renames.items():
        logger.info("Concept Sliders: pasted slider %r is %r on disk now (same hash)", old, new)


def _on_script_unloaded():
    runtime.clear()


def register() -> None:
    settings.register()
    # Before the UI is built (and under --nowebui, before the API builds script defaults).
    try:
        xyz.register_axes(lambda: library().names(), lambda name: library().get(name) is not None)
    except Exception:  # the plot is optional; never stop the extension for it
        logger.exception("Concept Sliders: couldn't add X/Y/Z plot axes")
    # The webui's extra-network registry is rebuilt after scripts load; under --nowebui on_before_ui
    # comes late too, but still before the first generation.
    script_callbacks.on_before_ui(_on_before_ui)
    script_callbacks.on_app_started(_on_app_started)
    script_callbacks.on_ui_tabs(_on_ui_tabs)
    script_callbacks.on_cfg_denoiser(_on_cfg_denoiser)
    script_callbacks.on_model_loaded(_on_model_loaded)
    script_callbacks.on_infotext_pasted(_on_infotext_pasted)
    script_callbacks.on_script_unloaded(_on_script_unloaded)
