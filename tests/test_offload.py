"""Text encoders and VAE wait on the CPU during a GPU training run, and come back exactly as they were."""

from __future__ import annotations

import pytest
import torch

from bench.common.toy_diffusion import make_toy_model
from lib_sliders.training.backend import ModelBackend
from lib_sliders.training.config import TextPrompt, TrainConfig
from lib_sliders.training.offload import modules_on_cpu
from lib_sliders.training.trainer import SliderTrainer

AGE = TextPrompt(target="person", positive="person, very old", negative="person, very young", guidance=2.0)


@pytest.mark.parametrize("arch", ["sd1", "sdxl"])
def test_encoders_are_the_text_encoders_and_the_vae_each_once(arch):
    model = make_toy_model(arch)
    encoders = ModelBackend(model).encoders()
    text = model.conditioner if arch == "sdxl" else model.cond_stage_model  # SDXL: cond_stage_model is an alias
    assert encoders == [text, model.first_stage_model]


def test_modules_already_on_the_cpu_or_spread_over_devices_are_left_alone():
    on_cpu = torch.nn.Linear(2, 2)
    spread = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2).to("meta"))
    with modules_on_cpu([on_cpu, spread]) as moved:
        assert moved == 0
    assert spread[1].weight.device.type == "meta"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_gpu_run_keeps_the_encoders_on_the_cpu_and_puts_them_back_bitwise():
    model = make_toy_model("sdxl").cuda()
    backend = ModelBackend(model)
    before = {name: p.clone() for name, p in model.named_parameters() if not name.startswith("model.")}
    identity = {name: p for name, p in model.named_parameters()}
    seen = []
    config = TrainConfig(name="age", prompts=[AGE], iterations=2, resolution=64, rank=4, max_denoising_steps=4,
                         estimate_start=False)
    trainer = SliderTrainer(backend, config, effect_samples=0, progress_every=1,
                            on_progress=lambda _: seen.append(next(model.conditioner.parameters()).device.type))
    trainer.train()
    assert seen == ["cpu", "cpu"]
    for name, parameter in model.named_parameters():
        assert parameter is identity[name] and parameter.device.type == "cuda"
        if name in before:
            assert torch.equal(parameter, before[name]), name
