"""The application engine on real LDM/sgm UNets: hooks == merged == the webui's Lora math, per-row α,
chunked batches, step gates, and removal without a trace."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bench.common.random_sliders import random_slider
from bench.common.tiny_models import ARCHES, build_unet, unet_inputs
from lib_sliders.apply.engine import ActiveSlider, SliderEngine
from lib_sliders.errors import SliderFileError
from lib_sliders.files.lora import LoraModule


def webui_updown(module: LoraModule, weight_shape) -> torch.Tensor:
    """The built-in Lora's ``calc_updown`` for up/down weights, written out independently."""
    up, down = module.up.float(), module.down.float()
    if up.dim() == 2:
        updown = up @ down
    elif up.shape[2:] == (1, 1) and down.shape[2:] == (1, 1):
        updown = (up.squeeze(3).squeeze(2) @ down.squeeze(3).squeeze(2)).unsqueeze(2).unsqueeze(3)
    else:
        updown = F.conv2d(down.permute(1, 0, 2, 3), up).permute(1, 0, 2, 3)
    return updown.reshape(weight_shape) * module.scale


def webui_merged_output(unet, sliders: list[tuple], inputs: dict) -> torch.Tensor:
    """Output of a copy of ``unet`` whose weights got ``w += updown · multiplier`` for each slider."""
    import copy

    merged = copy.deepcopy(unet)
    with torch.no_grad():
        for network, multiplier in sliders:
            for path, module in network.unet.items():
                weight = merged.get_submodule(path).weight
                weight += webui_updown(module, weight.shape) * multiplier
        return merged(**inputs)


def state_snapshot(unet) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in unet.state_dict().items()}


def assert_bitwise_equal_state(unet, snapshot) -> None:
    for key, value in unet.state_dict().items():
        assert torch.equal(value, snapshot[key]), key


def no_hooks_left(model) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.fixture(scope="module", params=ARCHES)
def arch_unet(request):
    return request.param, build_unet(request.param)


def test_hooks_equal_merged_equal_webui_math(arch_unet):
    arch, unet = arch_unet
    inputs = unet_inputs(unet, arch, batch=2)
    first = random_slider(unet, "noxattn", rank=4, alpha=1.0, seed=1, name="a")
    second = random_slider(unet, "full", rank=2, alpha=4.0, seed=2, name="b")
    engine = SliderEngine(unet)
    with torch.no_grad():
        base = unet(**inputs)
        engine.apply([ActiveSlider(first, 1.5), ActiveSlider(second, -0.7)], mode="hooks")
        hooked = unet(**inputs)
        engine.apply([ActiveSlider(first, 1.5), ActiveSlider(second, -0.7)], mode="merged")
        merged = unet(**inputs)
        engine.clear()
    reference = webui_merged_output(unet, [(first, 1.5), (second, -0.7)], inputs)
    scale = reference.abs().max()
    assert (hooked - base).abs().max() > 1e-2 * scale, "the sliders must change the output"
    torch.testing.assert_close(hooked, reference, atol=2e-5 * scale, rtol=0)
    torch.testing.assert_close(merged, reference, atol=2e-5 * scale, rtol=0)


def test_per_row_alpha_equals_each_row_alone(arch_unet):
    arch, unet = arch_unet
    inputs = unet_inputs(unet, arch, batch=3)
    slider = random_slider(unet, "noxattn", seed=3)
    alphas = [-2.0, 0.0, 1.5]
    engine = SliderEngine(unet)
    with torch.no_grad():
        engine.apply([ActiveSlider(slider, alphas)])
        together = unet(**inputs)
        for row, alpha in enumerate(alphas):
            engine.apply([ActiveSlider(slider, alpha)])
            alone = unet(**{k: v[row:row + 1] for k, v in inputs.items()})
            torch.testing.assert_close(together[row:row + 1], alone, atol=1e-5, rtol=1e-5)
        engine.clear()


def test_chunked_calls_read_their_own_rows():
    unet = build_unet("sd1")
    inputs = unet_inputs(unet, "sd1", batch=4)
    slider = random_slider(unet, "noxattn", seed=4)
    engine = SliderEngine(unet)
    with torch.no_grad():
        engine.apply([ActiveSlider(slider, [1.0, -1.0, 2.0, 0.5])])
        whole = unet(**inputs)
        for step in range(2):  # the cursor resets every step
            engine.set_step(step, 2)
            halves = [unet(**{k: v[i:i + 2] for k, v in inputs.items()}) for i in (0, 2)]
            torch.testing.assert_close(torch.cat(halves), whole, atol=1e-5, rtol=1e-5)
        engine.clear()


def test_alpha_zero_and_removal_leave_no_trace(arch_unet):
    arch, unet = arch_unet
    inputs = unet_inputs(unet, arch)
    snapshot = state_snapshot(unet)
    slider = random_slider(unet, "full", seed=5)
    engine = SliderEngine(unet)
    with torch.no_grad():
        base = unet(**inputs)
        engine.apply([ActiveSlider(slider, 0.0)])
        assert torch.equal(unet(**inputs), base)
        engine.apply([ActiveSlider(slider, 2.0)], mode="merged")
        engine.set_alphas([-3.0])
        engine.set_alphas([0.25])
        assert not torch.equal(unet(**inputs), base)
        engine.apply([ActiveSlider(slider, [1.0, 2.0])], mode="hooks")
        engine.clear()
        assert torch.equal(unet(**inputs), base)
    assert_bitwise_equal_state(unet, snapshot)
    assert no_hooks_left(unet)


def test_step_gate_turns_slider_on_and_off():
    unet = build_unet("sd1")
    inputs = unet_inputs(unet, "sd1")
    slider = random_slider(unet, "noxattn", seed=6)
    engine = SliderEngine(unet)
    with torch.no_grad():
        base = unet(**inputs)
        engine.apply([ActiveSlider(slider, 1.0)])
        full = unet(**inputs)
        for mode in ("hooks", "merged"):
            engine.apply([ActiveSlider(slider, 1.0, start=0.3, stop=0.8)], mode=mode)
            outputs = []
            for step in range(10):
                engine.set_step(step, 10)
                outputs.append(unet(**inputs))
            for step, output in enumerate(outputs):
                expected = full if 3 <= step < 8 else base
                torch.testing.assert_close(output, expected, atol=1e-5, rtol=1e-5, msg=f"{mode} step {step}")
        engine.clear()
        assert torch.equal(unet(**inputs), base)


def test_many_sliders_compose_additively():
    unet = build_unet("sd1")
    inputs = unet_inputs(unet, "sd1")
    sliders = [random_slider(unet, preset, seed=10 + i, name=f"s{i}")
               for i, preset in enumerate(["noxattn", "xattn", "selfattn", "full", "xattn-strict"])]
    alphas = [0.5, -1.0, 2.0, 0.3, -0.4]
    engine = SliderEngine(unet)
    with torch.no_grad():
        engine.apply([ActiveSlider(s, a) for s, a in zip(sliders, alphas, strict=True)])
        composed = unet(**inputs)
        engine.clear()
    reference = webui_merged_output(unet, list(zip(sliders, alphas, strict=True)), inputs)
    torch.testing.assert_close(composed, reference, atol=2e-5 * reference.abs().max(), rtol=0)


def test_slider_for_another_model_is_refused_with_the_file_name():
    sd1, sdxl = build_unet("sd1"), build_unet("sdxl")
    network = random_slider(sd1, "noxattn")
    network.source = "/models/sliders/age.safetensors"
    with pytest.raises(SliderFileError, match=r"age\.safetensors: the model has no layer"):
        SliderEngine(sdxl).validate(network)
    other = random_slider(build_unet("sd2"), "xattn")  # same names as SD1, other context width
    other.source = "wide.safetensors"
    with pytest.raises(SliderFileError, match=r"wide\.safetensors: layer .*attn2.* doesn't fit"):
        SliderEngine(sd1).validate(other)


def test_gradients_reach_trainable_slider_weights():
    unet = build_unet("sd1")
    inputs = unet_inputs(unet, "sd1")
    slider = random_slider(unet, "noxattn", seed=7)
    for module in slider.unet.values():
        module.down.requires_grad_(True)
        module.up.requires_grad_(True)
    engine = SliderEngine(unet)
    engine.apply([ActiveSlider(slider, 1.0)])
    for _ in range(2):  # the packed weights are the live tensors: backward works every step
        unet(**inputs).square().mean().backward()
    engine.clear()
    grads = [m.up.grad for m in slider.unet.values()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0


def test_auto_mode_merges_uniform_sliders_and_hooks_per_row_ones():
    unet = build_unet("sd1")
    inputs = unet_inputs(unet, "sd1", batch=2)
    snapshot = state_snapshot(unet)
    fixed = [random_slider(unet, "noxattn", seed=20 + i, name=f"fixed{i}") for i in range(3)]
    strip = random_slider(unet, "noxattn", seed=30, name="strip")
    engine = SliderEngine(unet)
    with torch.no_grad():
        active = [ActiveSlider(s, 0.5 * (i + 1)) for i, s in enumerate(fixed)] + [ActiveSlider(strip, [-1.0, 2.0])]
        engine.apply(active, mode="hooks")
        all_hooked = unet(**inputs)
        engine.apply(active, mode="auto")
        hooked_layers = sum(1 for m in unet.modules() if m._forward_hooks) - 1  # minus the UNet's own hook
        assert hooked_layers == len(strip.unet), "only the per-row slider is hooked"
        torch.testing.assert_close(unet(**inputs), all_hooked, atol=1e-5, rtol=1e-5)
        engine.set_alphas([0.5, 1.0, 1.5, 0.7])  # the strip becomes uniform: everything merges
        assert no_hooks_left(unet)
        engine.set_alphas([0.5, 1.0, 1.5, [-1.0, 2.0]])
        torch.testing.assert_close(unet(**inputs), all_hooked, atol=1e-5, rtol=1e-5)
        engine.clear()
    assert_bitwise_equal_state(unet, snapshot)
    assert no_hooks_left(unet)


def test_weights_reloaded_in_place_are_merged_again_and_kept_on_clear():
    # The webui loads a refiner's weights into the model object it already has.
    unet = build_unet("sd1")
    inputs = unet_inputs(unet, "sd1", batch=1)
    slider = random_slider(unet, seed=7)
    engine = SliderEngine(unet)
    engine.apply([ActiveSlider(slider, alpha=1.5)], mode="merged")
    generator = torch.Generator().manual_seed(3)
    new_weights = {k: v + 0.01 * torch.randn(v.shape, generator=generator) for k, v in unet.state_dict().items()}
    unet.load_state_dict(new_weights)  # overwrites the merged deltas, as a checkpoint load does
    engine.weights_replaced()
    with torch.no_grad():
        expected = webui_merged_output(_with_state(unet, new_weights), [(slider, 1.5)], inputs)
        assert torch.allclose(unet(**inputs), expected, atol=2e-5 * expected.abs().max().item())
    engine.clear()
    assert_bitwise_equal_state(unet, new_weights)  # the new weights, not the ones the slider was merged into


def _with_state(unet, state):
    import copy

    clone = copy.deepcopy(unet)
    clone.load_state_dict(state)
    return clone


def test_sliders_applied_again_reuse_their_prepared_factors():
    """Between jobs the sliders stay loaded (fp16, as files are); their factors are converted for the model and
    packed per layer once. An in-place change of a factor is seen at the next apply."""
    from lib_sliders.apply import factor_cache

    unet = build_unet("sd1", tiny=True)
    sliders = [random_slider(unet, "noxattn", rank=2, seed=seed, name=f"s{seed}") for seed in (3, 4)]
    for slider in sliders:
        for module in slider.unet.values():
            module.down, module.up = module.down.half(), module.up.half()
    inputs = unet_inputs(unet, "sd1", batch=2)
    path, module = next(iter(sliders[0].unet.items()))
    layer = unet.get_submodule(path)

    def job():
        engine = SliderEngine(unet)  # a new job: a new engine, the same loaded sliders
        engine.apply([ActiveSlider(sliders[0], 1.5), ActiveSlider(sliders[1], -1.0)])
        with torch.no_grad():
            output = unet(**inputs)
        delta = next(d for d in engine._deltas if d.layer is layer)
        engine.clear()
        return output, delta

    first, first_delta = job()
    assert [t.dtype for t in factor_cache._CONVERTED[id(module.down)].values()] == [torch.float32]
    conversions = []
    real_to, real_cat = torch.Tensor.to, torch.cat

    def counting_to(self, *args, **kwargs):
        if self.dtype == torch.float16:
            conversions.append(self.shape)
        return real_to(self, *args, **kwargs)

    def counting_cat(*args, **kwargs):
        conversions.append("cat")
        return real_cat(*args, **kwargs)

    torch.Tensor.to, torch.cat = counting_to, counting_cat
    try:
        engine = SliderEngine(unet)
        engine.apply([ActiveSlider(sliders[0], 1.5), ActiveSlider(sliders[1], -1.0)])
        engine.clear()
    finally:
        torch.Tensor.to, torch.cat = real_to, real_cat
    assert conversions == []
    again, again_delta = job()
    assert torch.equal(again, first) and again_delta.down is first_delta.down

    module.up.mul_(0)  # changed in place: converted and packed again
    _, changed = job()
    rank = module.rank
    assert float(changed.up[:, :rank].abs().max()) == 0.0 and float(first_delta.up[:, :rank].abs().max()) > 0
    # The slider order is part of the pack (which slot belongs to which slider).
    engine = SliderEngine(unet)
    engine.apply([ActiveSlider(sliders[1], -1.0), ActiveSlider(sliders[0], 1.5)])
    swapped = next(d for d in engine._deltas if d.layer is layer)
    assert swapped.owners.tolist() == [0] * rank + [1] * rank
    assert torch.equal(swapped.down[:rank], changed.down[rank:])
    engine.clear()


def test_factors_prepared_inside_inference_mode_serve_training_later():
    """A slider applied in a Forge job (run under torch.inference_mode()) and then trained among: the engine's kept
    conversions and packs must be tensors autograd can save, not inference tensors."""
    from lib_sliders.apply.layer_delta import LayerDelta

    layer = torch.nn.Linear(8, 6).half()  # fp16 weight: the fp32 factors are converted (and kept)
    generator = torch.Generator().manual_seed(5)
    fixed = LoraModule(torch.randn(2, 8, generator=generator), torch.randn(6, 2, generator=generator), 1.0)
    other = LoraModule(torch.randn(2, 8, generator=generator), torch.randn(6, 2, generator=generator), 1.0)
    with torch.inference_mode():
        LayerDelta.pack(layer, [(0, fixed), (1, other)])
    delta = LayerDelta.pack(layer, [(0, fixed), (1, other)])  # the kept pack
    assert not delta.down.is_inference() and not delta.up.is_inference()
    x = torch.randn(3, 8, dtype=torch.float16, requires_grad=True)
    delta(x, torch.ones(3, 4)).float().sum().backward()
    assert x.grad is not None
