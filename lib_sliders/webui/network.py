"""The ``slider`` extra network: how the webui tells us a batch is about to be sampled.

The webui strips every ``<slider:…>`` tag from the prompts and calls ``activate`` once per batch (and again
before a hires pass) with the FIRST prompt's tags only, or with ``[]`` when that prompt has none. We read
every prompt ourselves (``SlidersRuntime.plan_batch``), so ``activate`` applies the batch's plan whatever
``params_list`` holds; an empty plan takes every slider off, which is how it "deactivates itself".
"""

from __future__ import annotations

from modules import extra_networks

from ..prompt.prompt_tags import NETWORK_NAME
from . import host_kind
from .runtime import SlidersRuntime


class ExtraNetworkSlider(extra_networks.ExtraNetwork):
    def __init__(self, runtime: SlidersRuntime):
        super().__init__(NETWORK_NAME)
        self.runtime = runtime

    def activate(self, p, params_list):
        # Forge: nothing is applied yet (the tags are stripped all the same); a job our script didn't see (no
        # ``p.scripts``) is told here.
        wanted = bool(params_list) or host_kind.prompts_have_sliders(getattr(p, "all_prompts", None))
        if host_kind.refuse_generation(p, self.runtime.report, wanted, getattr(p, "sd_model", None)):
            return
        self.runtime.activate(p)

    def deactivate(self, p):
        # Only called when the first prompt had extra-network tags; Script.postprocess always cleans up.
        self.runtime.finish(p)
