"""SD WebUI Forge only, over its HTTP API (see conftest.py): what differs from A1111 there.

``test_webui_http.py`` runs on Forge too (generation is the same job flow); these add the Forge-specific checks:
training is refused before a job exists, Forge's own LoRA (its patchers merge into the weights the sliders' hooks
sit on) leaves nothing behind beside a slider, and the text-encoder path through Forge's CLIP (stored in fp16 on a
CPU, computed in fp32) is the identity at α 0. Skipped on the AUTOMATIC1111 webui.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import pytest

from .test_webui_http import PROMPT, differs

pytestmark = pytest.mark.integration


def test_host_is_named_forge_in_the_refusal(forge):
    if not forge.training_refusal:
        pytest.skip("this Forge build trains sliders: nothing refused")
    assert "SD WebUI Forge" in forge.training_refusal and "training" in forge.training_refusal


def test_training_is_refused_before_a_job_exists(forge):
    if not forge.training_refusal:
        pytest.skip("this Forge build trains sliders: nothing refused")
    jobs = len(forge.request("GET", "/sliders/v1/train"))
    body = {"name": "it_forge_refused", "iterations": 2, "resolution": 64, "max_denoising_steps": 4, "rank": 4,
            "prompts": [{"target": "person", "positive": "person, old", "negative": "person, young"}]}
    request = urllib.request.Request(forge.url + "/sliders/v1/train", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=60)
    assert refused.value.code == 422
    (problem,) = json.loads(refused.value.read())["detail"]
    assert problem["field"] == "webui" and "not supported on SD WebUI Forge" in problem["problem"]
    assert len(forge.request("GET", "/sliders/v1/train")) == jobs


def test_forges_lora_beside_a_slider_leaves_nothing_behind(forge, baseline):
    forge.request("POST", "/sdapi/v1/refresh-loras")
    slider_alone, _ = forge.txt2img(f"{PROMPT} <slider:it_age:2>")
    lora, _ = forge.txt2img(f"{PROMPT} <lora:it_lora:1>")
    assert differs(lora[0], baseline) > 1.0
    both, info = forge.txt2img(f"{PROMPT} <lora:it_lora:1> <slider:it_age:2>")
    three, _ = forge.txt2img(f"{PROMPT} <slider:it_age:3>")  # same file: Forge's merge + our hooks add up
    assert differs(both[0], three[0]) < 0.5
    assert "Slider hashes: " in info["infotexts"][0]
    plain, _ = forge.txt2img(PROMPT)
    assert np.array_equal(plain[0], baseline)  # Forge restored its LoRA backups, no hook left
    again, _ = forge.txt2img(f"{PROMPT} <slider:it_age:2>")
    assert np.array_equal(again[0], slider_alone[0])
    lora_again, _ = forge.txt2img(f"{PROMPT} <lora:it_lora:1>")
    assert np.array_equal(lora_again[0], lora[0])
    plain, _ = forge.txt2img(PROMPT)
    assert np.array_equal(plain[0], baseline)


def test_text_encoder_slider_on_forges_clip(forge, baseline):
    zero, _ = forge.txt2img(f"{PROMPT} <slider:it_text:0>")
    assert np.array_equal(zero[0], baseline)
    moved, _ = forge.txt2img(f"{PROMPT} <slider:it_text:2>")
    assert differs(moved[0], baseline) > 1.0
    # one α per batch for a text-encoder part: a strip of it gives each image its own job's conds
    strip, _ = forge.txt2img(PROMPT, seed=1, n_iter=2,
                             alwayson_scripts=forge.slider_args([{"name": "it_text", "alpha": "0..2"}]))
    assert np.array_equal(strip[0], baseline) and differs(strip[1], moved[0]) < 0.5
    plain, _ = forge.txt2img(PROMPT)
    assert np.array_equal(plain[0], baseline)


def test_per_image_alpha_in_one_batch(forge):
    """Forge's sampling function runs cond and uncond chunks of the batch in one UNet call: each image keeps its α."""
    strip, info = forge.txt2img(PROMPT, seed=10, batch_size=2,
                                alwayson_scripts=forge.slider_args([{"name": "it_age", "alpha": "0..2"}]))
    assert info["all_seeds"] == [10, 10]  # a strip shares the first image's seed (sliders_strip_same_seed)
    for i, alpha in enumerate([0, 2]):
        alone, _ = forge.txt2img(PROMPT, seed=10,
                                 alwayson_scripts=forge.slider_args([{"name": "it_age", "alpha": alpha}]))
        assert differs(strip[i], alone[0]) < 0.5, f"image {i} (α={alpha})"
    assert differs(strip[0], strip[1]) > 1.0
