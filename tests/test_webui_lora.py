"""The extension beside the built-in Lora (its double: ``tests/webui_double/extensions-builtin/Lora``).

The Lora merges into the weights and puts them back lazily: after a generation with ``<lora:…>`` the weights
still hold it, until each layer's next forward with another set of networks wanted. So:

* training must start from the bare model and leave no Lora behind (it forces Lora's restore first);
* merging sliders must step aside whenever a Lora may write the weights during the job — also when only the
  hires pass's prompt names one (``p.hr_extra_network_data``), else Lora's backups capture our merged deltas.
"""

from __future__ import annotations

import os
import sys

import pytest
import torch
from safetensors.torch import save_file
from webui_double.conftest_helpers import assert_model_untouched, snapshot, webui_env

from lib_sliders.files.slider_file import load_slider

pytestmark = [
    pytest.mark.filterwarnings("ignore:Please use `import python_multipart`:PendingDeprecationWarning"),
]

HIRES = {"enable_hr": True, "hr_scale": 2.0, "hr_second_pass_steps": 2, "denoising_strength": 0.6}


def write_lora(env, name="style"):
    """A kohya-style Lora (compvis ``lora_unet_…`` names) on every UNet layer of the ``age`` slider, and on one
    text-encoder layer: where the Lora and a merged slider would write the same weights."""
    unet = env.model.model.diffusion_model
    generator = torch.Generator().manual_seed(11)
    tensors = {}
    layers = {f"lora_unet_{path.replace('.', '_')}": unet.get_submodule(path)
              for path in load_slider(os.path.join(env.sliders_dir, "age.safetensors")).unet}
    encoder = env.model.cond_stage_model.wrapped.transformer.text_model
    layers["lora_te_text_model_encoder_layers_0_self_attn_q_proj"] = encoder.encoder.layers[0].self_attn.q_proj
    for key, layer in layers.items():
        if isinstance(layer, torch.nn.Conv2d):
            down = torch.randn(2, layer.in_channels, *layer.kernel_size, generator=generator)
            up = torch.randn(layer.out_channels, 2, 1, 1, generator=generator)
        else:
            down = torch.randn(2, layer.in_features, generator=generator)
            up = torch.randn(layer.out_features, 2, generator=generator)
        tensors[f"{key}.lora_down.weight"] = down * 0.3
        tensors[f"{key}.lora_up.weight"] = up * 0.3
        tensors[f"{key}.alpha"] = torch.tensor(2.0)
    save_file(tensors, os.path.join(env.lora_dir, f"{name}.safetensors"), metadata={"ss_output_name": name})


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with webui_env(str(tmp_path_factory.mktemp("webui")), lora=True) as environment:
        write_lora(environment)
        yield environment


@pytest.fixture(autouse=True)
def fresh(env):
    env.reset()
    yield
    # No Lora wanted any more: a plain generation lets every layer put its backup back (the webui's own way),
    # and checks the model is what it was.
    env.run(env.make_p())


def run(env, p):
    """``process_images`` without ``WebuiEnv.run``'s check: after a Lora the weights hold it (until the next forward)."""
    m = env.m
    env.probe.samples.clear()
    m.shared.state.begin("txt2img")
    try:
        m.processing.process_images(p)
    finally:
        m.shared.state.end()
    assert m.errors.reported == [], "\n".join(m.errors.reported)
    return torch.cat(env.probe.samples)


def changed(model, saved) -> list[str]:
    return [k for k, v in model.state_dict().items() if not torch.equal(v, saved[k])]


def lora_names(model) -> list[str]:
    return [name for name, m in model.named_modules() if getattr(m, "network_current_names", ())]


def test_the_double_merges_lazily_as_the_webui_does(env):
    networks = sys.modules["networks"]
    plain = env.run(env.make_p()).latents
    styled = run(env, env.make_p("a photo of a person <lora:style:1>"))
    assert not torch.equal(styled, plain)
    assert [n.name for n in networks.loaded_networks] == ["style"]  # survives the generation…
    assert changed(env.model, env.saved) and lora_names(env.model)  # …and so do the merged weights
    # The next generation without it: each layer restores its backup at its forward.
    assert torch.equal(env.run(env.make_p()).latents, plain)
    assert not lora_names(env.model)


def test_training_after_a_lora_generation_sees_the_bare_model_and_leaves_no_lora(env, monkeypatch):
    from modules import call_queue, shared

    import lib_sliders.webui.train_jobs as train_jobs
    from lib_sliders.webui.train_jobs import TrainOptions

    styled = run(env, env.make_p("a photo of a person <lora:style:1>"))
    assert changed(env.model, env.saved)  # the Lora is still in the weights

    seen = []

    class Recording(train_jobs.SliderTrainer):
        def __init__(self, backend, config, **kwargs):
            # Merged sampling calls, as the trainer does by default on a GPU: it backs weights up and restores them.
            super().__init__(backend, config, merge_for_sampling=True, **kwargs)

        def train(self, resume_from=None):
            seen.append(snapshot(env.model))
            return super().train(resume_from)

    monkeypatch.setattr(train_jobs, "SliderTrainer", Recording)
    jobs = sys.modules["lib_sliders.webui.script"].training_jobs
    config = {"name": "after_lora", "prompts": [{"target": "person", "positive": "person, very old",
                                                 "negative": "person, very young", "guidance": 2.0}],
              "iterations": 2, "resolution": 64, "max_denoising_steps": 4, "rank": 2, "lr": 1e-2, "seed": 1,
              "alpha_range": [-3.0, 3.0], "estimate_start": False}
    job = jobs.create(config, TrainOptions(preview=False))
    with call_queue.queue_lock:
        shared.state.begin("train")
        try:
            jobs.run(job)
        finally:
            shared.state.end()
    assert job.state == "done", job.error

    assert len(seen) == 1
    leaked = changed_from(seen[0], env.saved)
    assert not leaked, f"the trainer saw the Lora in {len(leaked)} weights: {leaked[:3]}"
    assert_model_untouched(env.model, env.saved)  # bitwise the originals, no hooks
    assert not lora_names(env.model)  # and Lora knows it has nothing merged
    # The Lora still works afterwards, exactly as before.
    assert torch.equal(run(env, env.make_p("a photo of a person <lora:style:1>")), styled)


def changed_from(state, saved) -> list[str]:
    return [k for k, v in state.items() if not torch.equal(v, saved[k])]


@pytest.mark.parametrize("backups", ["none yet", "kept from an earlier generation"])
def test_merging_steps_aside_when_only_the_hires_pass_names_a_lora(env, backups):
    networks = sys.modules["networks"]
    settings = sys.modules["lib_sliders.webui.settings"]
    unet = env.model.model.diffusion_model
    targets = list(load_slider(os.path.join(env.sliders_dir, "age.safetensors")).unet)

    def lora_state():
        if backups == "none yet":  # as after a checkpoint load (its load_state_dict drops them)
            for module in env.model.modules():
                if hasattr(module, "network_weights_backup"):
                    networks.network_reset_cached_weight(module)
        else:  # Lora keeps a layer's backup once taken
            run(env, env.make_p("a photo of a person <lora:style:1>"))
            env.run(env.make_p())
        # Nothing that the first pass could see says a Lora is coming.
        assert not networks.loaded_networks and not lora_names(env.model)

    def generate():
        # The slider's tag comes first in the hires prompt: it is activated before the Lora loads its networks.
        return run(env, env.make_p("a photo of a person <slider:age:2>",
                                   hr_prompt="a photo of a person <slider:age:2> <lora:style:1>", **HIRES))

    lora_state()
    hooked = generate()
    env.run(env.make_p())  # the Lora off the weights again
    env.m.shared.opts.sliders_apply_mode = next(k for k, v in settings.APPLY_MODES.items() if v == "auto")
    lora_state()
    assert torch.equal(generate(), hooked), "the hires pass didn't get the slider and the Lora as with hooks"
    # Lora backed the weights up at its first forward in the hires pass: they must be the originals, not ours.
    for path in targets:
        backup = unet.get_submodule(path).network_weights_backup
        original = env.saved[f"model.diffusion_model.{path}.weight"]
        assert backup is not None and torch.equal(backup, original), f"Lora's backup of {path} holds a slider delta"
