"""The start estimate: where the model decides a slider's attribute, and the start the trainer saves from it."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import pytest
import torch
from image_pairs import write_pairs

from bench.common.toy_diffusion import make_toy_model
from lib_sliders.files.slider_file import load_slider
from lib_sliders.training.backend import ModelBackend
from lib_sliders.training.config import TextPrompt, TrainConfig
from lib_sliders.training.start_estimate import STEPS, estimate_start, probe_rows, recommended_start
from lib_sliders.training.trained_slider import save_trained_slider
from lib_sliders.training.trainer import SliderTrainer

AGE = TextPrompt(target="person", positive="person, very old", negative="person, very young",
                 preservation=["male", "female"], guidance=2.0)
TOY_MODEL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "toyworld",
                         "toy_t2i.safetensors")


def test_the_recommended_start_is_the_last_one_that_keeps_enough_open():
    assert recommended_start([1.0, 0.9, 0.8, 0.72, 0.69, 0.75]) == pytest.approx(3 / STEPS)  # stops at the first miss
    assert recommended_start([1.0, 0.5, 0.9]) == 0.0
    assert recommended_start([1.0, float("nan"), 0.9]) == 0.0  # a probe that measured nothing recommends nothing
    assert recommended_start([1.0] * 9) == pytest.approx(0.8)


def test_probe_rows_go_through_the_entries_and_their_concepts():
    other = TextPrompt(target="", positive="smiling", negative="frowning")
    rows = probe_rows([AGE, other], 5)
    assert rows == [("person, male", "person, very old, male", "person, very young, male"),
                    ("person, female", "person, very old, female", "person, very young, female"),
                    ("", "smiling", "frowning"),
                    ("person, male", "person, very old, male", "person, very young, male"),
                    ("person, female", "person, very old, female", "person, very young, female")]


@pytest.fixture(scope="module")
def sd1():
    return make_toy_model("sd1")


def small_config(**overrides) -> TrainConfig:
    settings = dict(name="age", prompts=[AGE], iterations=3, resolution=64, lr=1e-2, max_denoising_steps=4, seed=1)
    settings.update(overrides)
    return TrainConfig(**settings)


def test_the_trainer_saves_the_estimated_start_and_trains_the_same_slider(sd1, tmp_path):
    unet = sd1.model.diffusion_model
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    estimated = SliderTrainer(ModelBackend(sd1), small_config(default_start=0.25)).train()
    plain = SliderTrainer(ModelBackend(sd1), small_config(default_start=0.25, estimate_start=False)).train()
    assert all(torch.equal(v, before[k]) for k, v in unet.state_dict().items())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in unet.modules())

    estimate = estimated.start_estimate
    assert plain.start_estimate is None and plain.recommended_start == 0.25
    assert len(estimate.open_share) == 9 and estimate.open_share[0] == 1.0
    assert all(0 <= share for share in estimate.open_share)
    assert estimated.recommended_start == estimate.start == recommended_start(list(estimate.open_share))
    assert estimated.losses == plain.losses  # the probe draws its own noise: training is unchanged

    header = save_trained_slider(estimated, tmp_path / "age.safetensors")
    assert json.loads(header["sliders.start_estimate"])["open_share"][0] == 1.0
    assert load_slider(tmp_path / "age.safetensors").metadata["sliders.default_start"] == json.dumps(estimate.start)
    header = save_trained_slider(plain, tmp_path / "plain.safetensors")
    assert "sliders.start_estimate" not in header and header["sliders.default_start"] == "0.25"


def test_an_image_slider_gets_its_start_from_the_slider_it_became(sd1, tmp_path):
    config = small_config(mode="image", prompts=[], pairs=write_pairs(tmp_path, 2), default_start=0.25)
    unet = sd1.model.diffusion_model
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    estimated = SliderTrainer(ModelBackend(sd1), config).train()
    plain = SliderTrainer(ModelBackend(sd1), replace(config, estimate_start=False)).train()
    assert all(torch.equal(v, before[k]) for k, v in unet.state_dict().items())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in unet.modules())

    estimate = estimated.start_estimate
    assert plain.start_estimate is None and plain.recommended_start == 0.25
    # The share at step 0 is 1 only when the slider switched on moved the probe's images at all.
    assert len(estimate.open_share) == 9 and estimate.open_share[0] == 1.0
    assert estimated.recommended_start == estimate.start == recommended_start(list(estimate.open_share))
    assert "between the slider at ±1 is still open" in estimate.summary()
    assert estimated.losses == plain.losses  # probed after training, from its own noise
    header = save_trained_slider(estimated, tmp_path / "image.safetensors")
    saved = json.loads(header["sliders.start_estimate"])
    assert saved["open_share"] == [round(v, 4) for v in estimate.open_share] and saved["between"] == "the slider at ±1"


@pytest.mark.skipif(not os.path.exists(TOY_MODEL), reason="the toy model fixture is not there")
def test_on_the_toy_model_a_colour_is_decided_later_than_a_background():
    # The fidelity benchmark's finding (a start costs the background slider its effect, and makes the colour
    # slider cleaner) is what the estimate should say: the toy model settles the background in its first steps.
    from bench.toyworld.model import ToyPixelDiffusion

    backend = ModelBackend(ToyPixelDiffusion.from_file(TOY_MODEL).eval())
    shapes = ["circle", "square", "triangle"]
    estimates = {}
    for name, positive, negative in [("colour", "blue", "red"), ("background", "light background", "dark background")]:
        prompt = TextPrompt(target="", positive=positive, negative=negative, preservation=shapes)
        estimates[name] = estimate_start(backend.predict_eps, backend.encode_prompts, backend.alphas_cumprod,
                                         [prompt], (3, 32, 32), torch.Generator().manual_seed(0), samples=4)
    colour, background = estimates["colour"], estimates["background"]
    assert background.start <= 0.1 and colour.start >= 0.4, (colour, background)
    assert colour.open_share[4] > background.open_share[4] + 0.4, (colour, background)
