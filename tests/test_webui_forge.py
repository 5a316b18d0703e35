"""On SD WebUI Forge (and its forks) sliders are refused, never half-applied: generation, training, UI.

The Forge flavour of the double (``webui_double/forge_double.py``): ``modules_forge`` importable while the webui
double starts, ``shared.sd_model`` a ``ForgeDiffusionEngine``-shaped model (UNet only under ``forge_objects``, no
``model.diffusion_model``), ``sd_hijack`` without its optimisation switches. A job with sliders there is made
exactly as without them (the ``<slider:…>`` tags stripped as usual), says so once on the console and once under the
image, and writes no ``Sliders`` infotext; training is refused with the reason before anything starts.
"""

from __future__ import annotations

import json
import logging
import sys

import numpy as np
import pytest
import torch
from webui_double.conftest_helpers import webui_env
from webui_double.forge_double import forge_on_path, make_forge_model, without_optimization_switches

from lib_sliders.prompt.infotext import HASHES_KEY, SLIDERS_KEY

pytestmark = pytest.mark.filterwarnings("ignore:Please use `import python_multipart`:PendingDeprecationWarning")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with forge_on_path(), webui_env(str(tmp_path_factory.mktemp("webui"))) as environment:
        from modules import sd_hijack

        without_optimization_switches(sd_hijack)
        environment.forge_model = make_forge_model(environment.model)
        yield environment


@pytest.fixture(autouse=True)
def fresh(env):
    from modules import shared

    env.reset()
    shared.sd_model = env.forge_model
    yield
    shared.sd_model = env.forge_model


def gen(env, prompt="a photo of a person", sliders=None, **kwargs):
    return env.run(env.make_p(prompt, sliders, **kwargs))


def params_of(infotext):
    from modules import infotext_utils

    return infotext_utils.parse_generation_parameters(infotext)


def refusals(caplog):
    return [r for r in caplog.records if r.name == "concept_sliders" and "Forge" in r.getMessage()]


def forge_lines(comments):
    return [line for line in comments.splitlines() if "Forge" in line]


# --------------------------------------------------------------------------------------------- generation


def test_sliders_are_refused_and_the_image_is_made_without_them(env, caplog):
    reference = gen(env, "a photo of a person", batch_size=2, n_iter=2)
    with caplog.at_level(logging.WARNING, logger="concept_sliders"):
        res = gen(env, "a photo of a person <slider:age:2>", {"sliders": [{"name": "smile", "alpha": 1.5}]},
                  batch_size=2, n_iter=2)
    # The tags were stripped (not encoded as text) and nothing reached the UNet: the same latents.
    assert torch.equal(res.latents, reference.latents)
    for text in res.infotexts:
        params = params_of(text)
        assert SLIDERS_KEY not in params and HASHES_KEY not in params, text
    # One line for the whole job (two batches, a request and tags), under the image and on the console.
    lines = forge_lines(res.comments)
    assert len(lines) == 1 and "not applied" in lines[0] and "Concept Sliders" in lines[0], res.comments
    assert len(refusals(caplog)) == 1
    assert env.forge_model.forge_objects.unet.lora_patches == {}


def test_sliders_from_the_api_args_alone_are_refused_too(env, caplog):
    reference = gen(env)
    with caplog.at_level(logging.WARNING, logger="concept_sliders"):
        res = gen(env, sliders={"sliders": [{"name": "age", "alpha": 2}]})
    assert torch.equal(res.latents, reference.latents)
    assert SLIDERS_KEY not in params_of(res.infotexts[0])
    assert len(forge_lines(res.comments)) == 1 and len(refusals(caplog)) == 1


def test_a_job_without_sliders_says_nothing(env, caplog):
    with caplog.at_level(logging.WARNING, logger="concept_sliders"):
        res = gen(env, "a photo <lora:something:1>")
    assert forge_lines(res.comments) == [] and refusals(caplog) == []


def test_a_job_our_script_doesnt_see_is_refused_by_the_extra_network(env, caplog):
    # e.g. another extension's own process_images without scripts: only the slider network's activate runs.
    reference = env.make_p("a photo of a person")
    reference.scripts = None
    reference = env.run(reference)
    p = env.make_p("a photo of a person <slider:age:2>")
    p.scripts = None
    with caplog.at_level(logging.WARNING, logger="concept_sliders"):
        res = env.run(p)
    assert [np.asarray(i).tolist() for i in res.images] == [np.asarray(i).tolist() for i in reference.images]
    assert len(forge_lines(res.comments)) == 1 and len(refusals(caplog)) == 1
    assert SLIDERS_KEY not in params_of(res.infotexts[0])


# ----------------------------------------------------------------------------------------------- training


def _route(app, method, path):
    return next(r.endpoint for r in app.routes if getattr(r, "path", None) == path and method in r.methods)


TRAIN = {"name": "forge_age", "prompts": [{"target": "person", "positive": "person, old", "negative": "person, young"}],
         "iterations": 2, "resolution": 64, "max_denoising_steps": 4, "preview": False}


def test_training_is_refused_by_the_api_before_any_job_starts(env):
    jobs = sys.modules["lib_sliders.webui.script"].training_jobs
    count = len(jobs.jobs())
    response = _route(env.app, "POST", "/sliders/v1/train")(body=dict(TRAIN))
    assert response.status_code == 422
    (problem,) = json.loads(response.body)["detail"]
    assert problem["field"] == "webui" and "SD WebUI Forge" in problem["problem"]
    assert "training sliders is not supported" in problem["problem"]
    assert len(jobs.jobs()) == count


def test_preparing_the_model_refuses_too(env):
    # The backstop behind the submit check: a job queued before would fail with the reason, not a traceback.
    from lib_sliders.errors import SliderError

    jobs = sys.modules["lib_sliders.webui.script"].training_jobs
    with pytest.raises(SliderError, match="not supported on SD WebUI Forge"):
        jobs.host.prepare()
    jobs.host.restore()


@pytest.fixture
def train_tab(env):
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
    assert note is not None and "Training sliders is not supported on SD WebUI Forge" in note.value
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
    assert "Training did not start" in result and "not supported on SD WebUI Forge" in result, result


# ------------------------------------------------------------------------------------------------------ UI


def test_the_accordion_shows_the_note(env):
    note = _block(env.demo, env.script.elem_id("host_note"))
    assert note is not None and "Sliders are not applied on SD WebUI Forge" in note.value
    assert "&lt;slider:…&gt; tags are removed from the prompt" in note.value
