"""Training over the real webui's HTTP API on the loaded (random-weight) checkpoint, then using the slider."""

from __future__ import annotations

import json
import time
import uuid

import numpy as np
import pytest

pytestmark = pytest.mark.integration

PROMPT = "a photo of a person"


@pytest.fixture(autouse=True)
def training_host(webui):
    """Training runs only where the extension trains (not on SD WebUI Forge yet: ``test_webui_forge_http.py``
    checks the refusal there)."""
    if webui.training_refusal:
        pytest.skip(f"this host refuses training: {webui.training_refusal}")


def tiny_config(name: str, **overrides) -> dict:
    return {"name": name, "mode": "text", "iterations": 2, "resolution": 64, "max_denoising_steps": 4,
            "rank": 4, "seed": 3, "lr": 0.01, "alpha_range": [-2, 2],
            "prompts": [{"target": "person", "positive": "person, very old", "negative": "person, very young"}],
            **overrides}


def wait_until_finished(webui, job_id: str, timeout: float = 1500) -> dict:
    start = time.time()
    while time.time() - start < timeout:
        job = webui.request("GET", f"/sliders/v1/train/{job_id}")
        if job["state"] not in ("queued", "running"):
            return job
        time.sleep(2)
    raise AssertionError(f"training job {job_id} still running after {timeout} s")


def test_bad_fields_are_422_with_their_names(webui):
    import urllib.error
    import urllib.request

    body = tiny_config("x" * 3, rank=0, preset="nope", overwrite="yes")
    request = urllib.request.Request(webui.url + "/sliders/v1/train", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=60)
    assert caught.value.code == 422
    fields = {d["field"] for d in json.loads(caught.value.read())["detail"]}
    assert "overwrite" in fields
    body.pop("overwrite")
    request = urllib.request.Request(webui.url + "/sliders/v1/train", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=60)
    assert {"rank", "preset"} <= {d["field"] for d in json.loads(caught.value.read())["detail"]}


def test_train_then_generate_with_the_new_slider(webui):
    name = f"it_trained_{uuid.uuid4().hex[:6]}"
    before, _ = webui.txt2img(PROMPT, seed=5)
    job = webui.request("POST", "/sliders/v1/train", {**tiny_config(name), "preview": True})
    assert job["state"] in ("queued", "running")
    job = wait_until_finished(webui, job["id"])
    assert job["state"] == "done", job
    assert job["iteration"] == 2 and job["loss"] is not None and job["effect"] is not None
    assert job["output"].endswith(f"{name}.safetensors") and job["preview"].endswith(f"{name}.png")
    after, _ = webui.txt2img(PROMPT, seed=5)
    assert np.array_equal(before[0], after[0])  # the model is exactly as it was
    listed = {s["name"]: s for s in webui.request("GET", "/sliders/v1/sliders")}
    assert name in listed and listed[name]["alpha_range"] == [-2.0, 2.0]
    assert '"iterations_done": 2' in listed[name]["metadata"]["sliders.training"]
    # The start estimated from the loaded model is said in the job and saved as the slider's default start.
    estimate = json.loads(listed[name]["metadata"]["sliders.start_estimate"])
    assert listed[name]["default_start"] == estimate["start"] and len(estimate["open_share"]) == 9
    assert any(m.startswith(f"recommended start {estimate['start']:g}") for m in job["messages"]), job["messages"]
    moved, _ = webui.txt2img(f"{PROMPT} <slider:{name}:2>", seed=5)
    assert float(np.abs(moved[0] - before[0]).mean()) > 0.05
    with pytest.raises(AssertionError, match="HTTP 422.*exists"):  # never overwritten unasked
        webui.request("POST", "/sliders/v1/train", tiny_config(name))


def test_a_slider_trained_from_its_start_says_so_and_acts_from_there(webui):
    name = f"it_from_start_{uuid.uuid4().hex[:6]}"
    before, _ = webui.txt2img(PROMPT, seed=5)
    body = tiny_config(name, default_start=0.5, estimate_start=False, train_from_start=True)
    job = wait_until_finished(webui, webui.request("POST", "/sliders/v1/train", {**body, "preview": False})["id"])
    assert job["state"] == "done", job
    after, _ = webui.txt2img(PROMPT, seed=5)
    assert np.array_equal(before[0], after[0])  # the model is exactly as it was
    listed = {s["name"]: s for s in webui.request("GET", "/sliders/v1/sliders")}
    training = json.loads(listed[name]["metadata"]["sliders.training"])
    assert training["train_from_start"] is True and training["trained_from"] == 0.5
    assert listed[name]["default_start"] == 0.5
    moved, _ = webui.txt2img(f"{PROMPT} <slider:{name}:2>", seed=5)  # 3 steps: on at the last (2/3 ≥ 0.5)
    assert float(np.abs(moved[0] - before[0]).mean()) > 0.01


def test_cancel_then_resume(webui):
    name = f"it_cancel_{uuid.uuid4().hex[:6]}"
    job = webui.request("POST", "/sliders/v1/train", {**tiny_config(name, iterations=40), "preview": False})
    start = time.time()
    while webui.request("GET", f"/sliders/v1/train/{job['id']}")["iteration"] < 1 and time.time() - start < 900:
        time.sleep(1)
    webui.request("POST", f"/sliders/v1/train/{job['id']}/cancel")
    cancelled = wait_until_finished(webui, job["id"])
    assert cancelled["state"] == "cancelled" and 1 <= cancelled["iteration"] < 40 and cancelled["output"]
    resumed = webui.request("POST", "/sliders/v1/train", {**tiny_config(name, iterations=cancelled["iteration"] + 1),
                                                         "resume": True, "preview": False})
    resumed = wait_until_finished(webui, resumed["id"])
    assert resumed["state"] == "done" and resumed["iteration"] == cancelled["iteration"] + 1, resumed


def test_image_slider_from_before_after_pairs(webui, tmp_path):
    """Pairs on disk (the webui runs on this machine), trained over HTTP, then applied."""
    from PIL import Image

    pairs = []
    for index in range(2):
        pixels = np.random.default_rng(index).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        before, after = tmp_path / f"before_{index}.png", tmp_path / f"after_{index}.png"
        Image.fromarray(pixels // 2).save(before)  # darker → brighter
        Image.fromarray(np.clip(pixels.astype(int) + 60, 0, 255).astype(np.uint8)).save(after)
        pairs.append({"before": str(before), "after": str(after)})
    name = f"it_image_{uuid.uuid4().hex[:6]}"
    config = {"name": name, "mode": "image", "pairs": pairs, "scales": [1, 2], "iterations": 2, "resolution": 64,
              "lr": 0.01, "rank": 4, "seed": 3}
    job = wait_until_finished(webui, webui.request("POST", "/sliders/v1/train", config)["id"])
    assert job["state"] == "done", job
    assert job["output"].endswith(f"{name}.safetensors")
    listed = {s["name"]: s for s in webui.request("GET", "/sliders/v1/sliders")}
    assert '"mode": "image"' in listed[name]["metadata"]["sliders.prompts"]
    before, _ = webui.txt2img(PROMPT, seed=5)
    moved, _ = webui.txt2img(f"{PROMPT} <slider:{name}:2>", seed=5)
    assert float(np.abs(moved[0] - before[0]).mean()) > 0.05


def test_train_among_an_installed_slider(webui):
    """``train_among`` names sliders of the list: loaded from their files, on while the new one trains, recorded."""
    first = f"it_among_a_{uuid.uuid4().hex[:6]}"
    assert wait_until_finished(webui, webui.request("POST", "/sliders/v1/train", tiny_config(first))["id"])[
        "state"] == "done"
    with pytest.raises(AssertionError, match=r"HTTP 422.*train_among\[1\].*no slider named.*it_gone"):
        webui.request("POST", "/sliders/v1/train", tiny_config(f"{first}_x", train_among=[first, "it_gone"]))
    name = f"it_among_b_{uuid.uuid4().hex[:6]}"
    before, _ = webui.txt2img(PROMPT, seed=5)
    job = wait_until_finished(webui, webui.request("POST", "/sliders/v1/train",
                                                   tiny_config(name, train_among=[first]))["id"])
    assert job["state"] == "done", job
    after, _ = webui.txt2img(PROMPT, seed=5)
    assert np.array_equal(before[0], after[0])  # neither slider is left in the model
    listed = {s["name"]: s for s in webui.request("GET", "/sliders/v1/sliders")}
    training = json.loads(listed[name]["metadata"]["sliders.training"])
    assert training["train_among"] == [first] and training["among_alphas"] == [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0]
    both, _ = webui.txt2img(f"{PROMPT} <slider:{first}:1> <slider:{name}:2>", seed=5)
    assert float(np.abs(both[0] - before[0]).mean()) > 0.05


def test_training_right_after_a_builtin_lora_generation_trains_on_the_bare_model(webui):
    """The built-in Lora stays merged in the weights after a ``<lora:…>`` generation until each layer's next
    forward: training must take it off first (and never back it up as part of the model)."""
    webui.request("POST", "/sdapi/v1/refresh-loras")
    plain, _ = webui.txt2img(PROMPT, seed=5)
    lora, _ = webui.txt2img(f"{PROMPT} <lora:it_lora:1>", seed=5)
    assert float(np.abs(lora[0] - plain[0]).mean()) > 1.0
    name = f"it_after_lora_{uuid.uuid4().hex[:6]}"
    body = tiny_config(name, estimate_start=False, preview=False)
    job = wait_until_finished(webui, webui.request("POST", "/sliders/v1/train", body)["id"])
    assert job["state"] == "done", job
    after, _ = webui.txt2img(PROMPT, seed=5)
    assert np.array_equal(after[0], plain[0])  # no Lora left in the weights
    again, _ = webui.txt2img(f"{PROMPT} <lora:it_lora:1>", seed=5)
    assert np.array_equal(again[0], lora[0])  # and the Lora still applies as before
    # Trained on the bare model: the same run after a plain generation gives the same slider.
    reference = f"it_after_plain_{uuid.uuid4().hex[:6]}"
    webui.txt2img(PROMPT, seed=5)
    job_plain = wait_until_finished(webui, webui.request("POST", "/sliders/v1/train",
                                                         {**body, "name": reference})["id"])
    assert job_plain["state"] == "done", job_plain
    assert job["loss"] == job_plain["loss"], (job["loss"], job_plain["loss"])
    import safetensors.torch

    trained, expected = (safetensors.torch.load_file(j["output"]) for j in (job, job_plain))
    assert trained.keys() == expected.keys()
    assert all(np.array_equal(trained[k].float().numpy(), expected[k].float().numpy()) for k in trained)
