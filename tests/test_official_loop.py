"""``bench/official_loop.py`` against the official recipe (``shared/reference/official-sliders.md`` §2, the official
``train_lora.py``/``train_util.py``/``lora.py``): schedule, LoRA, layer set, call structure, loss and update.

Expected values are computed here independently of the module (float64 schedule, the formulas written out)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from bench.common.tiny_models import build_unet, unet_inputs
from bench.common.toy_diffusion import make_toy_model
from bench.official_loop import (
    OfficialConfig,
    OfficialDDIM,
    OfficialLoRANetwork,
    OfficialPrompt,
    OfficialTextSliderLoop,
    official_loss_target,
    run_official,
)
from lib_sliders.prompt.presets import select_layers

CONFIG = OfficialConfig(resolution=64)  # the tiny models: 8×8 latents
PROMPT = OfficialPrompt("male person", "male person, very old", "male person, very young", "male person")


def reference_alphas_cumprod() -> np.ndarray:
    """Scaled-linear betas (√β linear from √0.00085 to √0.012 over 1000 steps, squared), cumulative ᾱ, in float64."""
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    return np.cumprod(1.0 - betas)


ALPHAS = reference_alphas_cumprod()


def reference_ddim_step(x: torch.Tensor, eps: torch.Tensor, t: int, steps: int = 50) -> torch.Tensor:
    """Deterministic DDIM from t to t − 1000/steps; ᾱ = 1 past 0 (diffusers' set_alpha_to_one)."""
    prev = t - 1000 // steps
    a_t, a_prev = ALPHAS[t], ALPHAS[prev] if prev >= 0 else 1.0
    x0 = (x.double() - (1 - a_t) ** 0.5 * eps.double()) / a_t**0.5
    return (a_prev**0.5 * x0 + (1 - a_prev) ** 0.5 * eps.double()).float()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # A few hundred small ops per UNet call: a second thread gains nothing, and on a busy machine its
    # oversubscribed OpenMP spinning made these tests ten times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sd1():
    return make_toy_model("sd1")


# ---------------------------------------------------------------------------------------------- schedule


def test_ddim_timesteps_and_labels_are_the_official_ones():
    scheduler = OfficialDDIM()
    scheduler.set_timesteps(50)
    assert scheduler.timesteps.tolist() == [20 * i for i in range(49, -1, -1)]  # 980, 960, …, 0 ("leading")
    scheduler.set_timesteps(1000)
    labels = [int(scheduler.timesteps[int(k * 1000 / 50)]) for k in range(1, 50)]
    assert labels == [999 - 20 * k for k in range(1, 50)]
    np.testing.assert_allclose(scheduler.alphas_cumprod.numpy(), ALPHAS, rtol=1e-4)
    assert scheduler.init_noise_sigma == 1.0


def test_ddim_step_is_deterministic_ddim():
    scheduler = OfficialDDIM()
    scheduler.set_timesteps(50)
    generator = torch.Generator().manual_seed(0)
    x, eps = torch.randn(2, 1, 4, 8, 8, generator=generator)
    for t in (980, 500, 20, 0):  # 0: the last step lands on ᾱ = 1
        torch.testing.assert_close(scheduler.step(eps, torch.tensor(t), x), reference_ddim_step(x, eps, t),
                                   rtol=1e-4, atol=1e-5)


def test_scheduler_matches_diffusers_ddim_as_the_official_configures_it():
    diffusers = pytest.importorskip("diffusers")
    theirs = diffusers.DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                     num_train_timesteps=1000, clip_sample=False)
    ours = OfficialDDIM()
    theirs.set_timesteps(50)
    ours.set_timesteps(50)
    assert torch.equal(ours.timesteps, theirs.timesteps)
    assert torch.equal(ours.alphas_cumprod, theirs.alphas_cumprod)
    generator = torch.Generator().manual_seed(1)
    x, eps = torch.randn(2, 1, 4, 8, 8, generator=generator)
    for t in ours.timesteps[[0, 25, 49]]:
        torch.testing.assert_close(ours.step(eps, t, x), theirs.step(eps, t, x).prev_sample, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------------- loss


def test_loss_target_is_the_official_formula():
    positive, neutral, unconditional = torch.tensor([1.0, 2.0]), torch.tensor([0.5, -1.0]), torch.tensor([0.25, 3.0])
    # neutral ± η (positive − unconditional), η = 4
    assert official_loss_target(positive, neutral, unconditional, 4.0).tolist() == [3.5, -5.0]
    assert official_loss_target(positive, neutral, unconditional, 4.0, "erase").tolist() == [-2.5, 3.0]
    with pytest.raises(ValueError):
        official_loss_target(positive, neutral, unconditional, 4.0, "sharpen")


# ---------------------------------------------------------------------------------------------- LoRA


def test_lora_starts_as_the_base_model_and_follows_the_multiplier(sd1):
    unet = sd1.model.diffusion_model
    inputs = unet_inputs(unet, "sd1", batch=2, size=8)
    with torch.no_grad():
        base = unet(**inputs)
        network = OfficialLoRANetwork(unet, rank=4, alpha=1.0)
        try:
            assert all(torch.count_nonzero(lora.lora_up.weight) == 0 for lora in network.unet_loras)
            assert all(torch.count_nonzero(lora.lora_down.weight) > 0 for lora in network.unet_loras)
            assert {lora.scale for lora in network.unet_loras} == {0.25}  # alpha / rank
            with network:
                assert torch.equal(unet(**inputs), base)  # up = 0: iteration 1 starts from the base model

            generator = torch.Generator().manual_seed(0)
            for lora in network.unet_loras:
                lora.lora_up.weight.copy_(torch.randn(lora.lora_up.weight.shape, generator=generator))
            with network:
                assert not torch.allclose(unet(**inputs), base, atol=1e-3)  # multiplier 1 inside
            assert torch.equal(unet(**inputs), base)  # multiplier 0 outside

            lora = next(lora for lora, path in zip(network.unet_loras, network.paths, strict=True)
                        if path.endswith("attn1.to_q"))
            layer = unet.get_submodule(next(p for p in network.paths if p.endswith("attn1.to_q")))
            x = torch.randn(3, layer.in_features, generator=generator)
            with network:  # original(x) + up(down(x)) · multiplier · alpha/rank
                expected = (torch.nn.functional.linear(x, layer.weight, layer.bias)
                            + x @ lora.lora_down.weight.T @ lora.lora_up.weight.T * 0.25)
                torch.testing.assert_close(layer(x), expected)
        finally:
            network.remove()
        assert not [name for name, module in unet.named_modules() if "forward" in module.__dict__]
        assert torch.equal(unet(**inputs), base)


@pytest.mark.parametrize("arch", ["sd1", "sdxl"])
def test_lora_wraps_exactly_the_noxattn_layers(arch):
    unet = build_unet(arch)
    network = OfficialLoRANetwork(unet, train_method="noxattn")
    try:
        expected = set(select_layers(unet, "noxattn"))
        assert set(network.paths) == expected and len(network.paths) == len(expected)
        assert not any("attn2" in path for path in network.paths)
        replaced = {name for name, module in unet.named_modules() if "forward" in module.__dict__}
        assert replaced == expected
    finally:
        network.remove()


@pytest.mark.parametrize(("arch", "modules", "params"), [("sd1", 150, 2_906_880), ("sdxl", 346, 4_320_000)])
def test_full_size_layer_counts_are_the_official_ones(arch, modules, params):
    # Official c3lier + noxattn at rank 4: 150 modules / 2.91 M params (SD1.x), 346 / 4.32 M (SDXL).
    unet = build_unet(arch, tiny=False, device="meta")
    with torch.device("meta"):
        network = OfficialLoRANetwork(unet, train_method="noxattn")
    try:
        assert len(network.unet_loras) == modules
        assert sum(p.numel() for p in network.parameters()) == params
        assert network.unet_loras[0].lora_name.startswith("lora_unet_input_blocks_")
    finally:
        network.remove()


# ---------------------------------------------------------------------------------------------- iteration


class CallRecorder:
    """Every UNet call of a run: inputs, output, and whether the LoRA was on (its multiplier)."""

    def __init__(self, unet, network):
        self.calls = []
        self.network = network
        self.handles = [unet.register_forward_pre_hook(self.before, with_kwargs=True),
                        unet.register_forward_hook(self.after)]

    def before(self, module, args, kwargs):
        self.calls.append({"x": args[0].detach().clone(), "t": kwargs["timesteps"].detach().clone(),
                           "context": kwargs["context"].detach().clone(),
                           "multiplier": self.network.unet_loras[0].multiplier,
                           "grad": torch.is_grad_enabled()})

    def after(self, module, args, output):
        self.calls[-1]["out"] = output.detach().clone()

    def remove(self):
        for handle in self.handles:
            handle.remove()


def guided(out: torch.Tensor, scale: float) -> torch.Tensor:
    uncond, cond = out.chunk(2)
    return uncond + scale * (cond - uncond)


def test_iteration_calls_and_loss_follow_the_official_loop(sd1):
    k = 3
    embed = {p: sd1.cond_stage_model([p]) for p in (PROMPT.target, PROMPT.positive, PROMPT.neutral,
                                                     PROMPT.unconditional)}
    with OfficialTextSliderLoop(sd1, [PROMPT], CONFIG, seed=0) as loop:
        recorder = CallRecorder(loop.unet, loop.network)
        try:
            info = loop.iteration(k=k)
        finally:
            recorder.remove()
    calls = recorder.calls
    assert len(calls) == k + 4 and all(len(c["x"]) == 2 for c in calls)  # k denoising + 3 frozen + 1 trainable
    assert info.k == k and info.timestep == 999 - 20 * k

    def context_is(call, first, second):
        return torch.equal(call["context"], torch.cat([embed[first], embed[second]]))

    # Denoising from the initial noise: slider on, CFG 3 over [c−, target], DDIM 50 steps 980, 960, …
    x = calls[0]["x"][:1]
    for i, call in enumerate(calls[:k]):
        assert call["multiplier"] == 1 and not call["grad"]
        assert call["t"].tolist() == [980 - 20 * i] * 2
        assert context_is(call, PROMPT.unconditional, PROMPT.target)
        assert torch.equal(call["x"][0], call["x"][1])
        torch.testing.assert_close(call["x"][:1], x, rtol=1e-4, atol=1e-5)
        x = reference_ddim_step(x, guided(call["out"], 3.0), 980 - 20 * i)

    # Frozen predictions (slider off, no grad) at the label 999 − 20k on the denoised latent; then the trainable one.
    frozen = calls[k:k + 3]
    for call, conditional in zip(frozen, (PROMPT.positive, PROMPT.neutral, PROMPT.unconditional), strict=True):
        assert call["multiplier"] == 0 and not call["grad"]
        assert context_is(call, PROMPT.unconditional, conditional)
    trainable = calls[k + 3]
    assert trainable["multiplier"] == 1 and trainable["grad"]
    assert context_is(trainable, PROMPT.unconditional, PROMPT.target)
    for call in calls[k:]:
        assert call["t"].tolist() == [999 - 20 * k] * 2
        torch.testing.assert_close(call["x"], torch.cat([x, x]), rtol=1e-4, atol=1e-5)

    positive, neutral, unconditional = (guided(call["out"], 1.0) for call in frozen)
    target = neutral + 4.0 * (positive - unconditional)  # enhance, η = 4
    expected = torch.mean((guided(trainable["out"], 1.0) - target) ** 2).item()
    assert info.loss == pytest.approx(expected, rel=1e-5)


def test_k_is_drawn_from_1_to_49_per_iteration(sd1):
    # The loop's draws, in the official order: prompt pair, then k = randint(1, 50).
    def first_k(seed: int) -> int:
        generator = torch.Generator().manual_seed(seed)
        torch.randint(0, 1, (1,), generator=generator)
        return int(torch.randint(1, 50, (1,), generator=generator))

    seed = next(s for s in range(1000) if first_k(s) <= 2)
    result = run_official(sd1, iterations=1, prompts=[PROMPT], config=CONFIG, seed=seed)
    assert result.ks == [first_k(seed)]
    assert result.calls == [result.ks[0] + 4] and result.rows == [2 * (result.ks[0] + 4)]
    draws = torch.randint(1, 50, (2000,), generator=torch.Generator().manual_seed(0))
    assert draws.min() == 1 and draws.max() == 49  # the range randint(1, 50) gives


def test_one_step_changes_only_the_lora(sd1):
    unet = sd1.model.diffusion_model
    before = {name: p.clone() for name, p in unet.state_dict().items()}
    with OfficialTextSliderLoop(sd1, [PROMPT], CONFIG, seed=0) as loop:
        network = loop.network
        (group,) = loop.optimizer.param_groups
        assert isinstance(loop.optimizer, torch.optim.AdamW)
        assert group["lr"] == 2e-4 and group["weight_decay"] == 0.01
        assert {id(p) for p in group["params"]} == {id(p) for p in network.parameters()}
        lora_before = {name: p.clone() for name, p in network.named_parameters()}
        loop.iteration(k=1)
        lora_after = dict(network.named_parameters())
    moved = {name for name, p in lora_after.items() if not torch.equal(p, lora_before[name])}
    downs = {name for name in lora_after if name.endswith("lora_down.weight")}
    ups = {name: p for name, p in lora_after.items() if name.endswith("lora_up.weight")}
    assert downs <= moved  # up = 0 gives them no gradient yet; AdamW's weight decay moves them
    # Every up with a gradient moved. Only the middle block's q/k have none here: at 64 px it holds one token,
    # and softmax over a single key ignores q and k.
    assert {name for name, p in ups.items() if torch.count_nonzero(p.grad)} == moved & ups.keys()
    assert len(moved & ups.keys()) == len(ups) - 2
    after = unet.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[name], before[name]) for name in before)
    assert not [name for name, module in unet.named_modules() if "forward" in module.__dict__]


@pytest.mark.parametrize("arch", ["sd1", "sdxl"])
def test_half_weights_run_without_autocast_and_are_restored(arch, monkeypatch):
    from ldm.modules.attention import CrossAttention
    from ldm.modules.diffusionmodules.util import GroupNorm32

    from bench.train_speed import use_sdpa

    # SDPA attention, as the GPU bench runs it (ldm's einsum attention upcasts q·k to fp32); undone after the test.
    monkeypatch.setattr(CrossAttention, "forward", CrossAttention.forward)
    if "comfy.ldm.modules.attention" in sys.modules:
        attention = sys.modules["comfy.ldm.modules.attention"]
        monkeypatch.setattr(attention, "optimized_attention", attention.optimized_attention)
        monkeypatch.setattr(attention, "optimized_attention_masked", attention.optimized_attention_masked)
    use_sdpa()
    model = make_toy_model(arch)
    model.model.to(torch.bfloat16)
    model.cond_stage_model.to(torch.bfloat16)
    unet = model.model.diffusion_model
    group_norm_forward, unet_dtype = GroupNorm32.forward, unet.dtype
    outputs = []
    handle = unet.register_forward_hook(lambda module, args, output: outputs.append(output.dtype))
    try:
        with OfficialTextSliderLoop(model, [PROMPT], CONFIG, seed=0) as loop:
            assert all(p.dtype == torch.bfloat16 for p in loop.network.parameters())  # no fp32 master copy
            info = loop.iteration(k=1)
    finally:
        handle.remove()
    assert np.isfinite(info.loss) and info.loss > 0
    assert outputs == [torch.bfloat16] * 5
    assert GroupNorm32.forward is group_norm_forward and unet.dtype == unet_dtype
    assert not unet.time_embed._forward_pre_hooks


def test_sdxl_calls_get_the_official_embeddings_and_size_vector():
    # Official XL conditioning: both encoders' penultimate states concatenated, and y = pooled ⊕ sinusoids of
    # (H, W, 0, 0, H, W): what sgm's conditioner makes for a 64 px image with no crop.
    model = make_toy_model("sdxl")

    class Prompts(list):
        width = height = CONFIG.resolution

    expected = model.get_learned_conditioning(Prompts([PROMPT.unconditional, PROMPT.target]))
    with OfficialTextSliderLoop(model, [PROMPT], CONFIG, seed=0) as loop:
        recorded = []
        handle = loop.unet.register_forward_pre_hook(
            lambda module, args, kwargs: recorded.append((kwargs["context"], kwargs["y"])), with_kwargs=True)
        try:
            loop.iteration(k=1)
        finally:
            handle.remove()
    context, y = recorded[0]  # the denoising call: [c−, target]
    torch.testing.assert_close(context, expected["crossattn"])
    torch.testing.assert_close(y, expected["vector"])
    assert len(recorded) == 5
