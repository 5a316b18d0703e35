"""The training engine on faithful doubles of the webui's model objects (real tiny LDM/sgm UNets)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import safetensors
import safetensors.torch
import torch
from image_pairs import write_pairs
from PIL import Image

from bench.common.toy_diffusion import make_toy_model
from lib_sliders.files.slider_file import load_slider
from lib_sliders.training.backend import ModelBackend, resolution_step
from lib_sliders.training.config import ImagePair, TextPrompt, TrainConfig
from lib_sliders.training.config_values import ConfigError
from lib_sliders.training.trained_slider import save_trained_slider, training_metadata
from lib_sliders.training.trainer import SliderTrainer

AGE = TextPrompt(target="person", positive="person, very old", negative="person, very young",
                 preservation=["male", "female"], guidance=2.0)


def small_config(**overrides) -> TrainConfig:
    # No start probe: these tests are about the loop (test_start_estimate.py tests the probe).
    settings = dict(name="age", prompts=[AGE], iterations=20, resolution=64, lr=1e-2, max_denoising_steps=4,
                    rank=4, seed=1, estimate_start=False)
    settings.update(overrides)
    return TrainConfig(**settings)


def snapshot(module: torch.nn.Module):
    return ({k: v.clone() for k, v in module.state_dict().items()}, module.training,
            [p.requires_grad for p in module.parameters()])


def assert_restored(module: torch.nn.Module, saved) -> None:
    state, training, requires_grad = saved
    for key, value in module.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert module.training == training
    assert [p.requires_grad for p in module.parameters()] == requires_grad
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in module.modules())


@pytest.fixture(scope="module")
def sd1():
    return make_toy_model("sd1")


def test_text_slider_learns_its_direction_and_leaves_the_model_as_found(sd1, tmp_path):
    unet = sd1.model.diffusion_model
    unet.train()  # an unusual state the trainer must put back
    saved = snapshot(unet)
    progress = []
    trainer = SliderTrainer(ModelBackend(sd1), small_config(), on_progress=progress.append, progress_every=4,
                            held_out_draws=6)
    result = trainer.train()
    assert_restored(unet, saved)
    unet.eval()

    before, after = result.held_out_loss
    assert after < 0.92 * before, f"held-out loss {before:.4f} → {after:.4f}"
    effect = result.effect
    assert not effect.does_nothing, effect.summary()
    assert effect.cosine > 0.3 and effect.gain > 0.1, effect.summary()
    # bidirectional: α=−1 moves along the negative target
    assert effect.cosine_negative > 0.3 and effect.gain_negative > 0.1, effect.summary()
    assert [p.iteration for p in progress] == [4, 8, 12, 16, 20]
    assert all(p.loss > 0 and p.its_per_second > 0 for p in progress)

    path = tmp_path / "age.safetensors"
    header = save_trained_slider(result, path, base_model_name="toy-sd1", base_model_hash="abc123")
    assert header["sliders.training"] and '"base_model": "toy-sd1"' in header["sliders.training"]
    assert '"does_nothing": false' in header["sliders.effect"]
    loaded = load_slider(path)
    assert set(loaded.unet) == set(result.network.unet)
    assert '"very old"' not in header["sliders.prompts"] and "person, very old" in header["sliders.prompts"]


def test_untrained_slider_scores_as_doing_nothing(sd1):
    result = SliderTrainer(ModelBackend(sd1), small_config(iterations=1, lr=1e-12)).train()
    assert result.effect.does_nothing
    assert abs(result.effect.gain) < 0.01


def test_cancel_then_resume_equals_an_uninterrupted_run(sd1, tmp_path):
    config = small_config(iterations=6, checkpoint_every=3)
    whole = SliderTrainer(ModelBackend(sd1), config, checkpoint_path=tmp_path / "whole.state").train()

    calls = iter(range(100))
    checkpoint = tmp_path / "run.state"
    cancelled = SliderTrainer(ModelBackend(sd1), config, checkpoint_path=checkpoint,
                              should_stop=lambda: next(calls) >= 3).train()
    assert cancelled.cancelled and cancelled.iterations == 3
    assert any(m.up.abs().sum() > 0 for m in cancelled.network.unet.values()), "cancel keeps what was learned"
    resumed = SliderTrainer(ModelBackend(sd1), config, checkpoint_path=checkpoint).train(resume_from=checkpoint)
    assert resumed.iterations == 6 and not resumed.cancelled
    assert resumed.losses == whole.losses
    for path, module in whole.network.unet.items():
        assert torch.equal(module.down, resumed.network.unet[path].down), path
        assert torch.equal(module.up, resumed.network.unet[path].up), path


def test_resume_refuses_a_checkpoint_made_with_other_settings(sd1, tmp_path):
    checkpoint = tmp_path / "run.state"
    SliderTrainer(ModelBackend(sd1), small_config(iterations=2, checkpoint_every=2), checkpoint_path=checkpoint).train()
    with pytest.raises(Exception, match="different settings.*rank"):
        SliderTrainer(ModelBackend(sd1), small_config(iterations=4, rank=2)).train(resume_from=checkpoint)


def test_a_checkpoint_from_before_a_config_field_existed_resumes_with_its_default(sd1, tmp_path):
    # A state file written before train_among existed: the run that wrote it trained alone, as the default does.
    checkpoint = tmp_path / "run.state"
    config = small_config(iterations=4, checkpoint_every=2)
    SliderTrainer(ModelBackend(sd1), small_config(iterations=2, checkpoint_every=2), checkpoint_path=checkpoint).train()
    with safetensors.safe_open(str(checkpoint), framework="pt") as file:
        metadata = file.metadata()
        tensors = {key: file.get_tensor(key) for key in file.keys()}  # noqa: SIM118 — not a dict
    state = json.loads(metadata["state"])
    del state["config"]["train_among"], state["config"]["among_alphas"]
    safetensors.torch.save_file(tensors, str(checkpoint), metadata={**metadata, "state": json.dumps(state)})
    resumed = SliderTrainer(ModelBackend(sd1), config).train(resume_from=checkpoint)
    assert resumed.iterations == 4
    with pytest.raises(Exception, match=r"different settings \(train_among\)"):
        SliderTrainer(ModelBackend(sd1), small_config(iterations=4, checkpoint_every=2, train_among=["other"]),
                      companions={"other": resumed.network}).train(resume_from=checkpoint)


def test_same_seed_same_slider_and_checkpointing_changes_nothing(sd1):
    first = SliderTrainer(ModelBackend(sd1), small_config(iterations=2)).train()
    second = SliderTrainer(ModelBackend(sd1), small_config(iterations=2, gradient_checkpointing=True)).train()
    for path, module in first.network.unet.items():
        torch.testing.assert_close(module.up, second.network.unet[path].up, atol=1e-6, rtol=1e-5)


def test_merged_sampling_trains_the_same_slider_and_restores_weights(sd1):
    unet = sd1.model.diffusion_model
    saved = snapshot(unet)
    hooked = SliderTrainer(ModelBackend(sd1), small_config(iterations=3), merge_for_sampling=False).train()
    merged = SliderTrainer(ModelBackend(sd1), small_config(iterations=3), merge_for_sampling=True).train()
    assert_restored(unet, saved)
    for path, module in hooked.network.unet.items():
        torch.testing.assert_close(module.up, merged.network.unet[path].up, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("arch, parameterization", [("sd2", "v"), ("sdxl", "eps")])
def test_sd2_v_prediction_and_sdxl_train(arch, parameterization):
    model = make_toy_model(arch, parameterization=parameterization)
    saved = snapshot(model.model.diffusion_model)
    result = SliderTrainer(ModelBackend(model), small_config(iterations=4, preset="full")).train()
    assert result.network.arch == frozenset({arch})
    assert all(np.isfinite(result.losses)) and len(result.losses) == 4
    assert result.effect is not None and result.effect.gain > 0
    assert_restored(model.model.diffusion_model, saved)


def test_image_slider_trains_two_sided_from_pairs(sd1, tmp_path):
    pairs = write_pairs(tmp_path, 3, size=(48, 40), after_suffix=".jpg", grey_after=True)  # converted to RGB
    config = small_config(mode="image", prompts=[], pairs=pairs, scales=[1.0, 2.0], iterations=10, lr=1e-3)
    result = SliderTrainer(ModelBackend(sd1), config, held_out_draws=6).train()
    before, after = result.held_out_loss
    assert after < before
    assert result.effect.cosine > 0, result.effect.summary()


def test_bad_configs_are_refused_before_anything_runs(sd1):
    with pytest.raises(ConfigError, match=r"prompts\[0\]\.positive"):
        SliderTrainer(ModelBackend(sd1), small_config(prompts=[TextPrompt(target="a", positive=" ", negative="b")]))
    with pytest.raises(ConfigError, match="rank"):
        SliderTrainer(ModelBackend(sd1), small_config(rank=0))
    with pytest.raises(ConfigError, match="preset"):
        SliderTrainer(ModelBackend(sd1), small_config(preset="everything"))


def test_unreadable_image_names_the_file(sd1, tmp_path):
    broken, fine = tmp_path / "broken.png", tmp_path / "fine.png"
    broken.write_bytes(b"not an image")
    Image.new("RGB", (8, 8)).save(fine)
    config = small_config(mode="image", prompts=[], pairs=[ImagePair(before=str(fine), after=str(broken))])
    with pytest.raises(Exception, match=r"broken\.png: not a readable image"):
        SliderTrainer(ModelBackend(sd1), config).train()


def test_several_training_points_share_one_trajectory(sd1):
    calls = []
    unet = sd1.model.diffusion_model
    handle = unet.register_forward_pre_hook(lambda m, args, kwargs: calls.append(args[0].shape[0]), with_kwargs=True)
    try:
        config = small_config(iterations=1, max_denoising_steps=6, timesteps_per_trajectory=3, batch_size=2)
        # No effect score, no start probe: only the loop's own calls.
        result = SliderTrainer(ModelBackend(sd1), config, effect_samples=0, start_samples=0).train()
    finally:
        handle.remove()
    assert result.iterations == 1 and np.isfinite(result.losses).all()
    denoising, frozen, trained = calls[:-2], calls[-2], calls[-1]
    assert all(rows == 2 * 2 for rows in denoising) and 3 <= len(denoising) <= 5  # CFG rows of 2 images; k_max
    assert frozen == 3 * 2 * (1 + 2 * len(AGE.preservation))  # 3 points × 2 images × (neutral + c± per concept)
    assert trained == 2 * 3 * 2  # both directions × 3 points × 2 images


def test_erase_learns_the_opposite_direction(sd1):
    enhance = SliderTrainer(ModelBackend(sd1), small_config(iterations=8, bidirectional=False)).train()
    erase_prompt = TextPrompt(target=AGE.target, positive=AGE.positive, negative=AGE.negative,
                              preservation=AGE.preservation, guidance=AGE.guidance, action="erase")
    erase = SliderTrainer(ModelBackend(sd1), small_config(iterations=8, bidirectional=False, prompts=[erase_prompt]))
    erased = erase.train()
    assert enhance.effect.gain > 0 and erased.effect.gain > 0, (enhance.effect.summary(), erased.effect.summary())
    # the two sliders move ε in opposite directions
    first = torch.cat([m.up.flatten() for m in enhance.network.unet.values()])
    second = torch.cat([m.up.flatten() for m in erased.network.unet.values()])
    assert torch.nn.functional.cosine_similarity(first, second, dim=0) < 0


def test_cancel_between_checkpoints_saves_a_checkpoint_to_resume_from(sd1, tmp_path):
    config = small_config(iterations=5)  # no periodic checkpoints at all
    whole = SliderTrainer(ModelBackend(sd1), config).train()
    calls = iter(range(100))
    checkpoint = tmp_path / "run.state"
    cancelled = SliderTrainer(ModelBackend(sd1), config, checkpoint_path=checkpoint,
                              should_stop=lambda: next(calls) >= 2).train()
    assert cancelled.cancelled and cancelled.iterations == 2 and checkpoint.exists()
    resumed = SliderTrainer(ModelBackend(sd1), config).train(resume_from=checkpoint)
    assert resumed.losses == whole.losses
    for path, module in whole.network.unet.items():
        assert torch.equal(module.up, resumed.network.unet[path].up), path


def test_cancel_before_the_first_iteration_leaves_no_state(sd1, tmp_path):
    checkpoint = tmp_path / "run.state"
    result = SliderTrainer(ModelBackend(sd1), small_config(iterations=5), checkpoint_path=checkpoint,
                           should_stop=lambda: True, effect_samples=0).train()
    assert result.cancelled and result.iterations == 0
    assert not checkpoint.exists()


def test_a_resolution_the_model_cant_take_is_refused_by_field(sd1):
    backend = ModelBackend(sd1)
    step = resolution_step(backend)
    assert step == 8 * 2 ** (len(backend.unet.channel_mult) - 1)
    with pytest.raises(ConfigError, match=f"resolution: {step + 8} px doesn't fit this model: it trains at "
                                          f"multiples of {step} px"):
        SliderTrainer(backend, small_config(resolution=step + 8))


def test_companion_sliders_are_on_while_training_at_drawn_alphas_and_gone_after(sd1):
    # A slider trained among others: the companions act at an α drawn per iteration, are never trained,
    # and leave no hook behind; at α 0 only, they change nothing at all.
    unet = sd1.model.diffusion_model
    companion = SliderTrainer(ModelBackend(sd1), small_config(name="other", iterations=1),
                              effect_samples=0).train().network
    generator = torch.Generator().manual_seed(3)
    for module in companion.unet.values():
        module.up.copy_(0.05 * torch.randn(module.up.shape, generator=generator))
    frozen = {path: module.up.clone() for path, module in companion.unet.items()}
    saved = snapshot(unet)

    def train(alphas=None):
        among = {} if alphas is None else {"train_among": ["other"], "among_alphas": alphas}
        return SliderTrainer(ModelBackend(sd1), small_config(iterations=6, **among), effect_samples=2,
                             companions={"other": companion} if among else None).train()

    alone = train()
    idle = train([0.0])
    among = train([-1.0, 1.0])
    again = train([-1.0, 1.0])
    assert_restored(unet, saved)
    assert all(torch.equal(module.up, frozen[path]) for path, module in companion.unet.items())
    assert idle.losses == alone.losses
    assert all(torch.equal(idle.network.unet[p].up, alone.network.unet[p].up) for p in alone.network.unet)
    assert among.losses != alone.losses and among.losses == again.losses  # drawn, and drawn the same each run
    # The file says what it was trained among and at which α; one trained alone says nothing of it.
    training = training_metadata(among)[1]
    assert training["train_among"] == ["other"] and training["among_alphas"] == [-1.0, 1.0]
    assert training_metadata(alone)[1]["train_among"] == [] and "among_alphas" not in training_metadata(alone)[1]


def test_the_sliders_named_to_train_among_must_be_the_ones_given(sd1):
    other = SliderTrainer(ModelBackend(sd1), small_config(name="other", iterations=1), effect_samples=0).train().network
    with pytest.raises(ConfigError, match=r"train_among: .*not given: other; not named: none"):
        SliderTrainer(ModelBackend(sd1), small_config(train_among=["other"]))
    with pytest.raises(ConfigError, match=r"train_among: .*not given: none; not named: stray"):
        SliderTrainer(ModelBackend(sd1), small_config(), companions={"stray": other})


def test_a_model_stored_in_fp8_trains_in_half_precision_and_is_left_as_found():
    """The webui's "FP8 weight" setting stores the UNet's Linear/Conv weights in fp8 and computes in half
    precision: auto precision must train in bf16 (CPU) there, never in fp8, and never merge into those weights."""
    from lib_sliders.errors import SliderError

    model = make_toy_model("sd1", seed=2)
    unet = model.model.diffusion_model
    for layer in unet.modules():
        if isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d)):
            layer.weight.data = layer.weight.data.to(torch.float8_e4m3fn)
    saved = snapshot(unet)
    backend = ModelBackend(model)
    assert backend.dtype == torch.float8_e4m3fn
    with pytest.raises(SliderError, match="fp8"):
        SliderTrainer(backend, small_config(iterations=2), merge_for_sampling=True)
    with pytest.raises(SliderError, match="full-precision model"):
        SliderTrainer(backend, small_config(iterations=2, precision="fp32")).train()
    trainer = SliderTrainer(backend, small_config(iterations=2, max_denoising_steps=2))
    assert trainer.merge_for_sampling is False
    result = trainer.train()
    assert_restored(unet, saved)
    ups = [module.up for module in result.network.unet.values()]
    assert all(up.dtype == torch.float32 and torch.isfinite(up).all() for up in ups)
    assert any(float(up.abs().max()) > 0 for up in ups)  # it learned something
