"""Training from the webui, inside the webui double, on the toy SD1 model (a real tiny ldm UNet).

The HTTP routes are called through the FastAPI app the double's ``on_app_started`` callbacks filled (with
starlette's TestClient where this httpx allows, else with a minimal ASGI call): a job trains in a background
thread that takes the double's GPU queue lock, saves a loadable slider with its metadata, reports progress,
cancels into a resumable state, resumes to exactly the uninterrupted result, refuses bad fields (422, by
field) and models it can't train on, makes a preview strip through ``process_images``, and leaves the model
bitwise as it found it. Runs are tiny: 64×64 images (8×8 latents), a few iterations, 4 denoising steps.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time

import pytest
import torch
from webui_double.conftest_helpers import assert_model_untouched, webui_env

from lib_sliders.files.slider_file import load_slider

pytestmark = [
    pytest.mark.filterwarnings("ignore:Please use `import python_multipart`:PendingDeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The anyio.abc.BlockingPortal alias is deprecated:DeprecationWarning"),
]

PROMPT = {"target": "person", "positive": "person, very old", "negative": "person, very young", "guidance": 2.0}
FINISHED = ("done", "cancelled", "failed")
TIMEOUT = 60.0


def config(name, **overrides):
    """Training settings for a tiny text slider: 64×64 (8×8 latents), 3 iterations, 4 denoising steps; no start
    probe (it costs more than such a run; the API job test turns it on)."""
    return {"name": name, "prompts": [dict(PROMPT)], "iterations": 3, "resolution": 64, "max_denoising_steps": 4,
            "rank": 2, "lr": 1e-2, "seed": 1, "alpha_range": [-3.0, 3.0], "estimate_start": False, **overrides}


def settings(name, **overrides):
    """A POST /sliders/v1/train body: ``config`` and the options (no preview unless asked)."""
    return config(name, **{"preview": False, **overrides})


# ------------------------------------------------------------------------------------------------ HTTP


def _asgi_call(app, method, path, body=None):
    """One request through the ASGI app, without httpx (the venv's httpx is too new for starlette's client)."""
    payload = b"" if body is None else json.dumps(body).encode()
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode())],
        "client": ("testclient", 50000), "server": ("testserver", 80),
    }
    incoming = [{"type": "http.request", "body": payload, "more_body": False}]
    status, chunks = [], []

    async def receive():
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            status.append(message["status"])
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    asyncio.run(app(scope, receive, send))
    return status[0], json.loads(b"".join(chunks) or b"null")


class Api:
    def __init__(self, app):
        self.app = app
        try:
            from fastapi.testclient import TestClient

            self.client = TestClient(app)
        except (ImportError, TypeError, RuntimeError):
            self.client = None

    def call(self, method, path, body=None):
        if self.client is None:
            return _asgi_call(self.app, method, path, body)
        response = self.client.request(method, path, json=body) if body is not None else \
            self.client.request(method, path)
        return response.status_code, response.json()

    def post(self, path, body=None):
        return self.call("POST", path, body)

    def get(self, path):
        return self.call("GET", path)

    def start(self, body):
        status, job = self.post("/sliders/v1/train", body)
        assert status == 200, job
        # (a job refused by the model check may have failed already)
        assert job["state"] in ("queued", "running", "failed") and job["name"] == body["name"]
        return job

    def wait(self, job_id, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            status, job = self.get(f"/sliders/v1/train/{job_id}")
            assert status == 200, job
            if job["state"] in FINISHED:
                return job
            assert time.monotonic() < deadline, f"job still {job['state']} after {timeout} s: {job}"
            time.sleep(0.02)


# ----------------------------------------------------------------------------------------------- setup


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with webui_env(str(tmp_path_factory.mktemp("webui"))) as environment:
        yield environment


@pytest.fixture(scope="module")
def api(env):
    return Api(env.app)


@pytest.fixture
def jobs(env):
    return sys.modules["lib_sliders.webui.script"].training_jobs


@pytest.fixture(autouse=True)
def fresh(env, jobs):
    from modules import sd_hijack

    env.reset()
    sd_hijack.calls.clear()
    on_progress = jobs.host.on_progress
    yield
    jobs.host.on_progress = on_progress
    for job in jobs.jobs():  # no test leaves a job behind that could take the lock during the next one
        assert job.state in FINISHED, job.to_dict()
    assert_model_untouched(env.model, env.saved)


def record_progress(jobs, also=None):
    """Wrap the webui host's progress callback: every (id, state, iteration, the webui's progress fields after it)."""
    from modules import shared

    seen, original = [], jobs.host.on_progress

    def on_progress(job):
        original(job)
        state = shared.state
        seen.append((job.id, job.state, job.iteration,
                     (state.job_count, state.sampling_step, state.sampling_steps, state.textinfo)))
        if also is not None:
            also(job)

    jobs.host.on_progress = on_progress
    return seen


def flags(model):
    return ([m.training for m in model.modules()], [p.requires_grad for p in model.parameters()])


def slider_path(env, name):
    return os.path.join(env.sliders_dir, f"{name}.safetensors")


def state_path(env, name):
    return os.path.join(env.sliders_dir, ".training", f"{name}.state")


def assert_same_weights(a, b):
    assert set(a.unet) == set(b.unet) and a.unet
    for path, module in a.unet.items():
        assert torch.equal(module.down, b.unet[path].down), path
        assert torch.equal(module.up, b.unet[path].up), path


# ------------------------------------------------------------------------------------------ a whole job


def test_api_job_trains_saves_reports_and_leaves_the_model_as_found(env, api, jobs):
    from modules import sd_hijack

    unet = env.model.model.diffusion_model
    unet.train()  # an unusual mode the trainer must put back
    encoder = env.model.cond_stage_model
    encoder.wrapped.transformer.text_model.final_layer_norm.weight.requires_grad_(True)
    before = flags(env.model)
    seen = record_progress(jobs)
    try:
        job = api.start(settings("trained_age", estimate_start=True))
        assert job["total"] == 3 and job["error"] is None
        job = api.wait(job["id"])
        assert flags(env.model) == before
        assert_model_untouched(env.model, env.saved)  # weights bitwise, no hooks left
    finally:
        unet.eval()
        encoder.wrapped.transformer.text_model.final_layer_norm.weight.requires_grad_(False)

    assert job["state"] == "done", job
    assert job["error"] is None and job["iteration"] == job["total"] == 3
    assert isinstance(job["loss"], float) and job["loss"] > 0 and job["finished"] >= job["created"]
    assert isinstance(job["effect"], dict) and {"cosine", "gain", "does_nothing"} <= set(job["effect"])
    assert job["does_nothing"] == job["effect"]["does_nothing"] and job["preview"] is None
    path = slider_path(env, "trained_age")
    assert job["output"] == path and os.path.isfile(path)
    assert not os.path.exists(state_path(env, "trained_age")), "a finished run removes its resumable state"

    # Progress: every iteration, then the end; the webui's progress fields follow the job.
    mine = [(state, iteration) for job_id, state, iteration, _ in seen if job_id == job["id"]]
    assert mine == [("running", 1), ("running", 2), ("running", 3), ("done", 3)]
    webui = [fields for job_id, _, _, fields in seen if job_id == job["id"]]
    assert [fields[:3] for fields in webui] == [(1, 1, 3), (1, 2, 3), (1, 3, 3), (1, 3, 3)]
    assert webui[0][3].startswith("Training slider trained_age: 1/3, loss ") and " it/s" in webui[0][3]
    assert webui[2][3].startswith("Training slider trained_age: 3/3, loss ")

    # The webui's optimisations were taken off for training and put back once.
    assert sd_hijack.calls == ["undo", "apply"]

    slider = load_slider(path)
    assert slider.unet and not any(slider.text) and slider.arch == frozenset({"sd1"})
    assert any(float(m.up.abs().sum()) > 0 for m in slider.unet.values()), "the slider learned something"
    meta = slider.metadata
    assert meta["sliders.arch"] == "sd1" and meta["ss_network_dim"] == "2" and meta["ss_output_name"] == "trained_age"
    assert meta["ss_base_model_version"] == "sd_v1" and json.loads(meta["sliders.alpha_range"]) == [-3.0, 3.0]
    prompts = json.loads(meta["sliders.prompts"])
    assert prompts["mode"] == "text" and prompts["entries"][0]["positive"] == "person, very old"
    assert prompts["entries"][0]["negative"] == "person, very young" and prompts["entries"][0]["guidance"] == 2.0
    training = json.loads(meta["sliders.training"])
    assert training["iterations"] == training["iterations_done"] == 3 and training["cancelled"] is False
    assert (training["rank"], training["resolution"], training["lr"], training["seed"]) == (2, 64, 1e-2, 1)
    assert training["base_model"] == "toy-sd1-0" and training["base_model_hash"] == "00000000"
    assert training["final_loss"] > 0
    estimate = json.loads(meta["sliders.start_estimate"])  # the start probed on the loaded model, saved as default
    assert json.loads(meta["sliders.default_start"]) == estimate["start"] and len(estimate["open_share"]) == 9
    assert json.loads(meta["sliders.effect"]) == job["effect"]

    # The library lists it (the job refreshed it), with the file's recommendations.
    status, listed = api.get("/sliders/v1/sliders")
    assert status == 200
    entry = next(item for item in listed if item["name"] == "trained_age")
    assert entry["path"] == path and entry["arch"] == "sd1" and entry["alpha_range"] == [-3.0, 3.0]

    status, all_jobs = api.get("/sliders/v1/train")
    assert status == 200 and job["id"] in [j["id"] for j in all_jobs]
    status, missing = api.get("/sliders/v1/train/nope")
    assert status == 404 and "nope" in missing["detail"]
    status, missing = api.post("/sliders/v1/train/nope/cancel")
    assert status == 404
    assert env.m.errors.reported == []

    # The trained slider generates through the normal pipeline, and the model is clean afterwards.
    plain = env.run(env.make_p("a photo of a person")).latents
    slid = env.run(env.make_p("a photo of a person <slider:trained_age:3>")).latents
    assert not torch.equal(plain, slid)


# ------------------------------------------------------------------------------------------- bad fields


@pytest.mark.parametrize(("body", "field"), [
    (settings("bad", prompts=[{**PROMPT, "positive": ""}]), "prompts[0].positive"),
    (settings("bad", rank=0), "rank"),
    (settings("bad", preset="nope"), "preset"),
    (settings("bad", resolution=100), "resolution"),
    (settings("bad", resolution=96), "resolution"),  # fine for some models, not for SD's
    (settings("bad", overwrite="yes"), "overwrite"),
    (settings("bad", preview=1), "preview"),
    (settings("age"), "name"),  # an installed slider, without overwrite
    (settings("no_state_here", resume=True), "resume"),
    (settings("bad/name"), "name"),
    (settings("bad", bogus=1), "bogus"),
    (settings("bad", iterations="many"), "iterations"),
    (settings("bad", prompts=[]), "prompts"),
    (settings("bad", mode="image"), "pairs"),
])
def test_bad_fields_are_refused_with_422_by_field(env, api, jobs, body, field):
    count = len(jobs.jobs())
    files = sorted(os.listdir(env.sliders_dir))
    status, answer = api.post("/sliders/v1/train", body)
    assert status == 422, answer
    problems = answer["detail"]
    assert field in [p["field"] for p in problems], problems
    assert all(isinstance(p["problem"], str) and p["problem"] for p in problems)
    assert len(jobs.jobs()) == count and sorted(os.listdir(env.sliders_dir)) == files


def test_several_problems_are_all_listed_and_a_non_object_body_is_refused(api):
    status, answer = api.post("/sliders/v1/train", settings("bad", rank=0, resolution=100, preset="nope"))
    assert status == 422 and {"rank", "resolution", "preset"} <= {p["field"] for p in answer["detail"]}
    status, answer = api.post("/sliders/v1/train", [1, 2])
    assert status == 422


# -------------------------------------------------------------------------------------- queue and cancel


def test_jobs_wait_for_the_queue_lock_and_cancel_while_queued(env, api, jobs):
    from modules import call_queue, sd_hijack

    with call_queue.queue_lock:  # a generation holds the GPU
        job = api.start(settings("queued_age"))
        time.sleep(0.3)
        status, polled = api.get(f"/sliders/v1/train/{job['id']}")
        assert status == 200 and polled["state"] == "queued" and polled["iteration"] == 0
        # the same name can't be queued twice
        status, answer = api.post("/sliders/v1/train", settings("queued_age"))
        assert status == 422 and [p["field"] for p in answer["detail"]] == ["name"]
        status, cancelled = api.post(f"/sliders/v1/train/{job['id']}/cancel")
        assert status == 200 and cancelled["id"] == job["id"]
    job = api.wait(job["id"])
    assert job["state"] == "cancelled" and job["iteration"] == 0 and job["output"] is None
    assert not os.path.exists(slider_path(env, "queued_age")) and not os.path.exists(state_path(env, "queued_age"))
    assert sd_hijack.calls == [], "a job cancelled before it started never touched the model"
    status, again = api.post(f"/sliders/v1/train/{job['id']}/cancel")  # cancelling a finished job changes nothing
    assert status == 200 and again["state"] == "cancelled"


def test_cancel_saves_what_was_learned_and_resume_equals_an_uninterrupted_run(env, api, jobs):
    from modules import sd_hijack

    whole = api.wait(api.start(settings("whole_run", iterations=4))["id"])
    assert whole["state"] == "done"

    answers = []

    def cancel_at_two(job):
        if job.config.name == "split_run" and job.state == "running" and job.iteration == 2 and not answers:
            answers.append(api.post(f"/sliders/v1/train/{job.id}/cancel"))  # from the API, mid-run

    record_progress(jobs, also=cancel_at_two)
    sd_hijack.calls.clear()
    cancelled = api.wait(api.start(settings("split_run", iterations=4))["id"])
    assert answers and answers[0][0] == 200 and answers[0][1]["state"] == "running"
    assert cancelled["state"] == "cancelled" and cancelled["iteration"] == 2 and cancelled["error"] is None
    assert sd_hijack.calls == ["undo", "apply"]
    path = slider_path(env, "split_run")
    assert cancelled["output"] == path and os.path.isfile(path) and os.path.isfile(state_path(env, "split_run"))
    partial = load_slider(path)
    assert any(float(m.up.abs().sum()) > 0 for m in partial.unet.values()), "cancel keeps what was learned"
    training = json.loads(partial.metadata["sliders.training"])
    assert training["cancelled"] is True and training["iterations_done"] == 2

    # Without "resume" (or "overwrite") the partial slider's name is taken.
    status, answer = api.post("/sliders/v1/train", settings("split_run", iterations=4))
    assert status == 422 and [p["field"] for p in answer["detail"]] == ["name"]
    # A resume with other settings is refused when the job runs (the state says which differ).
    failed = api.wait(api.start(settings("split_run", iterations=4, rank=3, resume=True))["id"])
    assert failed["state"] == "failed" and "different settings" in failed["error"] and "rank" in failed["error"]
    assert os.path.isfile(state_path(env, "split_run"))

    resumed = api.wait(api.start(settings("split_run", iterations=4, resume=True))["id"])
    assert resumed["state"] == "done" and resumed["iteration"] == 4, resumed
    assert not os.path.exists(state_path(env, "split_run"))
    final = load_slider(path)
    assert json.loads(final.metadata["sliders.training"])["iterations_done"] == 4
    assert_same_weights(final, load_slider(slider_path(env, "whole_run")))
    assert resumed["effect"] == whole["effect"]


def test_the_webui_interrupt_button_stops_a_job_run_in_the_callers_thread(env, jobs):
    from modules import call_queue, shared

    from lib_sliders.webui.train_jobs import TrainOptions

    def interrupt_at_one(job):
        if job.iteration == 1 and job.state == "running":
            shared.state.interrupt()

    record_progress(jobs, also=interrupt_at_one)
    job = jobs.create(config("interrupted_age"), TrainOptions(preview=False))
    with call_queue.queue_lock:  # as the tab runs it: inside the webui's GPU queue
        shared.state.begin("train")
        result = jobs.run(job)
        shared.state.end()
    assert result is job and job.state == "cancelled" and job.iteration == 1
    assert os.path.isfile(slider_path(env, "interrupted_age")) and os.path.isfile(state_path(env, "interrupted_age"))


# ------------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(("setup", "problem"), [
    ("no_model", "no model is loaded"),
    ("lowvram", "--lowvram/--medvram"),
    ("not_sd", "not SD 1.x, SD 2.x or SDXL"),
])
def test_refuses_models_it_cannot_train_on(env, api, setup, problem):
    from modules import sd_hijack, shared

    name = f"refused_{setup}"
    if setup == "no_model":
        shared.sd_model = None
    elif setup == "lowvram":
        env.model.lowvram = True
    else:
        env.model.is_sd1 = False
    try:
        job = api.wait(api.start(settings(name))["id"])
    finally:
        shared.sd_model = env.model
        env.model.__dict__.pop("lowvram", None)
        env.model.is_sd1 = True
    assert job["state"] == "failed" and problem in job["error"], job
    assert job["iteration"] == 0 and job["output"] is None
    assert not os.path.exists(slider_path(env, name))
    assert sd_hijack.calls == []


# -------------------------------------------------------------------------------------------- preview


def test_preview_strip_through_process_images(env, api):
    from PIL import Image

    job = api.wait(api.start(settings("preview_age", lr=5e-2, preview=True))["id"])
    assert job["state"] == "done" and not [m for m in job["messages"] if "preview" in m], job
    path = os.path.join(env.sliders_dir, "preview_age.png")
    assert job["preview"] == path and os.path.isfile(path) and not os.path.exists(path + ".tmp")
    with Image.open(path) as image:
        image.load()
        strip = image.convert("RGB")
    assert strip.height == 64 and strip.width == 5 * strip.height
    panels = [torch.tensor(list(strip.crop((i * 64, 0, (i + 1) * 64, 64)).getdata()), dtype=torch.float32)
              for i in range(5)]
    assert not torch.equal(panels[0], panels[4]), "the slider moves the image"
    assert env.m.errors.reported == []
    # The middle panel is α = 0: the plain image of the same prompt and seed, made now by an ordinary
    # generation (which the preview's slider no longer reaches). Batch size may move a float by an ulp.
    plain = env.run(env.make_p("person", seed=1, steps=20, cfg_scale=7.0, negative_prompt="")).images[0]
    plain = torch.tensor(list(plain.convert("RGB").getdata()), dtype=torch.float32)
    assert float((plain - panels[2]).abs().max()) <= 2
    assert float((plain - panels[0]).abs().max()) > 2 and float((plain - panels[4]).abs().max()) > 2


def test_a_failed_preview_is_reported_and_the_slider_is_kept(env, api, monkeypatch):
    from modules import processing

    closed = []

    def broken(p):
        assert p.scripts is None and len(p.prompt) == 5 and "<slider:no_preview:-3..3>" in p.prompt[0]
        original_close = p.close
        p.close = lambda: (closed.append(True), original_close())
        raise RuntimeError("sampling failed")

    monkeypatch.setattr(processing, "process_images", broken)
    job = api.wait(api.start(settings("no_preview", iterations=1, preview=True))["id"])
    assert job["state"] == "done" and job["preview"] is None and job["error"] is None, job
    assert any("preview failed" in m and "sampling failed" in m for m in job["messages"]), job["messages"]
    assert closed == [True] and os.path.isfile(slider_path(env, "no_preview"))
    assert not os.path.exists(os.path.join(env.sliders_dir, "no_preview.png"))


# ---------------------------------------------------------------------------------------- the Train tab


TAB_FORM = {"name": "tab_age", "target": "person", "positive": "person, very old", "negative": "person, very young",
            "guidance": 2.0, "rank": 2, "iterations": 2, "lr": 0.01, "resolution": 64, "seed": 1, "preview": False,
            "advanced": '{"max_denoising_steps": 4}'}


@pytest.fixture
def train_tab(env):
    """The webui's way: ``on_ui_tabs`` callbacks build their Blocks, the main UI renders each in a tab."""
    import gradio as gr
    from modules import errors, script_callbacks

    tabs = script_callbacks.ui_tabs_callback()
    assert errors.reported == [], errors.reported
    assert [(label, ifid) for _, label, ifid in tabs] == [("Concept Sliders", "concept_sliders")]
    with gr.Blocks() as demo:
        for interface, label, ifid in tabs:
            with gr.TabItem(label, id=ifid, elem_id=f"tab_{ifid}"):
                interface.render()
    return demo


def tab_handler(demo, elem_id, trigger="click"):
    target = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == elem_id)
    found = [(fn, dep) for fn, dep in zip(demo.fns, demo.dependencies, strict=True)
             if target._id in dep["targets"] and dep["trigger"] == trigger and fn.fn is not None]
    assert len(found) == 1, (elem_id, trigger, len(found))
    return found[0][0]


def press(handler, values):
    """Call a button's function as gradio would; its outputs by elem_id (without the prefix)."""
    returned = handler.fn(*values)
    returned = returned if isinstance(returned, (list, tuple)) else [returned]
    names = [(getattr(block, "elem_id", None) or "").removeprefix("sliders_train_") for block in handler.outputs]
    assert len(returned) == len(names)
    return dict(zip(names, returned, strict=True))


def tab_values(demo, handler, **form):
    """The handler's input values: each widget's default, ``form`` (by field name) where given."""
    values = []
    for block in handler.inputs:
        name = (getattr(block, "elem_id", None) or "").removeprefix("sliders_train_")
        values.append(form[name] if name in form else block.value)
    return values


def test_train_tab_start_button_trains_a_tiny_slider(env, train_tab, jobs):
    from modules import sd_hijack

    start = tab_handler(train_tab, "sliders_train_start")
    assert getattr(start.inputs[0], "elem_id", None) == "sliders_train_task_id"
    out = press(start, tab_values(train_tab, start, task_id="task(sliders1)", **TAB_FORM))
    result = out["result"]
    assert out["preview_image"] is None and "Trained slider <b>tab_age</b> (2 iterations)" in result, result
    path = slider_path(env, "tab_age")
    assert os.path.isfile(path) and path in result
    job = next(j for j in jobs.jobs() if j.config.name == "tab_age")
    assert job.state == "done" and job.iteration == 2 and job.options.preview is False
    assert job.config.max_denoising_steps == 4 and job.config.rank == 2 and job.config.resolution == 64
    assert sd_hijack.calls == ["undo", "apply"]
    training = json.loads(load_slider(path).metadata["sliders.training"])
    assert training["iterations_done"] == 2 and training["lr"] == 0.01

    # A form with problems starts nothing and names them by the form's labels.
    count = len(jobs.jobs())
    result = press(start, tab_values(train_tab, start, task_id="task(sliders2)", **{**TAB_FORM, "positive": ""}))
    result = result["result"]
    assert "Training did not start" in result and "Positive prompt" in result and len(jobs.jobs()) == count
    result = press(start, tab_values(train_tab, start, task_id="task(sliders3)", **TAB_FORM))["result"]  # name taken
    assert "Training did not start" in result and "Slider name" in result and len(jobs.jobs()) == count

    assert "Nothing is training" in tab_handler(train_tab, "sliders_train_cancel").fn()


def test_train_tab_has_no_host_note_outside_forge(train_tab):
    assert "sliders_train_host_note" not in {getattr(b, "elem_id", None) for b in train_tab.blocks.values()}


def test_train_tab_cancel_then_resume(env, train_tab, jobs):
    from modules import shared

    start, resume = tab_handler(train_tab, "sliders_train_start"), tab_handler(train_tab, "sliders_train_resume")
    cancel = tab_handler(train_tab, "sliders_train_cancel")
    said = []

    def cancel_at_one(job):
        if job.state == "running" and job.iteration == 1 and not said:
            said.append(cancel.fn())  # the Cancel button, pressed while the job runs

    record_progress(jobs, also=cancel_at_one)
    form = {**TAB_FORM, "name": "tab_resumed", "iterations": 3}
    result = press(start, tab_values(train_tab, start, task_id="task(sliders4)", **form))["result"]
    assert said and "Cancelling <b>tab_resumed</b>" in said[0]
    assert "Cancelled <b>tab_resumed</b> at iteration 1 of 3" in result, result
    assert os.path.isfile(state_path(env, "tab_resumed")) and shared.state.interrupted
    # Resume: the gpu-call wrapper begins a new webui job, which clears the interrupt flag.
    result = press(resume, tab_values(train_tab, resume, task_id="task(sliders5)", **form))["result"]
    assert "Trained slider <b>tab_resumed</b> (3 iterations)" in result, result
    assert not os.path.exists(state_path(env, "tab_resumed"))


def test_train_tab_trains_a_slider_among_others_from_the_slider_list(env, train_tab, jobs):
    start = tab_handler(train_tab, "sliders_train_start")
    refresh = tab_handler(train_tab, "sliders_train_train_among_refresh")
    press(start, tab_values(train_tab, start, task_id="task(among1)", **{**TAB_FORM, "name": "tab_smile"}))
    # The refresh button offers the new slider; chosen names stay chosen, even one that is gone.
    update = refresh.fn(["gone"])
    assert "tab_smile" in update["choices"] and "gone" in update["choices"] and update["value"] == ["gone"]
    result = press(start, tab_values(train_tab, start, task_id="task(among2)",
                                     **{**TAB_FORM, "name": "tab_among", "train_among": ["tab_smile", "gone"]}))
    assert "Training did not start" in result["result"] and "no slider named" in result["result"]

    result = press(start, tab_values(train_tab, start, task_id="task(among3)",
                                     **{**TAB_FORM, "name": "tab_among", "train_among": ["tab_smile"]}))["result"]
    assert "Trained slider <b>tab_among</b>" in result, result
    job = next(j for j in jobs.jobs() if j.config.name == "tab_among")
    assert job.state == "done" and job.config.train_among == ["tab_smile"]
    training = json.loads(load_slider(slider_path(env, "tab_among")).metadata["sliders.training"])
    assert training["train_among"] == ["tab_smile"] and training["among_alphas"] == [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0]
    # Trained among it, the new slider differs from the same settings trained alone.
    press(start, tab_values(train_tab, start, task_id="task(among4)", **{**TAB_FORM, "name": "tab_alone"}))
    among, alone = load_slider(slider_path(env, "tab_among")), load_slider(slider_path(env, "tab_alone"))
    assert any(not torch.equal(m.up, alone.unet[p].up) for p, m in among.unet.items())


def test_the_background_thread_holds_the_queue_lock(env, api, jobs):
    from modules import call_queue

    held = []

    def probe(job):
        if job.state == "running" and not held:
            # the RLock is held by the training thread: another thread can't take it
            result = []

            def try_lock():
                result.append(call_queue.queue_lock.acquire(blocking=False))
                if result[0]:
                    call_queue.queue_lock.release()

            thread = threading.Thread(target=try_lock)
            thread.start()
            thread.join()
            held.append(not result[0])

    record_progress(jobs, also=probe)
    job = api.wait(api.start(settings("locked_age", iterations=1))["id"])
    assert job["state"] == "done" and held == [True]


# ------------------------------------------------------------------------------------------ known bugs


def test_an_api_job_after_an_interrupted_generation_still_trains(env, api):
    from modules import shared

    # The Interrupt button during a generation: the webui's state.end() leaves the flag set until the
    # next job's state.begin() (as the webui's own /sdapi/v1/txt2img does under the queue lock).
    shared.state.begin("txt2img")
    shared.state.interrupt()
    shared.state.end()
    job = api.wait(api.start(settings("after_interrupt", iterations=1))["id"])
    assert job["state"] == "done" and job["iteration"] == 1, job


def test_optimisations_come_back_when_preparing_the_model_fails(env, api, monkeypatch):
    from modules import sd_hijack

    import lib_sliders.webui.train_webui as train_webui

    def broken(*args, **kwargs):
        raise RuntimeError("the backend could not be built")

    monkeypatch.setattr(train_webui, "ModelBackend", broken)
    job = api.wait(api.start(settings("broken_backend"))["id"])
    assert job["state"] == "failed" and "could not be built" in job["error"]
    assert sd_hijack.calls == ["undo", "apply"]
