"""ModelBackend over the webui-shaped doubles of bench/common/toy_diffusion.py (SD1, SD2 eps/v, SDXL)."""

from __future__ import annotations

import pytest
import torch

from bench.common.tiny_models import TINY_CONFIGS
from bench.common.toy_diffusion import ToyDiffusionEngine, ToyLatentDiffusion, make_toy_model, word_bucket
from lib_sliders.training.backend import ModelBackend, select_cond, v_to_eps

PROMPTS = ["person, very old", "person, very young"]
_MODELS: dict[tuple[str, str], torch.nn.Module] = {}


def toy(arch: str, parameterization: str = "eps") -> torch.nn.Module:
    """Build each double once per session: the models are frozen, so tests can share them."""
    key = (arch, parameterization)
    if key not in _MODELS:
        _MODELS[key] = make_toy_model(arch, parameterization)
    return _MODELS[key]


def noisy_inputs(batch: int = 2, size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x_t = torch.randn(batch, 4, size, size, generator=generator)
    t = torch.tensor([25, 900][:batch] + [500] * max(0, batch - 2))
    return x_t, t


# ------------------------------------------------------------------------------------------- the doubles


def test_doubles_have_the_webui_surface():
    for arch in ("sd1", "sd2", "sdxl"):
        model = toy(arch)
        assert isinstance(model, ToyDiffusionEngine if arch == "sdxl" else ToyLatentDiffusion)
        assert (model.is_sd1, model.is_sd2, model.is_sdxl) == (arch == "sd1", arch == "sd2", arch == "sdxl")
        assert model.num_timesteps == 1000 and model.alphas_cumprod.shape == (1000,)
        assert model.alphas_cumprod.dtype == torch.float32
        assert not any(p.requires_grad for p in model.parameters()) and not model.training
    # SD's scaled-linear schedule end points.
    alphas_cumprod = toy("sd1").alphas_cumprod
    assert alphas_cumprod[0].item() == pytest.approx(1 - 0.00085, rel=1e-6)
    assert alphas_cumprod[-1].item() == pytest.approx(0.0047, abs=1e-4)
    assert toy("sdxl").cond_stage_model is toy("sdxl").conditioner


def test_toy_text_encoder_is_seeded_and_compositional():
    again = make_toy_model("sd1")
    cond = toy("sd1").get_learned_conditioning(PROMPTS)
    assert torch.equal(cond, again.get_learned_conditioning(PROMPTS))
    # Causal mixing: positions before the differing word ("old"/"young" at 3) are identical, the word
    # itself differs most, later positions only a little.
    per_token = (cond[0] - cond[1]).norm(dim=-1)
    assert torch.all(per_token[:3] == 0)
    assert per_token.argmax().item() == 3
    assert per_token[4:].max() < 0.5 * per_token[3]
    assert word_bucket("old") == word_bucket("OLD".lower()) != word_bucket("young")  # crc32, not salted hash()


# --------------------------------------------------------------------------------------------- prompts


@pytest.mark.parametrize("arch", ["sd1", "sd2", "sdxl"])
def test_encode_prompts_shapes(arch):
    backend = ModelBackend(toy(arch))
    cond = backend.encode_prompts(PROMPTS)
    context_dim = TINY_CONFIGS[arch]["context_dim"]
    if arch == "sdxl":
        assert isinstance(cond, dict) and set(cond) == {"crossattn", "vector"}
        assert cond["crossattn"].shape == (2, 77, context_dim)
        assert cond["vector"].shape == (2, TINY_CONFIGS[arch]["adm_in_channels"])
        tensors = list(cond.values())
    else:
        assert isinstance(cond, torch.Tensor) and cond.shape == (2, 77, context_dim)
        tensors = [cond]
    for tensor in tensors:
        assert tensor.dtype == torch.float32 and not tensor.requires_grad
        assert not torch.equal(tensor[0], tensor[1])  # different prompts, different conditionings


# ------------------------------------------------------------------------------------------ prediction


@pytest.mark.parametrize("arch", ["sd1", "sd2", "sdxl"])
def test_predict_eps_is_the_raw_output_for_eps_models(arch):
    model = toy(arch)
    backend = ModelBackend(model)
    x_t, t = noisy_inputs()
    cond = backend.encode_prompts(PROMPTS)
    eps = backend.predict_eps(x_t, t, cond)
    assert eps.shape == x_t.shape and torch.isfinite(eps).all()
    assert eps.abs().mean() > 0.05  # re-drawn UNet weights: not the zero-init output
    torch.testing.assert_close(eps, model.apply_model(x_t, t, cond))


@pytest.mark.parametrize("arch", ["sd2", "sdxl"])
def test_predict_eps_converts_v_output(arch):
    model = toy(arch, "v")
    backend = ModelBackend(model)
    assert backend.v_prediction
    x_t, t = noisy_inputs()
    cond = backend.encode_prompts(PROMPTS)
    v = model.apply_model(x_t, t, cond)
    alphas = model.alphas_cumprod[t].view(-1, 1, 1, 1)
    expected = alphas.sqrt() * v + (1 - alphas).sqrt() * x_t
    eps = backend.predict_eps(x_t, t, cond)
    torch.testing.assert_close(eps, expected)
    assert not torch.allclose(eps, v)  # the conversion did something
    if arch == "sd2":  # ldm's own helper as an independent oracle
        torch.testing.assert_close(eps, model.predict_eps_from_z_and_v(x_t, t, v))


def test_v_to_eps_inverts_v_for_known_noise():
    generator = torch.Generator().manual_seed(3)
    x0 = torch.randn(3, 4, 8, 8, generator=generator)
    eps = torch.randn(3, 4, 8, 8, generator=generator)
    t = torch.tensor([0, 400, 999])
    alphas_cumprod = toy("sd2", "v").alphas_cumprod
    a = alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    v = a.sqrt() * eps - (1 - a).sqrt() * x0
    torch.testing.assert_close(v_to_eps(v, x_t, alphas_cumprod[t]), eps, atol=1e-5, rtol=1e-5)
    # Same construction through ldm's formulas on the double.
    model = toy("sd2", "v")
    torch.testing.assert_close(model.q_sample(x0, t, eps), x_t)
    torch.testing.assert_close(model.get_v(x0, eps, t), v)


def test_predict_eps_keeps_the_graph():
    backend = ModelBackend(toy("sd2", "v"))
    x_t, t = noisy_inputs()
    x_t.requires_grad_(True)
    backend.predict_eps(x_t, t, backend.encode_prompts(PROMPTS)).square().mean().backward()
    assert x_t.grad is not None and x_t.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------- conditionings


def test_select_cond_tensors():
    a, b = torch.randn(2, 77, 8), torch.randn(1, 77, 8)
    joined = torch.cat([a, b])
    assert torch.equal(joined, torch.cat([a, b]))
    assert torch.equal(select_cond(joined, [2, 0, 0]), torch.stack([b[0], a[0], a[0]]))
    assert torch.equal(select_cond(joined, torch.tensor([1])), a[1:2])


def test_select_cond_dicts():
    backend = ModelBackend(toy("sdxl"))
    first, second = backend.encode_prompts(PROMPTS[:1]), backend.encode_prompts(PROMPTS[1:])
    joined = {key: torch.cat([first[key], second[key]]) for key in first}
    assert set(joined) == {"crossattn", "vector"}
    picked = select_cond(joined, [1, 1, 0])
    for key in joined:
        assert torch.equal(picked[key], torch.cat([second[key], second[key], first[key]]))


# ------------------------------------------------------------------------------------------------ images


@pytest.mark.parametrize("arch", ["sd1", "sdxl"])
def test_encode_images_matches_a_manual_encode(arch):
    model = toy(arch)
    backend = ModelBackend(model)
    images = torch.rand(2, 3, 64, 48, generator=torch.Generator().manual_seed(5)) * 2 - 1
    torch.manual_seed(11)  # the posterior sample draws from the global RNG
    latents = backend.encode_images(images)
    assert latents.shape == (2, 4, 8, 6) and latents.dtype == torch.float32

    torch.manual_seed(11)
    with torch.no_grad():
        moments = model.first_stage_model.quant_conv(model.first_stage_model.encoder(images))
        mean, logvar = moments.chunk(2, dim=1)
        manual = model.scale_factor * (mean + torch.exp(0.5 * logvar.clamp(-30.0, 20.0)) * torch.randn(mean.shape))
    torch.testing.assert_close(latents, manual)
    expected_scale = {"sd1": 0.18215, "sdxl": 0.13025}[arch]
    assert model.scale_factor == expected_scale
    assert 0.3 < latents.std().item() < 3  # scaled latents are roughly unit-variance


# ----------------------------------------------------------------------------------------------- hooks


@pytest.mark.parametrize("arch", ["sd1", "sdxl"])
def test_hooks_on_backend_unet_see_apply_model_calls(arch):
    model = toy(arch)
    backend = ModelBackend(model)
    assert backend.unet is model.model.diffusion_model
    x_t, t = noisy_inputs()
    cond = backend.encode_prompts(PROMPTS)
    seen: list[dict] = []

    def record(module, args, kwargs):
        seen.append({"x": args[0], **kwargs})

    def shift(module, args, output):
        return output + 1.0  # a LoRA-style forward hook that changes the result

    baseline = backend.predict_eps(x_t, t, cond)
    handles = [backend.unet.register_forward_pre_hook(record, with_kwargs=True),
               backend.unet.register_forward_hook(shift)]
    try:
        shifted = backend.predict_eps(x_t, t, cond)
    finally:
        for handle in handles:
            handle.remove()

    assert len(seen) == 1 and torch.equal(seen[0]["x"], x_t)
    if arch == "sdxl":
        assert torch.equal(seen[0]["context"], cond["crossattn"]) and torch.equal(seen[0]["y"], cond["vector"])
    else:
        assert torch.equal(seen[0]["context"], cond)
    torch.testing.assert_close(shifted, baseline + 1.0)


class SizedPrompts(list):
    """Shaped like the webui's ``SdConditioning``: a prompt list carrying the image size."""

    def __init__(self, prompts, width, height):
        super().__init__(prompts)
        self.width, self.height = width, height


def test_wrap_prompts_passes_the_training_size_to_sdxl_conditioning():
    model = make_toy_model("sdxl")
    default = ModelBackend(model).encode_prompts(["a cat"])
    sized = ModelBackend(model, wrap_prompts=lambda p: SizedPrompts(p, 512, 512)).encode_prompts(["a cat"])
    assert torch.equal(default["crossattn"], sized["crossattn"])
    assert not torch.equal(default["vector"], sized["vector"])  # the size embedding part differs
    explicit = ModelBackend(model, wrap_prompts=lambda p: SizedPrompts(p, 1024, 1024)).encode_prompts(["a cat"])
    assert torch.equal(default["vector"], explicit["vector"])
