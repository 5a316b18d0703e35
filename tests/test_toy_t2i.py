"""The toy text-to-image model of the fidelity benchmark: real CLIP tokenizer, ldm UNet, webui-shaped surface."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from bench.common.toy_diffusion import linear_alphas_cumprod
from bench.toyworld import world
from bench.toyworld.model import ToyPixelDiffusion
from bench.toyworld.tokenizer import build_clip_tokenizer
from bench.toyworld.train_model import train
from lib_sliders.training.backend import ModelBackend, resolution_step
from lib_sliders.training.config import TextPrompt, TrainConfig
from lib_sliders.training.trainer import SliderTrainer


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("clip-tokenizer")


@pytest.fixture(scope="module")
def model(tokenizer_dir):
    return ToyPixelDiffusion(tokenizer_dir).eval().requires_grad_(False)


def test_tokenizer_is_clips(tokenizer_dir):
    tokenizer = build_clip_tokenizer(tokenizer_dir)
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert len(tokenizer) == 49408 and tokenizer.model_max_length == 77
    again = build_clip_tokenizer(tokenizer_dir)  # idempotent: the files are reused
    assert again("a large red circle").input_ids == tokenizer("a large red circle").input_ids


def test_model_shapes_and_webui_surface(model):
    unet = model.model.diffusion_model
    assert type(unet).__module__ == "ldm.modules.diffusionmodules.openaimodel"
    assert unet.in_channels == 3 and model.latent_channels == 3 and model.latent_scale == 1
    assert model.parameterization == "eps" and model.is_sd1 and not model.is_sdxl
    # The bench model is standalone (no test imports); its schedule must equal ldm's own make_beta_schedule.
    assert torch.equal(model.alphas_cumprod, linear_alphas_cumprod())
    assert model.alphas_cumprod[0].item() == pytest.approx(1 - 0.00085) and model.alphas_cumprod.shape == (1000,)
    cond = model.get_learned_conditioning(["a large red circle in the centre on a dark background", ""])
    assert cond.shape == (2, 77, 128)
    x = torch.randn(2, 3, 32, 32)
    assert model.apply_model(x, torch.tensor([1, 999]), cond).shape == x.shape
    assert torch.equal(model.get_first_stage_encoding(model.encode_first_stage(x)), x)
    assert torch.equal(model.decode_first_stage(x), x)


def test_model_backend(model):
    backend = ModelBackend(model)
    assert backend.latent_scale == 1 and backend.unet is model.model.diffusion_model
    cond = backend.encode_prompts(["a small blue square", "a huge green triangle"])
    assert cond.shape == (2, 77, 128)
    x = torch.randn(2, 3, 32, 32)
    eps = backend.predict_eps(x, torch.tensor([10, 500]), cond)
    assert eps.shape == x.shape and torch.isfinite(eps).all()
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(backend.encode_images(images), images)


def test_a_slider_trains_at_the_toy_models_own_32_px(model):
    backend = ModelBackend(model)
    assert resolution_step(backend) == 4  # no VAE, two downsamplings
    config = TrainConfig(name="size", prompts=[TextPrompt(target="a circle", positive="a large circle",
                                                          negative="a small circle")],
                         iterations=2, resolution=32, max_denoising_steps=4, rank=2, lr=1e-2)
    result = SliderTrainer(backend, config, effect_samples=1, start_samples=0).train()
    assert result.iterations == 2 and result.effect is not None


def test_sample_returns_uint8_images(model):
    images = model.sample(["a red circle", "a blue square"], steps=2, guidance=4.0, seed=0)
    assert images.shape == (2, 32, 32, 3) and images.dtype == np.uint8


def test_train_lowers_loss_and_save_load_round_trip(tokenizer_dir, tmp_path):
    torch.manual_seed(0)
    fresh = ToyPixelDiffusion(tokenizer_dir, seed=1)
    images, captions, _ = world.make_dataset(4, seed=3)
    x0 = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    generator = torch.Generator().manual_seed(0)
    t = torch.tensor([100, 300, 600, 900])
    noise = torch.randn(x0.shape, generator=generator)
    a = fresh.alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise

    def fixed_loss(m):
        with torch.no_grad():
            return torch.nn.functional.mse_loss(m.apply_model(x_t, t, m.get_learned_conditioning(captions)), noise)

    before = fixed_loss(fresh)
    trained, losses = train(steps=3, batch=4, dataset_size=4, seed=3, lr=2e-3, model=fresh, log_every=0)
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert fixed_loss(trained) < before

    path = tmp_path / "toy.safetensors"
    trained.save(path)
    loaded = ToyPixelDiffusion(tokenizer_dir, seed=7).load(path)
    for (name, p), (name2, q) in zip(trained.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert name == name2 and torch.equal(p, q), name


def test_sampling_tells_the_engine_each_step(model):
    seen = []
    model.sample(["a red circle"], steps=3, guidance=4.0, seed=0, on_step=lambda i, n: seen.append((i, n)))
    assert seen == [(0, 3), (1, 3), (2, 3)]


def test_prompt_switch_conditions_on_the_later_prompt_from_its_step_on():
    # The trained fixture: a random model's images saturate, and half a run of another prompt can vanish in them.
    fixture = os.path.join(os.path.dirname(__file__), "..", "bench", "toyworld", "toy_t2i.safetensors")
    trained = ToyPixelDiffusion.from_file(fixture).eval().requires_grad_(False)

    def sample(prompt, switch=None):
        return trained.sample([prompt], steps=4, guidance=4.0, seed=0, switch=switch)

    red, blue = sample("a red circle"), sample("a blue circle")
    assert np.array_equal(sample("a red circle", (0, ["a blue circle"])), blue)  # from the first step: the edit
    assert np.array_equal(sample("a red circle", (4, ["a blue circle"])), red)  # after the last step: never
    halfway = sample("a red circle", (2, ["a blue circle"]))
    assert not np.array_equal(halfway, red) and not np.array_equal(halfway, blue)
