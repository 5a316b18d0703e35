"""``modules.shared``: command-line options, settings, the loaded model and the job state.

``options_templates`` *is* ``opts.data_labels`` (extensions that add templates at import see their defaults
through ``opts``); the few webui settings the double's pipeline reads are declared here with the webui's
defaults. ``sd_model`` is a property over ``sd_models.model_data``, as in the webui (``shared_items.Shared``).
``cmd_opts`` is rebuilt by the fixture (it runs the extension's ``preload.py`` on a parser).
"""

from __future__ import annotations

import argparse
import sys

from modules import options
from modules.options import OptionInfo, options_section  # noqa: F401  (extensions use shared.OptionInfo)

cmd_opts = argparse.Namespace(sliders_dir=None, lora_dir=None, lyco_dir_backcompat=None, no_prompt_history=True,
                              freeze_settings=False)

options_templates: dict[str, OptionInfo] = {}
options_templates.update(options_section(("saving-images", "Saving images/grids"), {
    "samples_format": OptionInfo("png", "File format for images"),
    "return_grid": OptionInfo(True, "Show grid in gallery"),
    "grid_only_if_multiple": OptionInfo(True, "Do not save grids consisting of one picture"),
}))
options_templates.update(options_section(("sd", "Stable Diffusion"), {
    "sd_lora": OptionInfo("None", "Add network to prompt"),
    "CLIP_stop_at_last_layers": OptionInfo(1, "Clip skip"),
    "sd_model_checkpoint": OptionInfo(None, "Stable Diffusion checkpoint"),
    "sd_checkpoints_limit": OptionInfo(1, "Maximum number of checkpoints loaded at the same time"),
    "sd_checkpoints_keep_in_cpu": OptionInfo(True, "Only keep one model on device"),
}))
options_templates.update(options_section(("optimizations", "Optimizations"), {
    "persistent_cond_cache": OptionInfo(True, "Persistent cond cache"),
    "batch_cond_uncond": OptionInfo(True, "Batch cond/uncond"),
}))
options_templates.update(options_section(("sampler-params", "Sampler parameters"), {
    "skip_early_cond": OptionInfo(0.0, "Ignore negative prompt during early sampling", infotext="Skip Early CFG"),
}))
options_templates.update(options_section(("extra_networks", "Extra Networks"), {
    "extra_networks_default_multiplier": OptionInfo(1.0, "Default multiplier for extra networks"),
    "extra_networks_add_text_separator": OptionInfo(" ", "Extra networks separator"),
}))

opts = options.Options(options_templates)


class State:
    """``shared.state`` (``modules.shared_state.State``): flags the pipeline polls, progress counters."""

    skipped = False
    interrupted = False
    stopping_generation = False
    job = ""
    job_no = 0
    job_count = 0
    sampling_step = 0
    sampling_steps = 0
    current_latent = None
    textinfo = None

    def interrupt(self):
        self.interrupted = True

    def nextjob(self):
        self.job_no += 1
        self.sampling_step = 0

    def begin(self, job="(unknown)"):
        self.skipped = self.interrupted = self.stopping_generation = False
        self.job, self.job_no, self.job_count = job, 0, -1
        self.sampling_step = self.sampling_steps = 0
        self.textinfo = None

    def end(self):
        self.job = ""
        self.job_count = 0


state = State()
device = "cpu"


class Shared(sys.modules[__name__].__class__):
    """As in the webui: ``sd_model`` is a property over ``sd_models.model_data`` (assigning it makes that model
    the current one and puts it first among the loaded models)."""

    @property
    def sd_model(self):
        import modules.sd_models

        return modules.sd_models.model_data.get_sd_model()

    @sd_model.setter
    def sd_model(self, value):
        import modules.sd_models

        modules.sd_models.model_data.set_sd_model(value)


sys.modules[__name__].__class__ = Shared
