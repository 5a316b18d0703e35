"""Sliders on SD WebUI Forge (and its forks): generation (UNet and text-encoder parts) works as on A1111; training
(``test_webui_forge_training.py``) is refused on the forks without Forge's own backend.

The Forge flavour of the double (``webui_double/forge_double.py``): ``modules_forge`` importable while the webui
double starts, ``shared.sd_model`` a ``ForgeDiffusionEngine``-shaped model (UNet and CLIP only under
``forge_objects``, built with ``ForgeOperations``-like layers, no ``model.diffusion_model``), ``sd_hijack`` without
its optimisation switches, and Forge's sampling function (its own row layout, ``cond_or_uncond``, memory-driven
chunks). Every run checks that afterwards Forge's UNet and CLIP are bitwise what they were and carry no hook, and
that no patcher kept anything.
"""

from __future__ import annotations

import json
import sys

import pytest
import torch
from webui_double import forge_double
from webui_double.conftest_helpers import SEED, assert_model_untouched, close, snapshot
from webui_double.forge_double import make_forge_model

from lib_sliders.prompt.infotext import HASHES_KEY, SLIDERS_KEY, parse_sliders

pytestmark = pytest.mark.filterwarnings("ignore:Please use `import python_multipart`:PendingDeprecationWarning")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with forge_double.forge_webui_env(str(tmp_path_factory.mktemp("webui"))) as environment:
        yield environment


@pytest.fixture(autouse=True)
def fresh(env, monkeypatch):
    from modules import shared

    env.reset()
    shared.sd_model = env.forge_model
    monkeypatch.setattr(forge_double, "FREE_MEMORY_ROWS", None)
    yield
    shared.sd_model = env.forge_model


def run(env, p, **kwargs):
    res = env.run(p, **kwargs)
    model = env.forge_model
    assert_model_untouched(model.forge_objects.unet.model, env.forge_saved)
    assert_model_untouched(model.forge_objects.clip.cond_stage_model, env.forge_clip_saved)
    for objects in (model.forge_objects, model.forge_objects_original, model.forge_objects_after_applying_lora):
        assert objects.unet.model_options == {"transformer_options": {}} and objects.unet.lora_patches == {}
    assert sys.modules["lib_sliders.webui.script"].runtime.active is False
    return res


def gen(env, prompt="a photo of a person", sliders=None, **kwargs):
    return run(env, env.make_p(prompt, sliders, **kwargs))


def differs(a, b, rel=1e-2):
    return float((a - b).abs().max()) > rel * float(b.abs().max())


def params_of(infotext):
    from modules import infotext_utils

    return infotext_utils.parse_generation_parameters(infotext)


def forge_lines(comments):
    return [line for line in comments.splitlines() if "Forge" in line]


def unet_calls(env, monkeypatch):
    """The rows and ``cond_or_uncond`` of every call of Forge's UNet."""
    calls = []
    unet = env.forge_model.forge_objects.unet.model.diffusion_model
    forward = unet.forward

    def counted(x, *args, transformer_options=None, **kwargs):
        calls.append((x.shape[0], list((transformer_options or {}).get("cond_or_uncond", []))))
        return forward(x, *args, transformer_options=transformer_options, **kwargs)

    monkeypatch.setattr(unet, "forward", counted)
    return calls


# --------------------------------------------------------------------------------------------- generation


def test_the_forge_unet_is_what_engines_would_miss(env):
    """Forge's Linear layers are not torch.nn.Linear: the engine alone refuses them; the Forge view shows them."""
    from lib_sliders.apply.engine import SliderEngine
    from lib_sliders.errors import SliderFileError
    from lib_sliders.webui.forge_runtime import ForgeModuleView

    library = sys.modules["lib_sliders.webui.script"].library()
    network = library.load("age")
    unet = env.forge_model.forge_objects.unet.model.diffusion_model
    path = next(p for p in network.unet if p.endswith("to_q"))
    assert not isinstance(unet.get_submodule(path), torch.nn.Linear)
    with pytest.raises(SliderFileError, match="not a Linear or Conv2d"):
        SliderEngine(unet).validate(network)
    view = ForgeModuleView(unet)
    SliderEngine(view).validate(network)
    assert isinstance(view.get_submodule(path), torch.nn.Linear)
    assert view.get_submodule(path).weight is unet.get_submodule(path).weight


def test_a_quantized_layer_is_refused_by_name(env):
    from lib_sliders.errors import SliderError
    from lib_sliders.webui.forge_runtime import ForgeModuleView

    class Params4bitLinear(torch.nn.Module):  # what nf4 storage holds: packed bytes, not [out, in] floats
        def __init__(self):
            super().__init__()
            self.in_features, self.out_features = 8, 4
            self.weight = torch.nn.Parameter(torch.zeros(16, 1, dtype=torch.uint8), requires_grad=False)

    unet = torch.nn.Module()
    unet.to_q = Params4bitLinear()
    with pytest.raises(SliderError, match="to_q is stored quantized"):
        ForgeModuleView(unet).get_submodule("to_q")


def test_alpha_zero_is_bitwise_no_slider(env):
    base = gen(env).latents
    assert torch.equal(gen(env, "a photo of a person <slider:age:0>").latents, base)
    assert torch.equal(gen(env, sliders={"sliders": [{"name": "age", "alpha": 0.0}]}).latents, base)
    plain = gen(env, "a photo of a person", batch_size=2).latents
    batch = gen(env, ["a photo of a person", "a photo of a person <slider:age:2>"], batch_size=2).latents
    assert torch.equal(batch[0], plain[0]) and differs(batch[1:], plain[1:])


def test_tag_is_applied_and_written_to_the_infotext(env):
    plain = gen(env)
    res = gen(env, "a photo of a person <slider:age:2>")
    assert differs(res.latents, plain.latents)
    params = params_of(res.infotexts[0])
    # The tag stays in the prompt (its record, as on A1111), with the slider's hash beside it.
    assert params["Prompt"] == "a photo of a person <slider:age:2>" and SLIDERS_KEY not in params
    library = sys.modules["lib_sliders.webui.script"].library()
    assert params[HASHES_KEY] == f"age: {library.short_hash('age')}"
    assert forge_lines(res.comments) == []


def test_accordion_args_do_what_the_tag_does(env):
    tag = gen(env, "a photo of a person <slider:age:1.5:start=0.4>").latents
    row = gen(env, sliders={"enabled": True, "sliders": [{"name": "age", "alpha": 1.5, "start": 0.4}]})
    assert torch.equal(row.latents, tag)
    assert parse_sliders(params_of(row.infotexts[0])[SLIDERS_KEY])[0] == [("age", 1.5, 0.4)]


@pytest.mark.parametrize("free_rows", [None, 3, 2], ids=["one-call", "call-per-chunk", "tight"])
@pytest.mark.parametrize("prompt", ["a photo of a person", "a photo of a person AND an old man"],
                         ids=["plain", "and"])
def test_strip_equals_singles(env, monkeypatch, free_rows, prompt):
    """Each image gets its own α whatever chunks Forge's sampling function puts in a UNet call."""
    forge_double.FREE_MEMORY_ROWS = free_rows
    calls = unet_calls(env, monkeypatch)
    batch = gen(env, prompt + " <slider:age:-2..2>", batch_size=3).latents
    chunks = 3 if prompt.endswith("man") else 2
    if free_rows is None:
        assert calls[0] == (3 * chunks, [1] + [0] * (chunks - 1)), calls[:2]  # uncond chunk first, as in Forge
    else:
        assert {rows for rows, _ in calls} == {3}, calls[:4]
    monkeypatch.undo()
    forge_double.FREE_MEMORY_ROWS = free_rows
    for i, alpha in enumerate((-2, 0, 2)):
        alone = gen(env, f"{prompt} <slider:age:{alpha}>", seed=SEED + i).latents
        assert close(batch[i:i + 1], alone), (i, float((batch[i:i + 1] - alone).abs().max()))
    for i in (0, 2):  # and the slider did act
        assert differs(batch[i:i + 1], gen(env, prompt, seed=SEED + i).latents), i


def test_cfg_one_drops_the_uncond_rows_and_keeps_per_image_alpha(env, monkeypatch):
    calls = unet_calls(env, monkeypatch)
    batch = gen(env, "a photo of a person <slider:age:-2..2>", batch_size=2, cfg_scale=1.0).latents
    assert calls[0] == (2, [0])
    monkeypatch.undo()
    for i, alpha in enumerate((-2, 2)):
        alone = gen(env, f"a photo of a person <slider:age:{alpha}>", seed=SEED + i, cfg_scale=1.0).latents
        assert close(batch[i:i + 1], alone)
        assert differs(alone, gen(env, seed=SEED + i, cfg_scale=1.0).latents)


def test_different_tags_per_image(env):
    prompts = ["a photo <slider:age:2>", "a photo", "a photo <slider:smile:-1.5> <slider:age:1>"]
    batch = gen(env, prompts, batch_size=3).latents
    for i, prompt in enumerate(prompts):
        alone = gen(env, prompt, seed=SEED + i).latents
        assert close(batch[i:i + 1], alone), (i, float((batch[i:i + 1] - alone).abs().max()))
    assert differs(batch[0:1], gen(env, "a photo", seed=SEED).latents)


def test_spread_over_several_batches(env):
    res = gen(env, sliders={"sliders": [{"name": "age", "alpha": "-2..2"}]}, n_iter=2)
    for i, alpha in enumerate((-2, 2)):
        assert close(res.latents[i:i + 1], gen(env, f"a photo of a person <slider:age:{alpha}>", seed=SEED + i).latents)
    assert [parse_sliders(params_of(t)[SLIDERS_KEY])[0] for t in res.infotexts] == [
        [("age", -2.0, 0.0)], [("age", 2.0, 0.0)]]


def steps_seen(env, prompt):
    seen = []
    env.on_cfg_denoiser(lambda params: seen.append(params.x.detach().clone()))
    res = gen(env, prompt, steps=4)
    env.m.script_callbacks.remove_callbacks_for_function(env.added_callbacks.pop())
    return seen, res.latents


def test_start_gates_the_first_steps(env):
    plain, plain_out = steps_seen(env, "a photo of a person")
    gated, gated_out = steps_seen(env, "a photo of a person <slider:age:2:start=0.5>")
    assert len(plain) == len(gated) == 4
    for step in range(3):  # the latents going into steps 0, 1 and 2: steps 0 and 1 ran without the slider
        assert torch.equal(plain[step], gated[step]), step
    assert differs(gated[3], plain[3]), "step 2 (the first of the second half) must already use the slider"
    assert not torch.equal(gated_out, plain_out)


def test_hires_pass_keeps_per_image_alpha(env):
    hires = {"enable_hr": True, "hr_scale": 2.0, "hr_second_pass_steps": 2, "denoising_strength": 0.6}
    batch = gen(env, "a photo of a person <slider:age:-2..2>", batch_size=2, **hires).latents
    assert batch.shape[-1] == 16
    for i, alpha in enumerate((-2, 2)):
        alone = gen(env, f"a photo of a person <slider:age:{alpha}>", seed=SEED + i, **hires).latents
        assert close(batch[i:i + 1], alone), i
    assert differs(batch[1:2], gen(env, seed=SEED + 1, **hires).latents)


def test_another_extensions_unet_wrapper_keeps_the_sliders(env):
    """A built-in's patch on the patcher (its own clone with a model_function_wrapper, as FreeU and others do)."""
    reference = gen(env, "a photo of a person <slider:age:-2..2>", batch_size=2).latents
    model = env.forge_model
    original = model.forge_objects_after_applying_lora
    seen = []

    def wrapper(apply_model, args):
        seen.append(args["cond_or_uncond"])
        return apply_model(args["input"], args["timestep"], **args["c"])

    unet = original.unet.clone()
    unet.set_model_unet_function_wrapper(wrapper)
    model.forge_objects_after_applying_lora = original.shallow_copy()
    model.forge_objects_after_applying_lora.unet = unet
    try:
        res = env.run(env.make_p("a photo of a person <slider:age:-2..2>", batch_size=2))
    finally:
        model.forge_objects_after_applying_lora = original
    assert seen and torch.equal(res.latents, reference)
    assert differs(reference, gen(env, batch_size=2).latents)
    assert_model_untouched(model.forge_objects.unet.model, env.forge_saved)


def test_a_job_our_script_doesnt_see_gets_the_tags_too(env):
    # e.g. another extension's own process_images without scripts: only the slider network's activate runs.
    p = env.make_p("a photo of a person <slider:age:2>")
    p.scripts = None
    res = run(env, p)
    reference = env.make_p("a photo of a person")
    reference.scripts = None
    plain = run(env, reference)
    assert [list(i.getdata()) for i in res.images] != [list(i.getdata()) for i in plain.images]


# ------------------------------------------------------------------ the merge setting: Forge's own patches

MERGE = "Merge one-α sliders when no Lora is active (fastest)"


def weights_at_each_call(env, monkeypatch, path):
    """``(weight, hooked)`` of the UNet layer ``path`` at every UNet call: its weight then, and whether it had hooks."""
    seen = []
    unet = env.forge_model.forge_objects.unet.model.diffusion_model
    forward = unet.forward
    layer = unet.get_submodule(path)

    def watched(*args, **kwargs):
        seen.append((layer.weight.detach().clone(), bool(layer._forward_hooks)))
        return forward(*args, **kwargs)

    monkeypatch.setattr(unet, "forward", watched)
    return seen


def first_unet_path(name):
    return next(iter(sys.modules["lib_sliders.webui.script"].library().load(name).unet))


def test_merge_setting_patches_one_alpha_sliders_the_forge_way(env, monkeypatch):
    """Merged by Forge's LoraLoader from add_patches on a patcher clone: no hooks, the same image as hooks, and
    afterwards the weights bitwise Forge's (``run`` checks) with no patch left on any patcher."""
    from modules import shared

    prompt = "a photo of a person <slider:age:2> <slider:smile:-1>"
    hooked = gen(env, prompt).latents
    shared.opts.sliders_apply_mode = MERGE
    path = first_unet_path("age")
    seen = weights_at_each_call(env, monkeypatch, path)
    loader = env.forge_model.forge_objects.unet.model.lora_loader
    refreshes = loader.refreshes
    res = gen(env, prompt)
    saved = env.forge_saved[f"diffusion_model.{path}.weight"]
    assert seen and all(not torch.equal(weight, saved) and not hooks for weight, hooks in seen)
    assert close(res.latents, hooked) and differs(res.latents, gen(env).latents)
    assert loader.refreshes == refreshes + 2  # merged for the job, restored at its end
    assert loader.loaded_hash == str([])
    params = params_of(res.infotexts[0])
    assert params["Prompt"] == prompt and set(params[HASHES_KEY].split(", ")) >= {
        f"age: {sys.modules['lib_sliders.webui.script'].library().short_hash('age')}"}


def test_merge_setting_keeps_per_image_alpha_and_gates_on_hooks(env, monkeypatch):
    from modules import shared

    strip = "a photo of a person <slider:age:-2..2> <slider:smile:1.5>"
    gated = "a photo of a person <slider:age:2:start=0.5>"
    hooked_strip = gen(env, strip, batch_size=2).latents
    hooked_gated = gen(env, gated).latents
    shared.opts.sliders_apply_mode = MERGE
    seen = weights_at_each_call(env, monkeypatch, first_unet_path("smile"))
    res = gen(env, strip, batch_size=2).latents
    assert seen and all(hooks for _, hooks in seen), "age's strip stays on hooks"
    saved = env.forge_saved[f"diffusion_model.{first_unet_path('smile')}.weight"]
    assert all(not torch.equal(weight, saved) for weight, _ in seen), "smile's one α is merged"
    assert close(res, hooked_strip)
    seen.clear()
    assert torch.equal(gen(env, gated).latents, hooked_gated), "a step gate needs hooks: the very same image"
    assert seen and all(hooks for _, hooks in seen)


def test_merge_setting_alpha_zero_merges_nothing(env):
    from modules import shared

    base = gen(env).latents
    shared.opts.sliders_apply_mode = MERGE
    loader = env.forge_model.forge_objects.unet.model.lora_loader
    refreshes = loader.refreshes
    assert torch.equal(gen(env, "a photo of a person <slider:age:0>").latents, base)
    assert loader.refreshes == refreshes


def test_merge_setting_hires_pass(env):
    from modules import shared

    hires = {"enable_hr": True, "hr_scale": 2.0, "hr_second_pass_steps": 2, "denoising_strength": 0.6}
    hooked = gen(env, "a photo of a person <slider:age:2>", **hires).latents
    shared.opts.sliders_apply_mode = MERGE
    assert close(gen(env, "a photo of a person <slider:age:2>", **hires).latents, hooked)


def test_merge_setting_beside_forges_own_lora(env):
    """A LoRA Forge merged (a patch set on forge_objects_after_applying_lora): the slider merges beside it, and
    after the job the weights are the LoRA-merged ones again, bitwise."""
    from modules import shared
    from webui_double.forge_double import load_model_gpu

    model = env.forge_model
    original = model.forge_objects_after_applying_lora
    path = first_unet_path("smile")
    weight = env.forge_saved[f"diffusion_model.{path}.weight"]
    with_lora = forge_double.with_lora_patch(original, path, weight, scale=0.05)
    model.forge_objects_after_applying_lora = with_lora
    layer = model.forge_objects.unet.model.diffusion_model.get_submodule(path)
    try:
        plain = env.run(env.make_p("a photo of a person")).latents
        lora_weight = layer.weight.detach().clone()
        assert not torch.equal(lora_weight, weight)
        hooked = env.run(env.make_p("a photo of a person <slider:age:2>")).latents
        shared.opts.sliders_apply_mode = MERGE
        merged = env.run(env.make_p("a photo of a person <slider:age:2>")).latents
        assert close(merged, hooked) and differs(merged, plain)
        assert torch.equal(layer.weight, lora_weight), "the LoRA's weights are back after the job"
        assert model.forge_objects.unet.lora_patches.keys() == with_lora.unet.lora_patches.keys()
        assert torch.equal(env.run(env.make_p("a photo of a person")).latents, plain)
    finally:
        model.forge_objects_after_applying_lora = original
        model.forge_objects = original.shallow_copy()
        load_model_gpu(original.unet)
    assert_model_untouched(model.forge_objects.unet.model, env.forge_saved)


def test_text_encoder_deltas_match_the_a1111_engine(env):
    """Forge's CLIP (ForgeOperations Linears, under inference mode) gets the same delta as a torch CLIP."""
    from lib_sliders.apply.engine import ActiveSlider, SliderEngine
    from lib_sliders.webui.forge_runtime import ForgeModuleView

    library = sys.modules["lib_sliders.webui.script"].library()
    network = library.load("words")
    toy_encoder = env.model.cond_stage_model
    forge_encoder = env.forge_model.forge_objects.clip.cond_stage_model.clip_l
    prompts = ["a photo of a person", "a cat"]
    plain = env.forge_model.get_learned_conditioning(prompts)
    assert torch.equal(plain, toy_encoder(prompts))
    with pytest.raises(Exception, match="no layer"):  # the engine alone doesn't see Forge's Linears
        SliderEngine(torch.nn.Linear(1, 1), [forge_encoder]).validate(network)
    reference = SliderEngine(torch.nn.Linear(1, 1), [toy_encoder], text_mode="hooks")
    forge = SliderEngine(torch.nn.Linear(1, 1), [ForgeModuleView(forge_encoder)], text_mode="hooks")
    try:
        for engine in (reference, forge):
            engine.validate(network)
            engine.apply([ActiveSlider(network, alpha=2.0)])
        expected = toy_encoder(prompts)
        got = env.forge_model.get_learned_conditioning(prompts)
    finally:
        reference.clear()
        forge.clear()
    assert differs(expected, plain) and torch.allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert_model_untouched(env.forge_model.forge_objects.clip.cond_stage_model, env.forge_clip_saved)


def test_a_slider_first_read_inside_a_forge_job_applies(env):
    """Forge runs a job's batches under ``torch.inference_mode()``: a slider file first read by ``activate`` is read
    there (on a real Forge the factor cache then met inference tensors, with no version counter, and every such job
    lost its sliders). The library now reads files out of inference mode, so the cached slider can train later."""
    base = gen(env).latents
    library = sys.modules["lib_sliders.webui.script"].library()
    with library._lock:
        library._networks.clear()
    res = gen(env, "a photo of a person <slider:age:2> <slider:words:2>")
    assert library.load("age").unet and not next(iter(library.load("age").unet.values())).down.is_inference()
    assert differs(res.latents, base) and "couldn't be applied" not in res.comments, res.comments
    again = gen(env, "a photo of a person <slider:age:2> <slider:words:2>")  # the packed factors, from the cache
    assert torch.equal(again.latents, res.latents)


def test_text_encoders_are_found_in_forges_joint_text_encoder():
    """``cond_stage_model`` is Forge's ``JointTextEncoder``, a plain Module (no ``in``/``[]``): found on a real
    Forge, where ``encoders[key]`` failed every slider job; te1/te2 in slider-file order whatever the child order."""
    from lib_sliders.webui.forge_runtime import forge_text_encoders

    clip_l, clip_g = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    joint = forge_double.JointTextEncoder({"clip_g": clip_g, "clip_l": clip_l})
    assert not isinstance(joint, torch.nn.ModuleDict)

    class Model:
        forge_objects = forge_double.ForgeObjects(None, forge_double.CLIP({}), None, None)

    Model.forge_objects.clip.cond_stage_model = joint
    assert forge_text_encoders(Model()) == [clip_l, clip_g]


def test_text_encoder_slider_from_tag_and_from_args(env):
    base = gen(env).latents
    tagged = gen(env, "a photo of a person <slider:words:2>").latents
    assert differs(tagged, base)
    # Same prompts and no tag: the webui's cond cache must not hand back the conds made without the slider…
    assert torch.equal(gen(env, sliders={"sliders": [{"name": "words", "alpha": 2}]}).latents, tagged)
    # …nor the next plain job the conds made with it.
    assert torch.equal(gen(env).latents, base)


def test_text_encoder_spread_over_batches(env):
    res = gen(env, "a photo <slider:words:-2..2>", n_iter=2)
    for i, alpha in enumerate((-2, 2)):
        assert torch.equal(res.latents[i:i + 1], gen(env, f"a photo <slider:words:{alpha}>", seed=SEED + i).latents)
        assert differs(res.latents[i:i + 1], gen(env, "a photo", seed=SEED + i).latents)


def test_text_encoder_tag_on_one_image_leaves_the_others_alone(env):
    batch = gen(env, ["a photo <slider:words:2>", "a cat"], batch_size=2)
    assert close(batch.latents[1:2], gen(env, "a cat", seed=SEED + 1).latents), "image 1 has no slider"
    assert close(batch.latents[0:1], gen(env, "a photo <slider:words:2>").latents) or "words" in batch.comments


def test_a_slider_for_another_model_is_refused_alone(env):
    reference = gen(env, "a photo of a person <slider:age:2>").latents
    res = gen(env, "a photo of a person <slider:age:2> <slider:misfit:1>")
    assert torch.equal(res.latents, reference)
    assert any("misfit" in line for line in res.comments.splitlines()), res.comments


def test_sliders_follow_a_switch_to_another_forge_model(env):
    """Another checkpoint: Forge makes a new engine object (``forge_model_reload``); the sliders go with it and the
    old model keeps nothing."""
    from modules import shared
    from webui_double.conftest_helpers import make_model

    other = make_forge_model(make_model(seed=1))
    saved_other = snapshot(other.forge_objects.unet.model)
    gen(env, "a photo of a person <slider:age:2>")  # the engine sits on the first model now
    shared.sd_model = other
    plain = env.run(env.make_p("a photo of a person")).latents
    res = env.run(env.make_p("a photo of a person <slider:age:2>"))
    assert differs(res.latents, plain)
    assert_model_untouched(other.forge_objects.unet.model, saved_other)
    assert_model_untouched(env.forge_model.forge_objects.unet.model, env.forge_saved)


def run_cells(env, p, label, values):
    cells = []
    for value in values:
        env.probe.samples.clear()
        [cell] = env.xyz_module.run_axis(p, next(a for a in env.xyz_module.axis_options if a.label == label), [value])
        cell.latents = torch.cat(env.probe.samples)
        cells.append(cell)
    return cells


def test_alpha_axis_equals_the_tag(env):
    p = env.make_p()
    cells = run_cells(env, p, "[Sliders] α: age", ["-2", "2"])
    for cell, alpha in zip(cells, (-2.0, 2.0), strict=True):
        assert torch.equal(cell.latents, gen(env, f"a photo of a person <slider:age:{alpha:g}>").latents)
        assert parse_sliders(params_of(cell.infotexts[0])[SLIDERS_KEY])[0] == [("age", alpha, 0.0)]
    assert_model_untouched(env.forge_model.forge_objects.unet.model, env.forge_saved)


# ----------------------------------------------------------------------------------------------- training


def _route(app, method, path):
    return next(r.endpoint for r in app.routes if getattr(r, "path", None) == path and method in r.methods)


TRAIN = {"name": "forge_age", "prompts": [{"target": "person", "positive": "person, old", "negative": "person, young"}],
         "iterations": 2, "resolution": 64, "max_denoising_steps": 4, "preview": False}


@pytest.fixture
def classic(monkeypatch):
    """Forge Classic / reForge: ``modules_forge`` but not Forge's own ``backend`` (training is refused there)."""
    from lib_sliders.webui import host_kind

    monkeypatch.setattr(host_kind, "forge_backend_installed", lambda: False)


def test_training_is_refused_by_the_api_before_any_job_starts(env, classic):
    jobs = sys.modules["lib_sliders.webui.script"].training_jobs
    count = len(jobs.jobs())
    response = _route(env.app, "POST", "/sliders/v1/train")(body=dict(TRAIN))
    assert response.status_code == 422
    (problem,) = json.loads(response.body)["detail"]
    assert problem["field"] == "webui" and "SD WebUI Forge" in problem["problem"]
    assert "training sliders needs SD WebUI Forge's own backend" in problem["problem"]
    assert len(jobs.jobs()) == count


def test_preparing_the_model_refuses_too(env, classic):
    # The backstop behind the submit check: a job queued before would fail with the reason, not a traceback.
    from lib_sliders.errors import SliderError

    jobs = sys.modules["lib_sliders.webui.script"].training_jobs
    try:
        with pytest.raises(SliderError, match="needs SD WebUI Forge's own backend"):
            jobs.host.prepare()
    finally:
        jobs.host.restore()


@pytest.fixture
def train_tab(env, classic):
    import gradio as gr
    from modules import errors, script_callbacks

    tabs = script_callbacks.ui_tabs_callback()
    assert errors.reported == [], errors.reported
    with gr.Blocks() as demo:
        for interface, label, ifid in tabs:
            with gr.TabItem(label, id=ifid, elem_id=f"tab_{ifid}"):
                interface.render()
    return demo


def _block(demo, elem_id):
    return next((b for b in demo.blocks.values() if getattr(b, "elem_id", None) == elem_id), None)


def test_train_tab_shows_the_note_and_start_refuses(env, train_tab):
    note = _block(train_tab, "sliders_train_host_note")
    assert note is not None and "Training sliders needs SD WebUI Forge" in note.value and "own backend" in note.value
    start = _block(train_tab, "sliders_train_start")
    (fn,) = [fn for fn, dep in zip(train_tab.fns, train_tab.dependencies, strict=True)
             if start._id in dep["targets"] and dep["trigger"] == "click" and fn.fn is not None]
    values = []
    for block in fn.inputs:
        name = (getattr(block, "elem_id", None) or "").removeprefix("sliders_train_")
        values.append({"task_id": "task(forge)", "name": "forge_tab", "target": "person", "positive": "person, old",
                       "negative": "person, young"}.get(name, block.value))
    outputs = fn.fn(*values)
    result = outputs[-1]
    assert "Training did not start" in result and "needs SD WebUI Forge" in result and "own backend" in result, result


# ------------------------------------------------------------------------------------------------------ UI


def test_the_accordion_shows_no_refusal_note(env):
    assert _block(env.demo, env.script.elem_id("host_note")) is None


def test_merge_setting_merges_the_unet_part_and_hooks_the_text_part(env, monkeypatch):
    """A slider with UNet and text-encoder parts: Forge merges the UNet part, the text part stays a hook."""
    import os

    from modules import shared

    from lib_sliders.files.lora import SliderNetwork
    from lib_sliders.files.slider_file import save_slider

    library = sys.modules["lib_sliders.webui.script"].library()
    age, words = library.load("age"), library.load("words")
    path = os.path.join(env.sliders_dir, "both.safetensors")
    save_slider(SliderNetwork("both", unet=age.unet, text=words.text), path, arch="sd1", dtype=torch.float32)
    library.refresh()
    try:
        prompt = "a photo of a person <slider:both:2>"
        hooked = gen(env, prompt).latents
        unet_only = gen(env, "a photo of a person <slider:age:2>").latents
        shared.opts.sliders_apply_mode = MERGE
        seen = weights_at_each_call(env, monkeypatch, first_unet_path("age"))
        merged = gen(env, prompt).latents
        assert seen and all(not hooks for _, hooks in seen)
        assert close(merged, hooked) and differs(merged, unet_only), "the text part acts too"
    finally:
        os.remove(path)
        library.refresh()
