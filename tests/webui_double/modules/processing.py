"""txt2img processing: ``StableDiffusionProcessingTxt2Img`` (``p``), ``process_images`` and the infotext.

``process_images`` follows the webui's order: before_process → the settings' checkpoint reloaded
(``sd_models.reload_model_weights``; a switch to an already loaded model fires no ``on_model_loaded``) →
setup_prompts/seeds → scripts.process → per batch n: the checkpoint reloaded again (the refiner may have switched
it) → prompts slice → before_process_batch → tags parsed (prompts stripped) → extra networks activated →
process_batch → conds (cached, the key includes ``extra_network_data``) → sample (hires pass: second activate) →
post_sample → decode → infotexts (+ a grid) → after all batches: deactivate (only if the first prompt had tags) →
postprocess. Left out: styles, face restore, saving, grids, img2img, refiner, VAE options, loading checkpoints
from files, prompt editing/emphasis.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from modules import errors, extra_networks, infotext_utils, prompt_parser, scripts, sd_models, sd_samplers, shared
from modules.shared import opts, state
from PIL import Image

opt_C, opt_f = 4, 8


def get_fixed_seed(seed):
    if seed in (None, "", -1):
        return int(random.randrange(4294967294))
    return seed


def image_noise(shape, seeds):
    """One latent of noise per seed, each from its own generator (so an image doesn't depend on its batch)."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


@dataclass(repr=False)
class StableDiffusionProcessing:
    sd_model: Any = None  # accepted and ignored, as the webui's (the property below reads shared.sd_model)
    prompt: Any = ""
    negative_prompt: Any = ""
    styles: list = None
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0
    sampler_name: str = "Euler"
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 3
    cfg_scale: float = 7.0
    width: int = 64
    height: int = 64
    extra_generation_params: dict = None
    override_settings: dict = None
    override_settings_restore_afterwards: bool = True
    disable_extra_networks: bool = False
    denoising_strength: float = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False

    scripts_value: Any = field(default=None, init=False)
    script_args_value: list = field(default=None, init=False)
    scripts_setup_complete: bool = field(default=False, init=False)
    is_api: bool = field(default=False, init=False)
    is_hr_pass: bool = field(default=False, init=False)
    iteration: int = field(default=0, init=False)
    all_prompts: list = field(default=None, init=False)
    all_negative_prompts: list = field(default=None, init=False)
    all_seeds: list = field(default=None, init=False)
    all_subseeds: list = field(default=None, init=False)
    main_prompt: str = field(default=None, init=False)
    prompts: list = field(default=None, init=False)
    negative_prompts: list = field(default=None, init=False)
    seeds: list = field(default=None, init=False)
    subseeds: list = field(default=None, init=False)
    extra_network_data: dict = field(default=None, init=False)
    c: Any = field(default=None, init=False)
    uc: Any = field(default=None, init=False)
    sampler: Any = field(default=None, init=False)

    # Class-level: the cond cache outlives a job (opts.persistent_cond_cache).
    cached_c = [None, None]
    cached_uc = [None, None]

    def __post_init__(self):
        self.comments = {}
        self.styles = self.styles or []
        self.extra_generation_params = self.extra_generation_params or {}
        self.override_settings = self.override_settings or {}
        self.cached_c = StableDiffusionProcessing.cached_c
        self.cached_uc = StableDiffusionProcessing.cached_uc

    @property
    def sd_model(self):  # noqa: F811 — the field's default becomes this property, as in the webui
        return shared.sd_model

    @sd_model.setter
    def sd_model(self, value):
        pass

    @property
    def scripts(self):
        return self.scripts_value

    @scripts.setter
    def scripts(self, value):
        self.scripts_value = value
        if self.scripts_value and self.script_args_value and not self.scripts_setup_complete:
            self.setup_scripts()

    @property
    def script_args(self):
        return self.script_args_value

    @script_args.setter
    def script_args(self, value):
        self.script_args_value = value
        if self.scripts_value and self.script_args_value and not self.scripts_setup_complete:
            self.setup_scripts()

    def setup_scripts(self):
        self.scripts_setup_complete = True
        self.scripts.setup_scrips(self, is_ui=not self.is_api)

    def comment(self, text):
        self.comments[text] = 1

    def setup_prompts(self):
        if isinstance(self.prompt, list):
            self.all_prompts = self.prompt
        elif isinstance(self.negative_prompt, list):
            self.all_prompts = [self.prompt] * len(self.negative_prompt)
        else:
            self.all_prompts = self.batch_size * self.n_iter * [self.prompt]
        if isinstance(self.negative_prompt, list):
            self.all_negative_prompts = self.negative_prompt
        else:
            self.all_negative_prompts = [self.negative_prompt] * len(self.all_prompts)
        if len(self.all_prompts) != len(self.all_negative_prompts):
            raise RuntimeError(f"Received a different number of prompts ({len(self.all_prompts)}) and negative "
                               f"prompts ({len(self.all_negative_prompts)})")
        self.main_prompt = self.all_prompts[0]

    def init(self, all_prompts, all_seeds, all_subseeds):
        pass

    def cached_params(self, required_prompts, steps, extra_network_data, hires_steps=None, use_old_scheduling=False):
        return (required_prompts, steps, hires_steps, use_old_scheduling, opts.CLIP_stop_at_last_layers,
                getattr(shared.sd_model, "sd_checkpoint_info", None), extra_network_data, self.width, self.height)

    def get_conds_with_caching(self, function, required_prompts, steps, caches, extra_network_data, hires_steps=None):
        key = self.cached_params(required_prompts, steps, extra_network_data, hires_steps)
        for cache in caches:
            if cache[0] is not None and key == cache[0]:
                return cache[1]
        cache = caches[0]
        cache[1] = function(shared.sd_model, required_prompts, steps, hires_steps, False)
        cache[0] = key
        return cache[1]

    def setup_conds(self):
        prompts = prompt_parser.SdConditioning(self.prompts, width=self.width, height=self.height)
        negative = prompt_parser.SdConditioning(self.negative_prompts, width=self.width, height=self.height,
                                                is_negative_prompt=True)
        self.firstpass_steps = self.steps
        self.uc = self.get_conds_with_caching(prompt_parser.get_learned_conditioning, negative, self.steps,
                                              [self.cached_uc], self.extra_network_data)
        self.c = self.get_conds_with_caching(prompt_parser.get_multicond_learned_conditioning, prompts, self.steps,
                                             [self.cached_c], self.extra_network_data)

    def parse_extra_network_prompts(self):
        self.prompts, self.extra_network_data = extra_networks.parse_prompts(self.prompts)

    def close(self):
        self.sampler = self.c = self.uc = None
        if not opts.persistent_cond_cache:
            StableDiffusionProcessing.cached_c = [None, None]
            StableDiffusionProcessing.cached_uc = [None, None]


@dataclass(repr=False)
class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    enable_hr: bool = False
    hr_scale: float = 2.0
    hr_second_pass_steps: int = 0
    hr_prompt: Any = ""
    hr_negative_prompt: Any = ""

    cached_hr_c = [None, None]
    cached_hr_uc = [None, None]

    def __post_init__(self):
        super().__post_init__()
        self.hr_c = self.hr_uc = None
        self.hr_prompts = self.hr_negative_prompts = self.hr_extra_network_data = None
        self.all_hr_prompts = self.all_hr_negative_prompts = None
        if self.enable_hr and self.denoising_strength is None:
            self.denoising_strength = 0.5

    def setup_prompts(self):
        super().setup_prompts()
        if not self.enable_hr:
            return
        hr_prompt = self.prompt if self.hr_prompt == "" else self.hr_prompt
        hr_negative = self.negative_prompt if self.hr_negative_prompt == "" else self.hr_negative_prompt
        count = self.batch_size * self.n_iter
        self.all_hr_prompts = hr_prompt if isinstance(hr_prompt, list) else count * [hr_prompt]
        self.all_hr_negative_prompts = hr_negative if isinstance(hr_negative, list) else count * [hr_negative]

    def init(self, all_prompts, all_seeds, all_subseeds):
        if self.enable_hr:
            self.hr_upscale_to_x = int(self.width * self.hr_scale)
            self.hr_upscale_to_y = int(self.height * self.hr_scale)
            self.extra_generation_params["Hires upscale"] = self.hr_scale

    def parse_extra_network_prompts(self):
        super().parse_extra_network_prompts()
        if self.enable_hr:
            batch = slice(self.iteration * self.batch_size, (self.iteration + 1) * self.batch_size)
            self.hr_prompts, self.hr_extra_network_data = extra_networks.parse_prompts(self.all_hr_prompts[batch])
            self.hr_negative_prompts = self.all_hr_negative_prompts[batch]

    def calculate_hr_conds(self):
        prompts = prompt_parser.SdConditioning(self.hr_prompts, width=self.hr_upscale_to_x, height=self.hr_upscale_to_y)
        negative = prompt_parser.SdConditioning(self.hr_negative_prompts, width=self.hr_upscale_to_x,
                                                height=self.hr_upscale_to_y, is_negative_prompt=True)
        steps = self.hr_second_pass_steps or self.steps
        self.hr_uc = self.get_conds_with_caching(prompt_parser.get_learned_conditioning, negative, self.firstpass_steps,
                                                 [self.cached_hr_uc, self.cached_uc], self.hr_extra_network_data, steps)
        self.hr_c = self.get_conds_with_caching(prompt_parser.get_multicond_learned_conditioning, prompts,
                                                self.firstpass_steps, [self.cached_hr_c, self.cached_c],
                                                self.hr_extra_network_data, steps)

    def sample(self, conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts):
        self.sampler = sd_samplers.create_sampler(self.sampler_name, self.sd_model)
        x = image_noise((opt_C, self.height // opt_f, self.width // opt_f), seeds)
        before_every_sampling(self, x=x, noise=x, c=conditioning, uc=unconditional_conditioning)
        samples = self.sampler.sample(self, x, conditioning, unconditional_conditioning,
                                      image_conditioning=x.new_zeros(x.shape[0], 5, 1, 1))
        if not self.enable_hr:
            return samples
        return self.sample_hr_pass(samples, seeds)

    def sample_hr_pass(self, samples, seeds):
        if state.interrupted:
            return samples
        self.is_hr_pass = True
        self.sampler = sd_samplers.create_sampler(self.sampler_name, self.sd_model)
        samples = torch.nn.functional.interpolate(
            samples, size=(self.hr_upscale_to_y // opt_f, self.hr_upscale_to_x // opt_f), mode="bilinear")
        state.nextjob()
        noise = image_noise(samples.shape[1:], seeds)
        if not self.disable_extra_networks:
            extra_networks.activate(self, self.hr_extra_network_data)
        self.calculate_hr_conds()
        if self.scripts is not None:
            self.scripts.before_hr(self)
        before_every_sampling(self, x=samples, noise=noise, c=self.hr_c, uc=self.hr_uc)
        samples = self.sampler.sample_img2img(self, samples, noise, self.hr_c, self.hr_uc,
                                              steps=self.hr_second_pass_steps or self.steps,
                                              image_conditioning=samples.new_zeros(samples.shape[0], 5, 1, 1))
        self.sampler = None
        self.is_hr_pass = False
        return samples


def before_every_sampling(p, x, noise, c, uc):
    """The webui's ``scripts.process_before_every_sampling`` call right before each sampling (txt2img
    ``processing.py:1338``, hires pass 1446 at 1937682a). A function of the double's own, so the Forge flavour can
    put its ``forge_objects`` reset in front of it as Forge does (``processing.py:1373-1382``, 1518-1525 at
    ``dfdcbab``)."""
    if p.scripts is not None:
        p.scripts.process_before_every_sampling(p, x=x, noise=noise, c=c, uc=uc)


class Processed:
    def __init__(self, p, images_list, seed=-1, info="", subseed=None, all_prompts=None, all_negative_prompts=None,
                 all_seeds=None, all_subseeds=None, index_of_first_image=0, infotexts=None, comments=""):
        self.images = images_list
        self.prompt = p.prompt
        self.seed = seed
        self.info = info
        self.comments = "".join(f"{comment}\n" for comment in p.comments)
        self.batch_size = p.batch_size
        self.all_prompts = all_prompts or p.all_prompts or [p.prompt]
        self.all_negative_prompts = all_negative_prompts or p.all_negative_prompts or [p.negative_prompt]
        self.all_seeds = all_seeds or p.all_seeds or [seed]
        self.all_subseeds = all_subseeds or p.all_subseeds or [subseed]
        self.index_of_first_image = index_of_first_image
        self.infotexts = infotexts or [info]
        self.extra_generation_params = p.extra_generation_params

    def infotext(self, p, index):
        return create_infotext(p, self.all_prompts, self.all_seeds, self.all_subseeds, comments=[],
                               position_in_batch=index % self.batch_size, iteration=index // self.batch_size)

    def js(self):
        return json.dumps({"prompt": self.prompt, "all_prompts": self.all_prompts, "infotexts": self.infotexts})


def create_infotext(p, all_prompts, all_seeds, all_subseeds, comments=None, iteration=0, position_in_batch=0,
                    use_main_prompt=False, index=None, all_negative_prompts=None):
    """The generation-parameters text of one image.

    ``extra_generation_params`` values may be a string/number, a list (indexed by ``index``), a callable
    (called with this function's ``locals()``, so it gets ``p``, ``index``, ``all_prompts``…) or None.
    Note the webui's own per-image call in ``process_images_inner`` passes the batch's prompts and the
    position IN THE BATCH as ``index``; ``Processed.infotext`` passes the job's and the index in the job.
    """
    if use_main_prompt:
        index = 0
    elif index is None:
        index = position_in_batch + iteration * p.batch_size
    if all_negative_prompts is None:
        all_negative_prompts = p.all_negative_prompts
    prompt_text = p.main_prompt if use_main_prompt else all_prompts[index]
    negative_prompt = all_negative_prompts[index]
    generation_params = {
        "Steps": p.steps,
        "Sampler": p.sampler_name,
        "CFG scale": p.cfg_scale,
        "Seed": p.all_seeds[0] if use_main_prompt else all_seeds[index],
        "Size": f"{p.width}x{p.height}",
        "Model hash": getattr(p.sd_model, "sd_model_hash", None),
        **p.extra_generation_params,
        "Version": "v1.10.1-double",
    }
    for key, value in generation_params.items():
        try:
            if isinstance(value, list):
                generation_params[key] = value[index]
            elif callable(value):
                generation_params[key] = value(**locals())
        except Exception:
            errors.report(f'Error creating infotext for key "{key}"', exc_info=True)
            generation_params[key] = None
    text = ", ".join(k if k == v else f"{k}: {infotext_utils.quote(v)}"
                     for k, v in generation_params.items() if v is not None)
    negative_text = f"\nNegative prompt: {negative_prompt}" if negative_prompt else ""
    return f"{prompt_text}{negative_text}\n{text}".strip()


def decode_latent_batch(model, batch):
    with torch.no_grad():
        return [model.decode_first_stage(batch[i:i + 1])[0] for i in range(batch.shape[0])]


def process_images(p: StableDiffusionProcessing) -> Processed:
    if p.scripts is not None:
        p.scripts.before_process(p)
    stored = {k: opts.data[k] for k in p.override_settings if k in opts.data}
    missing = [k for k in p.override_settings if k not in opts.data]
    try:
        if "sd_model_checkpoint" not in p.override_settings:
            sd_models.reload_model_weights()
        for k, v in p.override_settings.items():
            opts.set(k, v, is_api=True, run_callbacks=False)
            if k == "sd_model_checkpoint":
                sd_models.reload_model_weights()
        return process_images_inner(p)
    finally:
        if p.override_settings_restore_afterwards:
            opts.data.update(stored)
            for k in missing:
                opts.data.pop(k, None)
            if "sd_model_checkpoint" in p.override_settings:
                sd_models.reload_model_weights()


# The autograd mode a job's batches run under: A1111's process_images_inner uses torch.no_grad(); Forge's
# (modules/processing.py:911 at dfdcbab) torch.inference_mode(), which forge_double.install_forge_sampling sets.
JOB_GRAD_MODE = torch.no_grad


def process_images_inner(p: StableDiffusionProcessing) -> Processed:
    seed, subseed = get_fixed_seed(p.seed), get_fixed_seed(p.subseed)
    p.sd_model_hash = getattr(shared.sd_model, "sd_model_hash", None)
    p.setup_prompts()
    p.all_seeds = seed if isinstance(seed, list) else [int(seed) + (x if p.subseed_strength == 0 else 0)
                                                       for x in range(len(p.all_prompts))]
    p.all_subseeds = subseed if isinstance(subseed, list) else [int(subseed) + x for x in range(len(p.all_prompts))]
    if p.scripts is not None:
        p.scripts.process(p)

    infotexts, output_images = [], []
    with JOB_GRAD_MODE():
        p.init(p.all_prompts, p.all_seeds, p.all_subseeds)
        if state.job_count == -1:
            state.job_count = p.n_iter
        for n in range(p.n_iter):
            p.iteration = n
            if state.skipped:
                state.skipped = False
            if state.interrupted or state.stopping_generation:
                break
            sd_models.reload_model_weights()  # model can be changed for example by refiner
            batch = slice(n * p.batch_size, (n + 1) * p.batch_size)
            p.prompts, p.negative_prompts = p.all_prompts[batch], p.all_negative_prompts[batch]
            p.seeds, p.subseeds = p.all_seeds[batch], p.all_subseeds[batch]
            if p.scripts is not None:
                p.scripts.before_process_batch(p, batch_number=n, prompts=p.prompts, seeds=p.seeds,
                                               subseeds=p.subseeds)
            if len(p.prompts) == 0:
                break
            p.parse_extra_network_prompts()
            if not p.disable_extra_networks:
                extra_networks.activate(p, p.extra_network_data)
            if p.scripts is not None:
                p.scripts.process_batch(p, batch_number=n, prompts=p.prompts, seeds=p.seeds, subseeds=p.subseeds)
            p.setup_conds()
            samples = p.sample(conditioning=p.c, unconditional_conditioning=p.uc, seeds=p.seeds, subseeds=p.subseeds,
                               subseed_strength=p.subseed_strength, prompts=p.prompts)
            if p.scripts is not None:
                ps = scripts.PostSampleArgs(samples)
                p.scripts.post_sample(p, ps)
                samples = ps.samples
            decoded = torch.stack(decode_latent_batch(p.sd_model, samples)).float()
            decoded = torch.clamp((decoded + 1.0) / 2.0, min=0.0, max=1.0)
            state.nextjob()
            p.prompts, p.negative_prompts = p.all_prompts[batch], p.all_negative_prompts[batch]

            def infotext(index=0, use_main_prompt=False):
                return create_infotext(p, p.prompts, p.seeds, p.subseeds, use_main_prompt=use_main_prompt,
                                       index=index, all_negative_prompts=p.negative_prompts)

            for i, image in enumerate(decoded):
                p.batch_index = i
                pixels = (255.0 * np.moveaxis(image.cpu().numpy(), 0, 2)).astype(np.uint8)
                infotexts.append(infotext(i))
                output_images.append(Image.fromarray(pixels))
        if not infotexts:
            infotexts.append(Processed(p, []).infotext(p, 0))
        index_of_first_image = 0
        if opts.return_grid and not p.do_not_save_grid and not (len(output_images) < 2 and opts.grid_only_if_multiple):
            # The grid's text comes from the LAST batch's ``infotext`` closure, with the main prompt.
            grid = Image.new("RGB", (sum(i.width for i in output_images), output_images[0].height))
            for k, image in enumerate(output_images):
                grid.paste(image, (k * image.width, 0))
            infotexts.insert(0, infotext(use_main_prompt=True))
            output_images.insert(0, grid)
            index_of_first_image = 1
    if not p.disable_extra_networks and p.extra_network_data:
        extra_networks.deactivate(p, p.extra_network_data)
    res = Processed(p, images_list=output_images, seed=p.all_seeds[0], info=infotexts[0],
                    subseed=p.all_subseeds[0], index_of_first_image=index_of_first_image, infotexts=infotexts)
    if p.scripts is not None:
        p.scripts.postprocess(p, res)
    return res
