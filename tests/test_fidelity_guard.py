"""The guard against sliders that silently do nothing: a short run on the committed toy model must move its attribute.

The toy model (``bench/toyworld/toy_t2i.safetensors``; docs/fidelity.md has the command that
regenerates it) follows its captions' shape, colour, size and background, so a size slider trained on it for a
minute on a CPU must make shapes grow with α, in order, while colour and position stay put.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from bench.fidelity import generate, noise_for
from bench.fidelity_lib.measure import Grid
from bench.fidelity_lib.sliders import SLIDERS, caption_without
from bench.toyworld import world
from bench.toyworld.model import ToyPixelDiffusion
from lib_sliders.training.backend import ModelBackend
from lib_sliders.training.config import TrainConfig
from lib_sliders.training.trainer import SliderTrainer

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "bench", "toyworld", "toy_t2i.safetensors")


@pytest.fixture(scope="module")
def toy_model():
    return ToyPixelDiffusion.from_file(FIXTURE)


def test_the_fixture_follows_the_background_word(toy_model):
    # The background slider needs a model that reads the word (the first fixture didn't: same image for every word).
    attributes = [world.sample_attributes(np.random.default_rng(seed)) for seed in range(8)]
    noise = noise_for(8, 11)
    measured = {}
    for word in ("dark", "light"):
        prompts = [caption_without(a, "background", word) for a in attributes]
        images = generate(toy_model, prompts, noise, np.zeros(1), [], steps=10, guidance=4.0)[:, 0]
        measured[word] = np.array([world.measure(image).background for image in images])
    assert (measured["light"] > measured["dark"]).all(), measured
    assert measured["light"].mean() - measured["dark"].mean() > 0.3, measured  # 0.72 when written


def test_a_short_size_slider_run_moves_size_in_order_and_little_else(toy_model):
    spec = next(s for s in SLIDERS if s.name == "size")
    config = TrainConfig(name="size", prompts=[spec.prompt], iterations=60, resolution=32, rank=4,
                         max_denoising_steps=10, lr=1e-3, seed=0)
    torch.manual_seed(0)
    result = SliderTrainer(ModelBackend(toy_model), config, effect_samples=2, start_samples=0).train()
    assert not result.effect.does_nothing, result.effect.summary()

    alphas = np.array([-2.0, 0.0, 2.0])
    attributes = [world.sample_attributes(np.random.default_rng(seed)) for seed in range(8)]
    prompts = [caption_without(a, "size") for a in attributes]
    grid = Grid.of(alphas, generate(toy_model, prompts, noise_for(8, 5), alphas, [result.network], steps=10,
                                    guidance=4.0))
    sizes = grid.values["size"]
    means = [float(np.nanmean(sizes[:, i])) for i in range(len(alphas))]
    assert means[0] < means[1] < means[2], means  # the slider makes shapes grow with α, in order
    assert means[2] - means[0] > 0.2, means  # by a visible amount (sizes span 0.2–0.6; 0.36 when written)
    for column in (0, 2):
        change = grid.change_at("size", column)
        assert change["interference"] < 0.25, change  # colour, background, position about unchanged (0.10–0.14)


def test_a_slider_start_holds_the_slider_off_for_the_first_steps(toy_model):
    # Random-weight toy models saturate their pixels; the trained fixture shows a slider's change in uint8.
    config = TrainConfig(name="size", prompts=[next(s for s in SLIDERS if s.name == "size").prompt], iterations=1,
                         resolution=32, max_denoising_steps=4, rank=2)
    network = SliderTrainer(ModelBackend(toy_model), config, effect_samples=0, start_samples=0).train().network
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in network.unet.values():  # a slider strong enough to show in uint8 pixels
            module.up.copy_(0.05 * torch.randn(module.up.shape, generator=generator))
    noise = noise_for(2, 3)
    prompts, alphas = ["a red circle", "a blue square"], np.array([1.0])
    base = generate(toy_model, prompts, noise, alphas, [], steps=4, guidance=4.0)
    always = generate(toy_model, prompts, noise, alphas, [network], steps=4, guidance=4.0)
    late = generate(toy_model, prompts, noise, alphas, [network], steps=4, guidance=4.0, start=0.5)
    never = generate(toy_model, prompts, noise, alphas, [network], steps=4, guidance=4.0, start=1.0)
    assert np.array_equal(never, base)  # off for every step: the model's own images
    assert not np.array_equal(always, base) and not np.array_equal(late, base) and not np.array_equal(late, always)


def test_a_held_slider_keeps_its_alpha_per_seed_while_the_other_is_varied(toy_model):
    # The composition's "others held" grid: network 1 at a fixed α per seed at every column of network 0's grid.
    config = TrainConfig(name="size", prompts=[next(s for s in SLIDERS if s.name == "size").prompt], iterations=1,
                         resolution=32, max_denoising_steps=4, rank=2)
    generator = torch.Generator().manual_seed(1)
    networks = []
    for _ in range(2):
        network = SliderTrainer(ModelBackend(toy_model), config, effect_samples=0, start_samples=0).train().network
        with torch.no_grad():
            for module in network.unet.values():
                module.up.copy_(0.05 * torch.randn(module.up.shape, generator=generator))
        networks.append(network)
    noise, prompts, alphas = noise_for(2, 3), ["a red circle", "a blue square"], np.array([-1.0, 1.0])
    first_alone = generate(toy_model, prompts, noise, alphas, networks[:1], steps=4, guidance=4.0)
    held_off = generate(toy_model, prompts, noise, alphas, networks, steps=4, guidance=4.0,
                        held={1: np.zeros(2)})
    # Held at 0: as if it were not there (to rounding: the two sliders are packed into one hook of rank 4).
    assert np.abs(held_off.astype(int) - first_alone).max() <= 1
    both = generate(toy_model, prompts, noise, alphas, networks, steps=4, guidance=4.0)
    held = generate(toy_model, prompts, noise, alphas, networks, steps=4, guidance=4.0,
                    held={1: np.array([1.0, -1.0])})
    assert np.array_equal(held[0, 1], both[0, 1]) and np.array_equal(held[1, 0], both[1, 0])  # held = varied there
    for other in (both, first_alone):  # seed 0 at α −1 with the held one at +1: neither both at −1 nor one alone
        assert np.abs(held[0, 0].astype(int) - other[0, 0]).max() > 8
