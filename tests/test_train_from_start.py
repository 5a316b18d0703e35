"""Training from the start: a slider used from a fraction of the steps trains only the steps it acts on."""

from __future__ import annotations

import contextlib
import json

import pytest
import safetensors
import safetensors.torch
import torch
from image_pairs import write_pairs

from bench.common.toy_diffusion import make_toy_model
from lib_sliders.apply.engine import ActiveSlider
from lib_sliders.training.backend import ModelBackend
from lib_sliders.training.config import TextPrompt, TrainConfig
from lib_sliders.training.image_objective import ImageObjective
from lib_sliders.training.schedule import ddim_timesteps, first_step_on, first_training_step
from lib_sliders.training.text_objective import TextObjective
from lib_sliders.training.trained_slider import training_metadata
from lib_sliders.training.trainer import SliderTrainer

AGE = TextPrompt(target="person", positive="person, very old", negative="person, very young",
                 preservation=["male", "female"], guidance=2.0)


def small_config(**overrides) -> TrainConfig:
    settings = dict(name="age", prompts=[AGE], iterations=4, resolution=64, lr=1e-2, max_denoising_steps=10,
                    rank=4, seed=1, estimate_start=False)
    settings.update(overrides)
    return TrainConfig(**settings)


@pytest.fixture(scope="module")
def sd1():
    return make_toy_model("sd1")


class RecordingRun:
    """The trainer's run state as far as the text objective's denoising uses it: records each sampling call's
    timestep and the α the slider was at."""

    def __init__(self):
        self.generator = torch.Generator().manual_seed(0)
        self.alpha = None
        self.calls: list[tuple[int, float]] = []

    @contextlib.contextmanager
    def sampling_slider(self, alpha: float):
        self.alpha = alpha
        yield
        self.alpha = None

    def predict_sampling(self, x_t, t, cond):
        self.calls.append((int(t[0]), self.alpha))
        return torch.zeros_like(x_t)


@pytest.mark.parametrize("num_steps", [4, 10, 20, 50])
def test_the_first_step_is_where_the_engines_gate_opens(num_steps):
    gate = ActiveSlider(network=None, start=0.0)
    for start in (0.0, 0.05, 0.1, 0.25, 0.3, 0.5, 0.7, 0.95, 1.0):
        gate.start = start
        opens = next((i for i in range(num_steps) if gate.is_on(i / num_steps)), num_steps)
        assert first_step_on(start, num_steps) == opens, (start, num_steps)
    assert first_training_step(0.0, num_steps) == 1  # step 0 is pure noise: never a training point
    assert first_training_step(1.0, num_steps) == num_steps - 1  # a start past the last step still trains one


def test_a_text_slider_trains_and_acts_only_from_its_start(sd1):
    backend, run = ModelBackend(sd1), RecordingRun()
    objective = TextObjective(backend, small_config(), run, start=0.3)
    assert objective.first_step == 3
    assert {k for _ in range(300) for (k,) in [objective._draw_steps()]} == set(range(3, 10))
    several = TextObjective(backend, small_config(timesteps_per_trajectory=3), run, start=0.3)
    for _ in range(100):
        steps = several._draw_steps()
        assert len(set(steps)) == 3 and steps == sorted(steps) and min(steps) >= 3

    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    points = objective.denoise(noise, objective.entries[:1], [3, 5], slider_alpha=-1.0)
    timesteps = ddim_timesteps(10).tolist()
    assert [t for t, _ in run.calls] == timesteps[:5]
    assert [alpha for _, alpha in run.calls] == [0.0, 0.0, 0.0, -1.0, -1.0]  # off before the start, as when used
    assert [int(t[0]) for _, t in points] == [timesteps[3], timesteps[5]]

    plain_run = RecordingRun()
    plain = TextObjective(backend, small_config(), plain_run)  # from 0: every step, as before
    assert {k for _ in range(300) for (k,) in [plain._draw_steps()]} == set(range(1, 10))
    plain.denoise(noise, plain.entries[:1], [2], slider_alpha=1.0)
    assert [alpha for _, alpha in plain_run.calls] == [1.0, 1.0]  # on from the first step, noise included


def test_an_image_slider_trains_only_the_timesteps_from_its_start(sd1, tmp_path):
    config = small_config(mode="image", prompts=[], pairs=write_pairs(tmp_path, 2))
    run = type("Run", (), {"randn": staticmethod(lambda n, generator=None: torch.randn(n, 4, 8, 8,
                                                                                          generator=generator))})()
    objective = ImageObjective(ModelBackend(sd1), config, run, start=0.5)
    generator = torch.Generator().manual_seed(0)
    drawn = {int(t) for _ in range(100) for t in objective._sample(generator, 4)[3]}
    assert drawn == set(ddim_timesteps(10)[5:10].tolist())


def test_the_trainer_trains_from_the_start_it_saves_and_says_so(sd1):
    def train(**overrides):
        return SliderTrainer(ModelBackend(sd1), small_config(**overrides), effect_samples=0).train()

    late = train(default_start=0.5, train_from_start=True)
    every_step = train(default_start=0.5)  # the default: the start is only saved
    from_zero = train()
    assert late.trained_from == 0.5 and every_step.trained_from == 0.0 and late.recommended_start == 0.5
    assert every_step.losses == from_zero.losses
    assert late.losses != from_zero.losses
    assert training_metadata(late)[1]["trained_from"] == 0.5
    assert "trained_from" not in training_metadata(every_step)[1]
    assert train(train_from_start=True).losses == from_zero.losses  # from 0 it is every step
    estimated = SliderTrainer(ModelBackend(sd1), small_config(estimate_start=True, train_from_start=True),
                              effect_samples=0, start_samples=2).train()
    assert estimated.trained_from == estimated.start_estimate.start  # a text slider's estimate comes first


def test_resume_keeps_the_steps_a_checkpoint_trained(sd1, tmp_path):
    checkpoint = tmp_path / "run.state"
    config = small_config(iterations=2, checkpoint_every=2, default_start=0.3, train_from_start=True)
    SliderTrainer(ModelBackend(sd1), config, checkpoint_path=checkpoint).train()
    # The start now decides which steps train: another one is another run.
    with pytest.raises(Exception, match=r"different settings \(default_start\)"):
        SliderTrainer(ModelBackend(sd1), small_config(default_start=0.5, checkpoint_every=2,
                                                      train_from_start=True)).train(resume_from=checkpoint)

    # A checkpoint from before train_from_start existed trained every step whatever its start.
    with safetensors.safe_open(str(checkpoint), framework="pt") as file:
        metadata = file.metadata()
        tensors = {key: file.get_tensor(key) for key in file.keys()}  # noqa: SIM118 — not a dict
    state = json.loads(metadata["state"])
    del state["config"]["train_from_start"]
    safetensors.torch.save_file(tensors, str(checkpoint), metadata={**metadata, "state": json.dumps(state)})
    with pytest.raises(Exception, match=r"different settings \(train_from_start\)"):
        SliderTrainer(ModelBackend(sd1), small_config(default_start=0.3, checkpoint_every=2,
                                                      train_from_start=True)).train(resume_from=checkpoint)
    resumed = SliderTrainer(ModelBackend(sd1), small_config(default_start=0.5, checkpoint_every=2),
                            effect_samples=0).train(resume_from=checkpoint)  # then the start is only saved again
    assert resumed.iterations == 4 and resumed.trained_from == 0.0
