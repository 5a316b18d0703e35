"""Start the webui double with this extension loaded, the way the webui does, around a toy SD1 model.

``webui_env(tmp_root)`` is a context manager (wrap it in a module-scoped pytest fixture):

1. ``tests/webui_double`` goes first on ``sys.path``; cached ``modules*`` and ``lib_sliders.webui*`` are
   purged (before and after; afterwards the ones that were there before are put back), so each test module
   gets fresh module state and modules imported before it keep theirs;
2. command-line options come from a parser the extension's ``preload.py`` extends (``--sliders-dir``),
   plus Lora's ``--lora-dir``/``--lyco-dir-backcompat``, all pointing at temp folders;
3. slider files are written with the core writer: ``age`` and ``smile`` (UNet), ``words`` (text encoder
   only), ``xl`` (an SDXL file) and ``misfit`` (SD1 names, shapes of another model);
4. ``shared.sd_model`` = ``toy_diffusion.make_toy_model("sd1")`` whose text encoder is swapped for a
   CLIP-shaped double (HF layer names under ``wrapped.transformer``, as the webui's hijacked SD1 model);
5. ``scripts/xyz_grid.py`` then ``scripts/concept_sliders.py`` are imported by ``load_scripts`` (file-name
   module names, extension folder on ``sys.path`` during import), then on_model_loaded, the registries'
   ``initialize()``, ``on_before_ui``, the txt2img UI in a ``gr.Blocks`` and ``on_app_started`` run in
   the webui's start-up order. ``webui_env(tmp_root, lora=True)`` also loads the built-in Lora's double
   (``extensions-builtin/Lora``, between the two, as built-in extensions load): its class-level patches of
   Linear/Conv2d/… forwards stay on until the env closes.

``WebuiEnv.run(p)`` runs ``process_images`` and then checks the model is exactly as before (weights
bitwise, no hooks) and that no error was swallowed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import math
import os
import sys
from dataclasses import dataclass, field

import torch

DOUBLE_DIR = os.path.dirname(os.path.abspath(__file__))
TESTS_DIR = os.path.dirname(DOUBLE_DIR)
REPO_ROOT = os.path.dirname(TESTS_DIR)
SEED = 1234


LORA_MODULES = ("networks", "network", "lora_patches", "extra_networks_lora")


def _purged(name: str) -> bool:
    return name == "modules" or name.startswith("modules.") or name == "lib_sliders.webui" \
        or name.startswith("lib_sliders.webui.") or name in LORA_MODULES


def purge_modules() -> dict:
    """Drop the double's and the extension's webui modules from ``sys.modules``; returns what was there."""
    return {name: sys.modules.pop(name) for name in list(sys.modules) if _purged(name)}


def restore_modules(saved: dict) -> None:
    """Put back what ``purge_modules`` dropped (and the parent packages' attributes), so that test modules
    that imported ``lib_sliders.webui.*`` before an env still share classes with what they import later."""
    sys.modules.update(saved)
    for name, module in saved.items():
        parent, _, child = name.rpartition(".")
        if parent in sys.modules:
            setattr(sys.modules[parent], child, module)


# ------------------------------------------------------------------------------------------ text encoder


class _ClipLayer(torch.nn.Module):
    """One pre-norm CLIP encoder layer with HF's child names (``self_attn.q_proj`` …, ``mlp.fc1``/``fc2``)."""

    def __init__(self, width: int, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.layer_norm1 = torch.nn.LayerNorm(width)
        self.self_attn = torch.nn.Module()
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            setattr(self.self_attn, name, torch.nn.Linear(width, width))
        self.layer_norm2 = torch.nn.LayerNorm(width)
        self.mlp = torch.nn.Module()
        self.mlp.fc1 = torch.nn.Linear(width, 2 * width)
        self.mlp.fc2 = torch.nn.Linear(2 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, w = x.shape
        h = self.layer_norm1(x)
        attn = self.self_attn

        def split(t):
            return t.reshape(b, n, self.heads, w // self.heads).transpose(1, 2)

        y = torch.nn.functional.scaled_dot_product_attention(split(attn.q_proj(h)), split(attn.k_proj(h)),
                                                             split(attn.v_proj(h)), is_causal=True)
        x = x + attn.out_proj(y.transpose(1, 2).reshape(b, n, w))
        return x + self.mlp.fc2(torch.nn.functional.gelu(self.mlp.fc1(self.layer_norm2(x))))


class ClipEmbedderDouble(torch.nn.Module):
    """The webui's SD1 ``cond_stage_model`` shape: ``wrapped.transformer.text_model.encoder.layers.N…``.

    ``forward(list[str]) -> [B, 77 × chunks, width]`` with the toy model's hashed-word tokens.
    """

    def __init__(self, width: int):
        super().__init__()
        from bench.common.toy_diffusion import MAX_LENGTH, VOCAB_BUCKETS

        text_model = torch.nn.Module()
        text_model.embeddings = torch.nn.Module()
        text_model.embeddings.token_embedding = torch.nn.Embedding(VOCAB_BUCKETS + 2, width)
        text_model.embeddings.position_embedding = torch.nn.Embedding(MAX_LENGTH, width)
        text_model.encoder = torch.nn.Module()
        text_model.encoder.layers = torch.nn.ModuleList([_ClipLayer(width)])
        text_model.final_layer_norm = torch.nn.LayerNorm(width)
        self.wrapped = torch.nn.Module()
        self.wrapped.transformer = torch.nn.Module()
        self.wrapped.transformer.text_model = text_model
        self.bos, self.eos, self.length = VOCAB_BUCKETS, VOCAB_BUCKETS + 1, MAX_LENGTH

    def forward(self, prompts) -> torch.Tensor:
        from bench.common.toy_diffusion import split_words, word_bucket

        # The webui's long-prompt path (``sd_hijack_clip``): 75 tokens per chunk, each chunk encoded on its
        # own between BOS and EOS, the chunks concatenated along the tokens; every prompt of the call gets
        # as many chunks as the longest one (the extra ones empty). 76+ tokens → [B, 154, width], and so on.
        per_chunk = self.length - 2
        tokens = [[word_bucket(w) for w in split_words(prompt)] for prompt in prompts]
        chunks = max([1] + [-(-len(words) // per_chunk) for words in tokens])
        ids = torch.full((len(prompts), chunks, self.length), self.eos, dtype=torch.long)
        ids[:, :, 0] = self.bos
        for row, words in enumerate(tokens):
            for chunk in range(chunks):
                piece = words[chunk * per_chunk:(chunk + 1) * per_chunk]
                ids[row, chunk, 1:1 + len(piece)] = torch.tensor(piece, dtype=torch.long)
        model = self.wrapped.transformer.text_model
        x = model.embeddings.token_embedding(ids.reshape(-1, self.length)) + model.embeddings.position_embedding.weight
        for layer in model.encoder.layers:
            x = layer(x)
        return model.final_layer_norm(x).reshape(len(prompts), chunks * self.length, -1)


def make_model(seed: int = 0):
    from bench.common.toy_diffusion import TINY_CONFIGS, make_toy_model

    model = make_toy_model("sd1", seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7 + seed)
        model.cond_stage_model = ClipEmbedderDouble(TINY_CONFIGS["sd1"]["context_dim"]).eval().requires_grad_(False)
    name = f"toy-sd1-{seed}"
    model.sd_checkpoint_info = type("CheckpointInfo", (), {"name_for_extra": name, "title": f"{name}.ckpt",
                                                           "filename": f"{name}.ckpt"})()
    model.sd_model_hash = f"{seed:08x}"
    return model


# ---------------------------------------------------------------------------------------------- sliders


def write_sliders(model, sliders_dir: str) -> None:
    from bench.common.random_sliders import random_lora_for, random_slider
    from lib_sliders.files.lora import LoraModule, SliderNetwork
    from lib_sliders.files.slider_file import save_slider

    unet = model.model.diffusion_model
    for name, seed in (("age", 1), ("smile", 2)):
        save_slider(random_slider(unet, "noxattn", rank=4, alpha=1.0, seed=seed, name=name),
                    os.path.join(sliders_dir, f"{name}.safetensors"), arch="sd1", dtype=torch.float32,
                    alpha_range=(-4.0, 4.0))
    generator = torch.Generator().manual_seed(3)
    encoder = model.cond_stage_model
    text = {}
    for path in ("encoder.layers.0.self_attn.q_proj", "encoder.layers.0.self_attn.v_proj", "encoder.layers.0.mlp.fc1"):
        module = random_lora_for(encoder.wrapped.transformer.text_model.get_submodule(path), 4, 4.0, generator)
        text[path] = module
    save_slider(SliderNetwork("words", text=[text]), os.path.join(sliders_dir, "words.safetensors"), arch="sd1",
                dtype=torch.float32)
    # An SDXL file: its only layer (a second transformer block) exists in SDXL UNets alone.
    xl_path = "input_blocks.4.1.transformer_blocks.1.attn1.to_q"
    xl = LoraModule(torch.randn(4, 64, generator=generator) / 8, torch.randn(64, 4, generator=generator), 1.0)
    save_slider(SliderNetwork("xl", unet={xl_path: xl}, arch=frozenset({"sdxl"})),
                os.path.join(sliders_dir, "xl.safetensors"), arch="sdxl", dtype=torch.float32)
    # SD1 layer names, but shaped for a wider model.
    misfit = LoraModule(torch.randn(4, 48, generator=generator), torch.randn(48, 4, generator=generator), 1.0)
    save_slider(SliderNetwork("misfit", unet={"input_blocks.1.1.transformer_blocks.0.attn1.to_q": misfit}),
                os.path.join(sliders_dir, "misfit.safetensors"), arch="sd1", dtype=torch.float32)


# ------------------------------------------------------------------------------------------------ checks


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_model_untouched(model, saved: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert state.keys() == saved.keys()
    changed = [k for k, v in state.items() if not torch.equal(v, saved[k])]
    assert not changed, f"weights changed: {changed[:5]}"
    hooked = [name for name, m in model.named_modules()
              if m._forward_hooks or m._forward_pre_hooks or m._backward_hooks]
    assert not hooked, f"hooks left on: {hooked[:5]}"
    from torch.nn.modules import module as torch_module

    assert not torch_module._global_forward_hooks and not torch_module._global_forward_pre_hooks


# ---------------------------------------------------------------------------------------------- the env


@dataclass
class WebuiEnv:
    root: str
    sliders_dir: str
    lora_dir: str
    model: object
    saved: dict
    runner: object
    script: object
    probe: object
    demo: object
    app: object
    extension_module: object
    xyz_module: object
    added_callbacks: list = field(default_factory=list)

    # modules of the double, imported after sys.path was set up
    @property
    def m(self):
        import modules.errors
        import modules.extra_networks
        import modules.processing
        import modules.script_callbacks
        import modules.scripts
        import modules.sd_models
        import modules.shared
        import modules.ui_extra_networks

        return modules

    def reset(self) -> None:
        """Before each test: no leftovers from the last one (job state, settings, caches, test callbacks)."""
        m = self.m
        m.errors.reported.clear()
        m.shared.state.begin()
        m.shared.opts.data.clear()
        # Image i of a job keeps seed + i here, so each image of a strip has noise of its own and a row given
        # to the wrong image shows; test_webui_adapter's strip-seed tests switch the shared seed (the default) on.
        m.shared.opts.sliders_strip_same_seed = False
        m.sd_models.model_data.loaded_sd_models.clear()  # models other tests loaded
        m.shared.sd_model = self.model
        for cls in (m.processing.StableDiffusionProcessing, m.processing.StableDiffusionProcessingTxt2Img):
            for name in ("cached_c", "cached_uc", "cached_hr_c", "cached_hr_uc"):
                if name in cls.__dict__:
                    setattr(cls, name, [None, None])
        for fn in self.added_callbacks:
            m.script_callbacks.remove_callbacks_for_function(fn)
        self.added_callbacks.clear()
        self.probe.reset()

    def on_cfg_denoiser(self, fn) -> None:
        """Register a cfg_denoiser callback (after the extension's); removed by ``reset``."""
        self.m.script_callbacks.on_cfg_denoiser(fn)
        self.added_callbacks.append(fn)

    def make_p(self, prompt="a photo of a person", sliders=None, **kwargs):
        """A txt2img ``p`` as the UI/API builds it: script args = UI defaults, ours replaced by ``sliders``."""
        m = self.m
        kwargs = {"seed": SEED, "steps": 3, "width": 64, "height": 64, "cfg_scale": 5.0,
                  "negative_prompt": "blurry", "do_not_save_grid": True, **kwargs}  # no grid, as the API
        p = m.processing.StableDiffusionProcessingTxt2Img(prompt=prompt, **kwargs)
        args = self.runner.default_script_args()
        if sliders is not None:
            args[self.script.args_from] = sliders
        p.scripts = self.runner
        p.script_args = args
        return p

    def run(self, p, *, errors_expected=False):
        """``process_images(p)``; returns the Processed with ``.latents`` (the final latents of every batch)."""
        m = self.m
        self.probe.samples.clear()
        m.shared.state.begin("txt2img")
        try:
            res = m.processing.process_images(p)
        finally:
            m.shared.state.end()
        res.latents = torch.cat(self.probe.samples) if self.probe.samples else None
        assert_model_untouched(self.model, self.saved)
        if not errors_expected:
            assert m.errors.reported == [], "\n".join(m.errors.reported)
        return res


def _probe_class(scripts):
    class ProbeScript(scripts.Script):
        """Another extension's always-on script: records final latents; can raise in its hooks."""

        def __init__(self):
            self.reset()

        def reset(self):
            self.samples = []
            self.fail_in = set()
            self.on_process_batch = None

        def title(self):
            return "Test probe"

        def show(self, is_img2img):
            return scripts.AlwaysVisible

        def ui(self, is_img2img):
            return []

        def process_batch(self, p, *args, **kwargs):
            if "process_batch" in self.fail_in:
                raise RuntimeError("probe: process_batch failed")
            if self.on_process_batch is not None:
                self.on_process_batch(p)

        def post_sample(self, p, ps, *args):
            self.samples.append(ps.samples.detach().clone())

    return ProbeScript


def _load_file(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def webui_env(root: str, lora: bool = False):
    saved_path = list(sys.path)
    saved_modules = purge_modules()
    sys.path.insert(0, DOUBLE_DIR)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 threads on 2 shared cores stall badly when another job holds one
    gradio_patch = None
    try:
        import gradio as gr
        from fastapi import FastAPI
        from modules import (
            extra_networks,
            gradio_extensons,
            paths,
            script_callbacks,
            scripts,
            shared,
            ui_extra_networks,
        )

        gradio_patch = gradio_extensons
        paths.data_path = root
        paths.models_path = os.path.join(root, "models")
        lora_dir = os.path.join(paths.models_path, "Lora")
        # Lora's preload adds these; the extension's preload.py adds --sliders-dir (default under models/).
        parser = argparse.ArgumentParser()
        parser.add_argument("--lora-dir", type=str, default=lora_dir)
        parser.add_argument("--lyco-dir-backcompat", type=str, default=os.path.join(paths.models_path, "LyCORIS"))
        _load_file("preload.py", os.path.join(REPO_ROOT, "preload.py")).preload(parser)
        cmd_opts = parser.parse_args([])
        cmd_opts.no_prompt_history = True
        shared.cmd_opts = cmd_opts
        sliders_dir = cmd_opts.sliders_dir
        assert sliders_dir == os.path.join(paths.models_path, "sliders")
        os.makedirs(sliders_dir)
        os.makedirs(lora_dir)

        model = make_model()
        write_sliders(model, sliders_dir)
        shared.sd_model = model

        lora_script = os.path.join(DOUBLE_DIR, "extensions-builtin", "Lora", "scripts", "lora_script.py")
        scripts.load_scripts([(paths.script_path, os.path.join(DOUBLE_DIR, "scripts", "xyz_grid.py")),
                              *([(os.path.dirname(os.path.dirname(lora_script)), lora_script)] if lora else []),
                              (REPO_ROOT, os.path.join(REPO_ROOT, "scripts", "concept_sliders.py"))])
        from modules import errors

        assert errors.reported == [], errors.reported
        extension = next(d.module for d in scripts.scripts_data if d.path.endswith("concept_sliders.py"))
        xyz_module = next(d.module for d in scripts.scripts_data if d.script_class.__module__ == "xyz_grid.py")
        probe_class = _probe_class(scripts)
        scripts.scripts_data.append(scripts.ScriptClassData(probe_class, __file__, DOUBLE_DIR, sys.modules[__name__]))

        # initialize_rest(): model load (on_model_loaded), then the registries are rebuilt, then on_before_ui.
        script_callbacks.model_loaded_callback(model)
        ui_extra_networks.initialize()
        extra_networks.initialize()
        script_callbacks.before_ui_callback()
        runner = scripts.ScriptRunner()
        scripts.scripts_txt2img = runner
        runner.initialize_scripts(is_img2img=False)
        with gr.Blocks() as demo:
            runner.setup_ui()
        app = FastAPI()
        script_callbacks.app_started_callback(demo, app)
        assert errors.reported == [], errors.reported

        script = runner.script("Concept Sliders")
        probe = runner.script("Test probe")
        yield WebuiEnv(root, sliders_dir, lora_dir, model, snapshot(model), runner, script, probe, demo, app,
                       extension, xyz_module)
        script_callbacks.script_unloaded_callback()
    finally:
        if gradio_patch is not None:
            gradio_patch.undo()
        leftover = sys.modules.get("modules.patches")
        if leftover is not None:  # class patches a failed start left on (Lora's are undone when scripts unload)
            for patched in leftover.originals.values():
                for (owner, name), original in list(patched.items()):
                    setattr(owner, name, original)
                patched.clear()
        purge_modules()
        restore_modules(saved_modules)
        sys.path[:] = saved_path
        torch.set_num_threads(threads)


def latent_scale(latents: torch.Tensor) -> float:
    return float(latents.abs().max())


def close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-4) -> bool:
    return bool((a - b).abs().max() <= rel * max(latent_scale(a), latent_scale(b), 1e-12)) and math.isfinite(
        float(a.abs().max()))
