"""The extension inside the webui double: real generations through ``process_images`` on a toy SD1 model.

Every generation goes through ``WebuiEnv.run``, which also checks that afterwards the UNet and text-encoder
weights are bitwise what they were, no hook is left on any module and no exception was swallowed.
"""

from __future__ import annotations

import os
import sys

import pytest
import torch
from webui_double.conftest_helpers import SEED, assert_model_untouched, close, make_model, snapshot, webui_env

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


def params_of(env, infotext):
    from modules import infotext_utils

    return infotext_utils.parse_generation_parameters(infotext)


# ------------------------------------------------------------------------------------- 1. no trace


def test_alpha_zero_is_bitwise_no_slider(env):
    base = gen(env).latents
    assert torch.equal(gen(env, "a photo of a person <slider:age:0>").latents, base)
    row = {"enabled": True, "sliders": [{"name": "age", "alpha": 0.0, "start": 0.0}]}
    assert torch.equal(gen(env, sliders=row).latents, base)
    # A slider that is on for other images of the batch leaves an α = 0 image exactly as it was.
    plain = gen(env, "a photo of a person", batch_size=2).latents
    batch = gen(env, ["a photo of a person", "a photo of a person <slider:age:2>"], batch_size=2).latents
    assert torch.equal(batch[0], plain[0]) and differs(batch[1:], plain[1:])


def test_model_clean_when_another_callback_raises(env):
    reference = gen(env, "a photo of a person <slider:age:2>").latents

    def broken(params):
        raise RuntimeError("another extension's cfg_denoiser failed")

    env.on_cfg_denoiser(broken)
    res = env.run(env.make_p("a photo of a person <slider:age:2>"), errors_expected=True)
    assert all("cfg_denoiser" in message for message in env.m.errors.reported)
    assert torch.equal(res.latents, reference)


def test_model_clean_when_another_script_raises(env):
    reference = gen(env, "a photo of a person <slider:age:2>").latents
    env.probe.fail_in.add("process_batch")
    res = env.run(env.make_p("a photo of a person <slider:age:2>"), errors_expected=True)
    assert len(env.m.errors.reported) == 1 and "process_batch" in env.m.errors.reported[0]
    assert torch.equal(res.latents, reference)


def test_interrupted_job_cleans_up_and_the_next_one_is_normal(env):
    reference = gen(env, "a photo of a person <slider:age:-2..2>", batch_size=2).latents
    calls = []

    def interrupt_after_first_step(params):
        calls.append(params.sampling_step)
        if len(calls) == 2:
            env.m.shared.state.interrupt()

    env.on_cfg_denoiser(interrupt_after_first_step)
    res = env.run(env.make_p("a photo of a person <slider:age:-2..2>", batch_size=2, n_iter=2))
    assert len(calls) == 2 and len(res.images) == 2, "sampling stops, the second batch never starts"
    env.reset()
    assert torch.equal(gen(env, "a photo of a person <slider:age:-2..2>", batch_size=2).latents, reference)


def test_job_that_raises_is_cleaned_up_by_the_next_one(env):
    base = gen(env).latents

    def corrupt(params):
        params.x = params.x[:, :2]  # the UNet will refuse this batch

    env.on_cfg_denoiser(corrupt)
    with pytest.raises(RuntimeError):
        env.m.processing.process_images(env.make_p("a photo of a person <slider:age:2>"))
    # No hook of the webui runs after a failed job (postprocess is skipped); the next job's before_process
    # is what takes the sliders off.
    env.reset()
    assert torch.equal(gen(env).latents, base)


def test_sampling_for_another_job_never_sees_sliders_a_failed_job_left(env):
    import numpy as np

    base = np.asarray(gen(env).images[0])

    def corrupt(params):
        params.x = params.x[:, :2]

    env.on_cfg_denoiser(corrupt)
    with pytest.raises(RuntimeError):
        env.m.processing.process_images(env.make_p("a photo of a person <slider:age:2>"))
    env.reset()
    # Sampling that bypasses our script and the extra networks (an extension's own loop): still clean.
    p = env.make_p(disable_extra_networks=True)
    p.scripts = None
    assert np.array_equal(np.asarray(env.m.processing.process_images(p).images[0]), base)


# ---------------------------------------------------------------------------- 2. tags, per-image α


def test_tag_changes_the_output(env):
    base = gen(env).latents
    assert differs(gen(env, "a photo of a person <slider:age:2>").latents, base)
    # Other networks' tags are not ours: unknown to this webui, skipped, and the slider still applies.
    with_lora = gen(env, "a photo of a person <slider:age:2> <lora:other:1>").latents
    assert torch.equal(with_lora, gen(env, "a photo of a person <slider:age:2>").latents)


SETTINGS = [{}, {"batch_cond_uncond": False}, {"skip_early_cond": 0.5}]


@pytest.mark.parametrize("settings", SETTINGS, ids=["one-call", "chunked", "skip-early-cfg"])
def test_spread_gives_each_image_its_own_alpha(env, settings):
    for key, value in settings.items():
        setattr(env.m.shared.opts, key, value)
    batch = gen(env, "a photo of a person <slider:age:-2..2>", batch_size=3).latents
    for i, alpha in enumerate((-2, 0, 2)):
        alone = gen(env, f"a photo of a person <slider:age:{alpha}>", seed=SEED + i).latents
        assert close(batch[i:i + 1], alone), (i, float((batch[i:i + 1] - alone).abs().max()))


@pytest.mark.parametrize("batch_cond_uncond", [True, False])
def test_and_prompt_in_one_image(env, batch_cond_uncond):
    env.m.shared.opts.batch_cond_uncond = batch_cond_uncond
    prompts = ["a cat AND a hat :0.7 <slider:age:2>", "a dog <slider:age:-1.5>", "a cow"]
    batch = gen(env, prompts, batch_size=3).latents
    for i, prompt in enumerate(prompts):
        alone = gen(env, prompt, seed=SEED + i).latents
        assert close(batch[i:i + 1], alone), (i, float((batch[i:i + 1] - alone).abs().max()))


def test_a_strip_shares_the_first_images_seed(env):
    """The setting's default: a strip is one image at several α. Each image equals that image made alone."""
    env.m.shared.opts.sliders_strip_same_seed = True
    res = gen(env, "a photo of a person <slider:age:-2..2>", batch_size=3)
    assert [params_of(env, t)["Seed"] for t in res.infotexts] == [str(SEED)] * 3
    for i, alpha in enumerate((-2, 0, 2)):
        alone = gen(env, f"a photo of a person <slider:age:{alpha}>").latents
        assert close(res.latents[i:i + 1], alone), (i, float((res.latents[i:i + 1] - alone).abs().max()))
    # From the accordion's strip row (a request), over two batches, and with a cycle.
    rows = gen(env, sliders={"sliders": [{"name": "age", "alpha": "-1|1"}]}, n_iter=2)
    assert [params_of(env, t)["Seed"] for t in rows.infotexts] == [str(SEED)] * 2
    assert close(rows.latents[1:2], gen(env, "a photo of a person <slider:age:1>").latents)


@pytest.mark.parametrize("job", ["fixed tags", "list of seeds", "variation seeds", "setting off"])
def test_seeds_stay_the_webuis_when_the_job_is_no_strip_or_the_user_chose_them(env, job):
    env.m.shared.opts.sliders_strip_same_seed = job != "setting off"
    prompt, kwargs = "a photo of a person <slider:age:-2..2>", {}
    if job == "fixed tags":  # different fixed α per image: not a strip
        prompt = ["a photo <slider:age:2>", "a photo <slider:age:-1>"]
    elif job == "list of seeds":
        kwargs = {"seed": [SEED, SEED + 7]}
    elif job == "variation seeds":
        kwargs = {"subseed": 5, "subseed_strength": 0.5}
    res = gen(env, prompt, batch_size=2, **kwargs)
    seeds = [params_of(env, t)["Seed"] for t in res.infotexts]
    expected = {"list of seeds": [SEED, SEED + 7], "variation seeds": [SEED, SEED]}.get(job, [SEED, SEED + 1])
    assert seeds == [str(seed) for seed in expected]
    if job == "variation seeds":
        assert res.all_subseeds == [5, 6]  # the variations the user asked for


LONG = "a photo of a person " + " ".join(f"word{i}" for i in range(90))  # two 75-token chunks


@pytest.mark.parametrize("batch_cond_uncond", [True, False])
@pytest.mark.parametrize("negative", ["", LONG + " " + LONG], ids=["short-negative", "longer-negative"])
def test_long_prompts_strip_equals_singles(env, monkeypatch, batch_cond_uncond, negative):
    """Prompt and negative prompt of different chunk counts: the webui sends cond rows and uncond rows in
    separate UNet calls; every call must still give each image its own α."""
    env.m.shared.opts.batch_cond_uncond = batch_cond_uncond
    calls = []
    denoiser = env.m.sd_samplers_cfg_denoiser.CFGDenoiser
    inner = denoiser.inner_model

    def counted(self):
        model = inner.fget(self)
        return lambda x, *args, **kwargs: calls.append(x.shape[0]) or model(x, *args, **kwargs)

    monkeypatch.setattr(denoiser, "inner_model", property(counted))
    batch = gen(env, LONG + " <slider:age:-2..2> <slider:words:1>", batch_size=3, negative_prompt=negative).latents
    monkeypatch.undo()
    assert calls[:2] == [3, 3], calls  # the cond rows, then the uncond rows: the long-prompt path was taken
    for i, alpha in enumerate((-2, 0, 2)):
        alone = gen(env, f"{LONG} <slider:age:{alpha}> <slider:words:1>", seed=SEED + i, negative_prompt=negative)
        assert close(batch[i:i + 1], alone.latents), (i, float((batch[i:i + 1] - alone.latents).abs().max()))
    assert differs(batch[0:1], batch[2:3])


def test_different_tags_per_image(env):
    prompts = ["a photo <slider:age:2>", "a photo", "a photo <slider:smile:-1.5> <slider:age:1>"]
    batch = gen(env, prompts, batch_size=3).latents
    for i, prompt in enumerate(prompts):
        alone = gen(env, prompt, seed=SEED + i).latents
        assert close(batch[i:i + 1], alone), (i, float((batch[i:i + 1] - alone).abs().max()))
    assert differs(batch[2:3], gen(env, "a photo <slider:age:1>", seed=SEED + 2).latents)


def test_spread_over_several_batches(env):
    res = gen(env, sliders={"sliders": [{"name": "age", "alpha": "-2..2"}]}, n_iter=2)
    for i, alpha in enumerate((-2, 2)):
        alone = gen(env, f"a photo of a person <slider:age:{alpha}>", seed=SEED + i).latents
        assert close(res.latents[i:i + 1], alone)
    # The webui builds each image's infotext with the index IN ITS BATCH; the value must still be its own.
    assert [parse_sliders(params_of(env, t)[SLIDERS_KEY])[0] for t in res.infotexts] == [
        [("age", -2.0, 0.0)], [("age", 2.0, 0.0)]]


def test_grid_infotext_describes_the_first_image(env):
    res = gen(env, sliders={"sliders": [{"name": "age", "alpha": "-2..2"}]}, n_iter=2, do_not_save_grid=False)
    assert res.index_of_first_image == 1 and len(res.infotexts) == 3
    grid, first = params_of(env, res.infotexts[0]), params_of(env, res.infotexts[1])
    assert grid["Seed"] == first["Seed"] == str(SEED)
    assert grid[SLIDERS_KEY] == first[SLIDERS_KEY] == "age:-2"


def test_merging_mode_matches_hooks_and_restores_weights(env):
    settings = sys.modules["lib_sliders.webui.settings"]
    hooked = gen(env, "a photo of a person <slider:age:2> <slider:smile:-1>").latents
    spread = gen(env, "a photo of a person <slider:age:-2..2>", batch_size=2).latents
    env.m.shared.opts.sliders_apply_mode = next(k for k, v in settings.APPLY_MODES.items() if v == "auto")
    merged = gen(env, "a photo of a person <slider:age:2> <slider:smile:-1>").latents
    assert close(merged, hooked, rel=1e-3)
    assert close(gen(env, "a photo of a person <slider:age:-2..2>", batch_size=2).latents, spread, rel=1e-3)


def test_disabled_extra_networks_apply_no_slider(env):
    base = gen(env).latents
    res = gen(env, "a photo of a person <slider:age:2>", {"sliders": [{"name": "smile", "alpha": 2}]},
              disable_extra_networks=True)
    assert torch.equal(res.latents, base)


def test_model_swap_mid_job_moves_the_sliders(env):
    # The refiner / a checkpoint reload replace shared.sd_model and fire on_model_loaded between the
    # batch's activation and its sampling.
    other = make_model(seed=1)
    saved_other = snapshot(other)
    env.m.shared.sd_model = other
    reference = gen(env, "a photo <slider:age:-2..2>", batch_size=2).latents
    env.m.shared.sd_model = env.model

    def swap(p):
        env.m.shared.sd_model = other
        env.m.script_callbacks.model_loaded_callback(other)

    env.probe.on_process_batch = swap
    res = gen(env, "a photo <slider:age:-2..2>", batch_size=2)
    assert torch.equal(res.latents, reference)
    assert_model_untouched(other, saved_other)


# ---------------------------------------------------------------------------- text-encoder slider


def test_text_encoder_slider_from_tag_and_from_args(env):
    base = gen(env).latents
    tagged = gen(env, "a photo of a person <slider:words:2>").latents
    assert differs(tagged, base)
    # Same prompts and no tag: the webui's cond cache must not hand back the conds made without the slider…
    assert torch.equal(gen(env, sliders={"sliders": [{"name": "words", "alpha": 2}]}).latents, tagged)
    # …nor the next plain job the conds made with it.
    assert torch.equal(gen(env).latents, base)


def test_text_encoder_spread_over_batches(env):
    # One α per batch for the text encoder: each batch must get conds made with its own.
    for sliders, prompt in (({"sliders": [{"name": "words", "alpha": "-2..2"}]}, "a photo"),
                            (None, "a photo <slider:words:-2..2>")):
        res = gen(env, prompt, sliders, n_iter=2)
        for i, alpha in enumerate((-2, 2)):
            assert torch.equal(res.latents[i:i + 1], gen(env, f"a photo <slider:words:{alpha}>", seed=SEED + i).latents)


def test_text_encoder_slider_axis_cells(env):
    for alpha in ("-2", "2"):
        [cell] = run_cells(env, env.make_p("a photo"), "[Sliders] α: words", [alpha])
        assert torch.equal(cell.latents, gen(env, f"a photo <slider:words:{alpha}>").latents)


def test_text_encoder_tag_on_one_image_leaves_the_others_alone(env):
    batch = gen(env, ["a photo <slider:words:2>", "a cat"], batch_size=2)
    assert close(batch.latents[1:2], gen(env, "a cat", seed=SEED + 1).latents), "image 1 has no slider"
    # Image 0 gets its text-encoder delta, or the user is told why it can't.
    assert close(batch.latents[0:1], gen(env, "a photo <slider:words:2>").latents) or "words" in batch.comments


# ------------------------------------------------------------------------------------ 3. args, errors


def test_args_dict_does_what_the_tag_does(env):
    tagged = gen(env, "a photo of a person <slider:age:2>").latents
    assert torch.equal(gen(env, sliders={"sliders": [{"name": "age", "alpha": 2}]}).latents, tagged)
    assert torch.equal(gen(env, sliders='{"sliders": [{"name": "age", "alpha": 2}]}').latents, tagged)
    off = {"enabled": False, "sliders": [{"name": "age", "alpha": 2}]}
    assert torch.equal(gen(env, sliders=off).latents, gen(env).latents)


def test_bad_args_are_reported_and_the_rest_applies(env):
    tagged = gen(env, "a photo of a person <slider:age:2>").latents
    args = {"sliders": [{"name": "nope", "alpha": 1}, {"name": "age", "alpha": "x"}, {"name": "age", "alpha": 2}]}
    res = gen(env, sliders=args)
    assert "nope" in res.comments and "sliders[1].alpha" in res.comments
    assert torch.equal(res.latents, tagged)


def test_unknown_and_unfitting_sliders_are_named_and_skipped(env):
    tagged = gen(env, "a photo of a person <slider:age:2>").latents
    res = gen(env, "a photo of a person <slider:nope:1> <slider:xl:1> <slider:misfit:1> <slider:age:2>")
    lines = res.comments.splitlines()
    assert any("<slider:nope:1>" in line and "not found" in line for line in lines)
    assert any("xl.safetensors" in line and "SDXL" in line for line in lines)
    assert any("misfit.safetensors" in line and "doesn't fit" in line for line in lines)
    assert torch.equal(res.latents, tagged)
    bad = gen(env, "a photo of a person <slider:age:2:strat=1>")
    assert "<slider:age:2:strat=1>" in bad.comments and torch.equal(bad.latents, gen(env).latents)


# ------------------------------------------------------------------------------------------ 4. infotext


def test_infotext_lists_rows_per_image_and_pastes_back(env):
    from lib_sliders.webui.ui_state import rows_from_infotext

    library = sys.modules["lib_sliders.webui.script"].library()
    res = gen(env, "a photo <slider:smile:1>", sliders={"enabled": True, "sliders": [
        {"name": "age", "alpha": "-2..2"}]}, batch_size=3)
    for i, alpha in enumerate((-2.0, 0.0, 2.0)):
        params = params_of(env, res.infotexts[i])
        assert params["Prompt"] == "a photo <slider:smile:1>"  # tags stay in the prompt
        entries, problems = parse_sliders(params[SLIDERS_KEY])
        assert problems == [] and entries == [("age", alpha, 0.0)]
        hashes = parse_hashes(params[HASHES_KEY])
        assert hashes["smile"] == library.short_hash("smile")
        assert ("age" in hashes) == (alpha != 0)
        assert rows_from_infotext(params, 4) == [("age", alpha, 0.0)]
        # The accordion's paste functions fill the widgets from the same dict.
        fields = env.script.infotext_fields
        pasted = [fn(params) for _, fn in fields]
        assert pasted[0] is True and pasted[1] == 1
        assert pasted[2:5] == ["age", alpha, 0.0] and pasted[5] == "None"
    plain = params_of(env, gen(env, "a photo <slider:age:1>").infotexts[0])
    assert SLIDERS_KEY not in plain and plain[HASHES_KEY] == f"age: {library.short_hash('age')}"
    assert env.script.infotext_fields[0][1](plain) is False


def test_a_slider_renamed_on_disk_pastes_back_under_its_new_name(env):
    import safetensors.torch
    from modules import script_callbacks

    from lib_sliders.library.headers import read_safetensors_metadata

    library = sys.modules["lib_sliders.webui.script"].library()
    old, new = (os.path.join(env.sliders_dir, f"{n}.safetensors") for n in ("before rename", "after rename"))
    # A slider of its own (age's tensors × 0.5), so that no other file has its hash.
    tensors = safetensors.torch.load_file(library.get("age").path)
    safetensors.torch.save_file({k: v * 0.5 if k.endswith("up.weight") else v for k, v in tensors.items()}, old,
                                metadata={k: v for k, v in read_safetensors_metadata(library.get("age").path).items()
                                          if not k.startswith("sshs_")})  # hashed from its bytes
    try:
        library.refresh()
        made = gen(env, "a photo <slider:before rename:1.5>",
                   sliders={"sliders": [{"name": "before rename", "alpha": -1, "start": 0.25}]}, batch_size=1)
        os.replace(old, new)
        library.refresh()
        params = params_of(env, made.infotexts[0])
        script_callbacks.infotext_pasted_callback(made.infotexts[0], params)  # as the webui's paste and PNG Info do
        assert params["Prompt"] == "a photo <slider:after rename:1.5>"
        assert parse_sliders(params[SLIDERS_KEY]) == ([("after rename", -1.0, 0.25)], [])
        assert parse_hashes(params[HASHES_KEY]) == {"after rename": library.short_hash("after rename")}
        pasted = [fn(params) for _, fn in env.script.infotext_fields]
        assert pasted[2:5] == ["after rename", -1.0, 0.25]
        # The pasted job makes the same image again.
        again = gen(env, params["Prompt"], sliders={"sliders": [{"name": "after rename", "alpha": -1, "start": 0.25}]})
        assert torch.equal(again.latents, made.latents)
    finally:
        for path in (old, new):
            if os.path.exists(path):
                os.remove(path)
        library.refresh()


def test_start_round_trips_through_infotext(env):
    res = gen(env, sliders={"sliders": [{"name": "age", "alpha": 1.5, "start": 0.25}]})
    params = params_of(env, res.infotexts[0])
    assert parse_sliders(params[SLIDERS_KEY])[0] == [("age", 1.5, 0.25)]
    args = {"sliders": [{"name": n, "alpha": a, "start": s} for n, a, s in parse_sliders(params[SLIDERS_KEY])[0]]}
    assert torch.equal(gen(env, sliders=args).latents, res.latents)
    env.m.shared.opts.sliders_add_hashes_to_infotext = False
    assert HASHES_KEY not in params_of(env, gen(env, sliders=args).infotexts[0])


# ---------------------------------------------------------------------------------------------- 5. X/Y/Z


def axis(env, label):
    return next(a for a in env.xyz_module.axis_options if a.label == label)


def test_axes_registered_once(env):
    labels = [a.label for a in env.xyz_module.axis_options]
    ours = [label for label in labels if label.startswith("[Sliders]")]
    assert {"[Sliders] α: age", "[Sliders] α: words", "[Sliders] name:α", "[Sliders] slider"} <= set(ours)
    # They were there when the plot built its UI (it copies the list then).
    plot = next(s for s in env.runner.selectable_scripts if s.title() == "X/Y/Z plot")
    assert [a.label for a in plot.current_axis_options] == labels
    xyz = sys.modules["lib_sliders.webui.xyz"]
    library = sys.modules["lib_sliders.webui.script"].library
    # What a second import of the entry script (Reload UI) does: replace ours, keep the plot's own.
    assert xyz.register_axes(lambda: library().names(), lambda name: library().get(name) is not None) == len(ours)
    assert [a.label for a in env.xyz_module.axis_options] == labels


def run_cells(env, p, label, values):
    """The plot's cells for one axis; each cell's final latents attached as ``.latents``."""
    cells = []
    for value in values:
        env.probe.samples.clear()
        [cell] = env.xyz_module.run_axis(p, axis(env, label), [value])
        cell.latents = torch.cat(env.probe.samples)
        cells.append(cell)
    return cells


def test_alpha_axis_equals_the_tag(env):
    p = env.make_p()
    cells = run_cells(env, p, "[Sliders] α: age", ["-2", "2"])
    for cell, alpha in zip(cells, (-2.0, 2.0), strict=True):
        assert torch.equal(cell.latents, gen(env, f"a photo of a person <slider:age:{alpha:g}>").latents)
        assert parse_sliders(params_of(env, cell.infotexts[0])[SLIDERS_KEY])[0] == [("age", alpha, 0.0)]
    assert not hasattr(p, "sliders_override") and p.prompt == "a photo of a person"  # cells are copies


def test_axis_overrides_a_tag_in_the_prompt(env):
    [cell] = run_cells(env, env.make_p("a photo <slider:age:1>"), "[Sliders] α: age", ["2"])
    assert cell.cell.all_prompts == ["a photo <slider:age:2>"]
    assert params_of(env, cell.infotexts[0])["Prompt"] == "a photo <slider:age:2>"
    assert torch.equal(cell.latents, gen(env, "a photo <slider:age:2>").latents)
    [cell] = run_cells(env, env.make_p(), "[Sliders] name:α", ["smile:-1.5"])
    assert torch.equal(cell.latents, gen(env, "a photo of a person <slider:smile:-1.5>").latents)
    assert env.m.errors.reported == []
    with pytest.raises(RuntimeError, match="nope"):
        env.xyz_module.run_axis(env.make_p(), axis(env, "[Sliders] name:α"), ["nope:1"])


def test_slider_alpha_and_start_axes(env):
    from copy import copy

    def cell(p, *applied):
        pc = copy(p)  # what the plot does for each cell
        for label, value in applied:
            axis(env, label).apply(pc, value, [value])
        return env.run(pc).latents

    # "[Sliders] slider" picks the slider the "[Sliders] α" / "[Sliders] start" axes act on…
    p = env.make_p("a photo <slider:age:1>")
    picked = cell(p, ("[Sliders] slider", "smile"), ("[Sliders] α", -1.5))
    assert torch.equal(picked, gen(env, "a photo <slider:age:1> <slider:smile:-1.5>").latents)
    # …without it, they act on every slider of the job, tags and rows alike.
    p = env.make_p("a photo <slider:age:1>", {"sliders": [{"name": "smile", "alpha": 1}]})
    every = cell(p, ("[Sliders] α", 2.0), ("[Sliders] start", 0.4))
    assert torch.equal(every, gen(env, "a photo <slider:age:2:start=0.4> <slider:smile:2:start=0.4>").latents)


# ------------------------------------------------------------------------------------------ 6. step gates


def steps_seen(env, prompt):
    seen = []
    env.on_cfg_denoiser(lambda params: seen.append(params.x.detach().clone()))
    res = gen(env, prompt, steps=4)
    env.m.script_callbacks.remove_callbacks_for_function(env.added_callbacks.pop())
    return seen, res.latents


def test_start_leaves_the_first_half_untouched(env):
    plain, plain_out = steps_seen(env, "a photo of a person")
    gated, gated_out = steps_seen(env, "a photo of a person <slider:age:2:start=0.5>")
    assert len(plain) == len(gated) == 4
    for step in range(3):  # the latents going into steps 0, 1 and 2 (= after steps 0 and 1)
        assert torch.equal(plain[step], gated[step]), step
    assert not torch.equal(gated_out, plain_out)


def test_start_acts_from_the_middle_step(env):
    plain, _ = steps_seen(env, "a photo of a person")
    gated, _ = steps_seen(env, "a photo of a person <slider:age:2:start=0.5>")
    assert differs(gated[3], plain[3]), "step 2 (the first of the second half) must already use the slider"


# ------------------------------------------------------------------------------------------------ hires


def test_hires_pass_keeps_per_image_alpha(env):
    hires = {"enable_hr": True, "hr_scale": 2.0, "hr_second_pass_steps": 2, "denoising_strength": 0.6}
    batch = gen(env, "a photo of a person <slider:age:-2..2>", batch_size=2, **hires).latents
    assert batch.shape[-1] == 16
    for i, alpha in enumerate((-2, 2)):
        alone = gen(env, f"a photo of a person <slider:age:{alpha}>", seed=SEED + i, **hires).latents
        assert close(batch[i:i + 1], alone), i
    assert differs(batch[1:2], gen(env, seed=SEED + 1, **hires).latents)


def test_hires_prompt_tags_apply_to_the_hires_pass(env):
    hires = {"enable_hr": True, "hr_scale": 2.0, "hr_second_pass_steps": 2, "denoising_strength": 0.6}
    same = gen(env, "a photo <slider:age:2>", **hires).latents
    other = gen(env, "a photo <slider:age:2>", hr_prompt="a photo <slider:age:-2>", **hires).latents
    assert differs(other, same)
