"""Double of the built-in Lora's ``extra_networks_lora``: the ``lora`` extra network.

``<lora:name[:te[:unet[:dyn]]]>`` (or ``te=``/``unet=``/``dyn=``; unet defaults to te, te to 1). Activated for
every batch and hires pass; with ``[]`` when no prompt names a Lora, so ``load_networks([])`` then wants nothing and
each layer gets its backup back at its next forward. The ``sd_lora`` setting adds its network to every prompt.
"""

import networks
from modules import extra_networks, shared


class ExtraNetworkLora(extra_networks.ExtraNetwork):
    def __init__(self):
        super().__init__("lora")
        self.errors = {}

    def activate(self, p, params_list):
        self.errors.clear()
        extra = shared.opts.sd_lora
        if extra != "None" and extra in networks.available_networks and all(x.items[0] != extra for x in params_list):
            multiplier = shared.opts.extra_networks_default_multiplier
            p.all_prompts = [prompt + f"<lora:{extra}:{multiplier}>" for prompt in p.all_prompts]
            params_list.append(extra_networks.ExtraNetworkParams(items=[extra, multiplier]))
        names, te, unet, dyn = [], [], [], []
        for params in params_list:
            positional, named = params.positional, params.named
            names.append(positional[0])
            te.append(float(named.get("te", positional[1] if len(positional) > 1 else 1.0)))
            unet.append(float(named.get("unet", positional[2] if len(positional) > 2 else te[-1])))
            dim = named.get("dyn", positional[3] if len(positional) > 3 else None)
            dyn.append(None if dim is None else int(dim))
        networks.load_networks(names, te, unet, dyn)

    def deactivate(self, p):
        if self.errors:
            p.comment("Networks with errors: " + ", ".join(f"{name} ({count})" for name, count in self.errors.items()))
            self.errors.clear()
