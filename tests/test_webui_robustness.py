"""The extension inside the webui double when the host (or another extension) does something unusual: sliders
that fail only once applied, other extensions' UNet calls, model switches without ``on_model_loaded``, and the
card editor's default start for prompt tags.

Every generation goes through ``WebuiEnv.run``: afterwards the model is bitwise as before with no hook left, and
no exception reached the webui's error report.
"""

from __future__ import annotations

import json
import logging
import os

import pytest
import torch
from webui_double.conftest_helpers import SEED, assert_model_untouched, make_model, snapshot, webui_env

from lib_sliders.prompt.infotext import HASHES_KEY, SLIDERS_KEY, parse_hashes, parse_sliders

pytestmark = pytest.mark.filterwarnings("ignore:Please use `import python_multipart`:PendingDeprecationWarning")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with webui_env(str(tmp_path_factory.mktemp("webui"))) as environment:
        yield environment


@pytest.fixture(autouse=True)
def fresh(env):
    env.reset()


def gen(env, prompt="a photo of a person", sliders=None, **kwargs):
    return env.run(env.make_p(prompt, sliders, **kwargs))


def differs(a, b, rel=1e-2):
    return float((a - b).abs().max()) > rel * float(b.abs().max())


def params_of(infotext):
    from modules import infotext_utils

    return infotext_utils.parse_generation_parameters(infotext)


def library():
    import sys

    return sys.modules["lib_sliders.webui.script"].library()


def warnings_about(caplog, text):
    return [r for r in caplog.records if r.name == "concept_sliders" and text in r.getMessage()]


# --------------------------------------------------------------------- 1. a failing slider leaves no trace


SMILE = {"sliders": [{"name": "smile", "alpha": "1..2"}]}  # a request (UI row / API): in the "Sliders" field
PROMPTS = ["a photo <slider:age:2>", "a photo"]


def check_made_without_smile(env, res, caplog, what):
    reference = gen(env, PROMPTS, batch_size=2)
    assert torch.equal(res.latents, reference.latents), "the images must be made without the failing slider"
    first, second = (params_of(text) for text in res.infotexts)
    # Image 0 got age from its tag (hash only); smile failed: in neither field. Image 1 got nothing.
    assert SLIDERS_KEY not in first and SLIDERS_KEY not in second
    assert parse_hashes(first[HASHES_KEY]) == {"age": library().short_hash("age")}
    assert HASHES_KEY not in second
    assert first == params_of(reference.infotexts[0])
    # Told under the image and on the console, once.
    lines = [line for line in res.comments.splitlines() if "<slider:smile>" in line]
    assert len(lines) == 1 and what in lines[0], res.comments
    assert len(warnings_about(caplog, "<slider:smile>")) == 1


def test_a_slider_that_doesnt_fit_the_model_is_not_in_the_infotext(env):
    # "misfit" resolves (an SD1 file) when the batch is planned; its shapes only fail when it is applied.
    res = gen(env, "a photo <slider:age:2>", {"sliders": [{"name": "misfit", "alpha": 1}]})
    params = params_of(res.infotexts[0])
    assert SLIDERS_KEY not in params
    assert parse_hashes(params[HASHES_KEY]) == {"age": library().short_hash("age")}
    assert "misfit.safetensors" in res.comments
    assert torch.equal(res.latents, gen(env, "a photo <slider:age:2>").latents)


def test_a_slider_that_cant_be_applied_is_left_out_of_image_and_infotext(env, monkeypatch, caplog):
    from lib_sliders.apply import layer_delta

    smile = {id(m) for m in library().load("smile").unet.values()}
    pack = layer_delta.LayerDelta.pack.__func__

    def failing_pack(cls, layer, modules):
        if any(id(module) in smile for _, module in modules):
            raise RuntimeError("simulated engine failure")
        return pack(cls, layer, modules)

    monkeypatch.setattr(layer_delta.LayerDelta, "pack", classmethod(failing_pack))
    with caplog.at_level(logging.WARNING, logger="concept_sliders"):
        res = gen(env, PROMPTS, SMILE, batch_size=2)
    check_made_without_smile(env, res, caplog, "couldn't be applied")


def test_a_slider_that_fails_while_sampling_is_left_out_of_image_and_infotext(env, monkeypatch, caplog):
    # A shape mismatch found only inside the UNet's forward. Age (image 0's tag, planned first) and smile (the
    # request, second) share every layer: the packed delta raises, the engine must find that smile is the one.
    from lib_sliders.apply import layer_delta

    call = layer_delta.LayerDelta.__call__

    def failing_call(self, x, coef):
        if bool((self.owners == 1).any()):
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (simulated)")
        return call(self, x, coef)

    monkeypatch.setattr(layer_delta.LayerDelta, "__call__", failing_call)
    with caplog.at_level(logging.WARNING, logger="concept_sliders"):
        res = gen(env, PROMPTS, SMILE, batch_size=2)
    check_made_without_smile(env, res, caplog, "failed inside the model")
    # The next job is normal again.
    monkeypatch.undo()
    res = gen(env, PROMPTS, SMILE, batch_size=2)
    assert [parse_sliders(params_of(t)[SLIDERS_KEY])[0] for t in res.infotexts] == [[("smile", 1.0, 0.0)],
                                                                                    [("smile", 2.0, 0.0)]]


def test_a_slider_that_fails_inside_the_text_encoder_is_left_out(env, monkeypatch, caplog):
    from lib_sliders.apply import text_hooks

    def failing_output(self, layer, x, output, alphas):
        raise RuntimeError("simulated failure inside the text encoder")

    monkeypatch.setattr(text_hooks._LinearHook, "_output", failing_output)
    words = {"sliders": [{"name": "words", "alpha": 2}]}
    with caplog.at_level(logging.WARNING, logger="concept_sliders"):
        res = gen(env, PROMPTS, words, batch_size=2)
    reference = gen(env, PROMPTS, batch_size=2)
    assert torch.equal(res.latents, reference.latents), "made without the failing slider"
    lines = [line for line in res.comments.splitlines() if "<slider:words>" in line]
    assert len(lines) == 1 and "failed inside the model" in lines[0], res.comments
    assert all(SLIDERS_KEY not in params_of(text) for text in res.infotexts)
    monkeypatch.undo()
    assert not torch.equal(gen(env, PROMPTS, words, batch_size=2).latents, reference.latents)


# ------------------------------------------------------------------ 4. other extensions' UNet calls


@pytest.mark.parametrize("batch_cond_uncond", [True, False])
def test_extra_unet_calls_of_other_sizes_never_raise(env, caplog, batch_cond_uncond):
    from modules.sd_samplers_cfg_denoiser import catenate_conds

    env.m.shared.opts.batch_cond_uncond = batch_cond_uncond
    prompt = "a photo <slider:age:-2..2>"  # one α per image: a per-row table
    reference = gen(env, prompt, batch_size=2).latents
    calls = []

    def extension(params):
        # Between our callback and the denoiser's own calls: passes of 1 row and of one row more than the batch
        # (SAG, regional prompting, context windows… make such calls).
        rows = params.x.shape[0]
        cond = catenate_conds([params.text_cond, params.text_uncond])
        for size in (1, rows + 1):
            pick = [i % rows for i in range(size)]
            out = params.denoiser.inner_model(params.x[pick], params.sigma[pick],
                                              cond={"c_crossattn": [cond[pick]], "c_concat": [params.image_cond[pick]]})
            calls.append(out.shape[0])

    env.on_cfg_denoiser(extension)
    with caplog.at_level(logging.WARNING, logger="concept_sliders"):
        first = gen(env, prompt, batch_size=2)
        second = gen(env, prompt, batch_size=2)
    assert calls == [1, 5] * 6  # 3 steps, 2 jobs
    assert first.latents.shape == reference.shape and torch.isfinite(first.latents).all()
    assert torch.equal(first.latents, second.latents)
    if batch_cond_uncond:  # the denoiser's own call (all rows at once) still gets each image's α
        assert torch.equal(first.latents, reference)
    assert len(warnings_about(caplog, "rows at row")) == 2, "one warning per job"


# ------------------------------------------------------ 5. a model switch without on_model_loaded


def test_switch_to_an_already_loaded_model_without_the_callback(env):
    from modules import sd_models

    other = make_model(seed=1)
    saved_other = snapshot(other)
    opts = env.m.shared.opts
    opts.sd_checkpoints_limit = 2
    prompt = ["a photo <slider:age:-2>", "a photo <slider:age:2>"]  # one α per image: a per-row table
    env.m.shared.sd_model = other  # both loaded ("Maximum number of checkpoints loaded at the same time": 2)
    on_other = gen(env, prompt, batch_size=2).latents
    env.m.shared.sd_model = env.model
    on_first = gen(env, prompt, batch_size=2, seed=SEED + 2).latents  # the seeds of a job's second batch
    assert differs(on_other, gen(env, prompt, batch_size=2).latents)
    loaded = []
    env.m.script_callbacks.on_model_loaded(loaded.append)
    env.added_callbacks.append(loaded.append)

    def hooked(model):
        return [name for name, m in model.named_modules() if m._forward_hooks or m._forward_pre_hooks]

    # Mid-batch, after the sliders were applied (as the refiner does, in the denoiser): "Using already loaded
    # model". The next batch's reload switches back the same way.
    opts.sd_model_checkpoint = env.model.sd_checkpoint_info.title
    seen = []

    def switch(p):
        if p.iteration == 0:
            with sd_models.SkipWritingToConfig():
                sd_models.reload_model_weights(info=other.sd_checkpoint_info)

    def during_sampling(params):
        current = env.m.shared.sd_model
        old = env.model if current is other else other
        seen.append((current is other, bool(hooked(current)), hooked(old)))

    env.probe.on_process_batch = switch
    env.on_cfg_denoiser(during_sampling)
    res = gen(env, prompt * 2, batch_size=2, n_iter=2)
    assert loaded == [], "the switches must not fire on_model_loaded (that is the point)"
    assert [s[0] for s in seen] == [True] * 3 + [False] * 3
    assert all(has_hooks and not old_hooks for _, has_hooks, old_hooks in seen), seen
    assert torch.equal(res.latents[:2], on_other) and torch.equal(res.latents[2:], on_first)
    assert env.m.shared.sd_model is env.model
    assert_model_untouched(other, saved_other)

    # Between jobs (process_images reloads the settings' checkpoint at its start), also without the callback.
    env.probe.on_process_batch = None
    opts.sd_model_checkpoint = other.sd_checkpoint_info.title
    assert torch.equal(gen(env, prompt, batch_size=2).latents, on_other)
    assert env.m.shared.sd_model is other and loaded == []
    assert_model_untouched(other, saved_other)


# ----------------------------------------------------------------- 7. the card editor's default start


def test_card_editor_default_start_applies_to_tags(env):
    from lib_sliders.webui.user_metadata import DEFAULT_START_KEY, user_metadata_path

    path = user_metadata_path(library().get("age").path)
    plain = gen(env, "a photo <slider:age:2>", steps=4)
    gated = gen(env, "a photo <slider:age:2:start=0.5>", steps=4)
    assert differs(gated.latents, plain.latents)
    with open(path, "w", encoding="utf8") as file:
        json.dump({"description": "", DEFAULT_START_KEY: 0.5}, file)
    try:
        # A tag without start= starts where the user's card says…
        assert torch.equal(gen(env, "a photo <slider:age:2>", steps=4).latents, gated.latents)
        # …an explicit start in the tag wins…
        assert torch.equal(gen(env, "a photo <slider:age:2:start=0>", steps=4).latents, plain.latents)
        # …and a request without a start (API) gets the card's too, shown in the infotext.
        res = gen(env, "a photo", {"sliders": [{"name": "age", "alpha": 2}]}, steps=4)
        assert torch.equal(res.latents, gated.latents)
        assert parse_sliders(params_of(res.infotexts[0])[SLIDERS_KEY])[0] == [("age", 2.0, 0.5)]
    finally:
        os.remove(path)
    assert torch.equal(gen(env, "a photo <slider:age:2>", steps=4, seed=SEED).latents, plain.latents)
