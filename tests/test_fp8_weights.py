"""Weights stored in fp8 (the webui's Settings → "FP8 weight"): the webui casts UNet and text-encoder Linear/Conv2d
weights to ``float8_e4m3fn`` and computes in fp16, either under autocast or through ``devices.manual_cast`` (each
module cast to the compute dtype for its forward, then back). A slider's factors must stay in the compute dtype:
in fp8 most of their small values flush to zero. And nothing may be merged into an fp8 weight.

Both ways of computing are emulated on the CPU: ``manual_cast`` below is the webui's ``manual_cast_forward``
(Linear and Conv2d), ``autocast`` is ``torch.autocast("cpu", float16)``. The reference is the same model in fp32
(its weights the fp8 values, exactly) with the slider applied in fp32.
"""

from __future__ import annotations

import contextlib
import copy
import logging

import pytest
import torch
from test_text_encoders import HF_CHILDREN, WIDTH, hf_clip
from test_text_hooks import text_slider
from torch import nn

from lib_sliders.apply.engine import ActiveSlider, SliderEngine
from lib_sliders.apply.weight_merge import Contribution, WeightMerger
from lib_sliders.files.lora import LoraModule, SliderNetwork

F8 = torch.float8_e4m3fn
COMPUTE = torch.float16


@contextlib.contextmanager
def manual_cast(target: torch.dtype):
    """The webui's ``devices.manual_cast(target)``: inputs and the module cast to ``target`` for its forward, the
    module cast back afterwards (forward hooks run after that, and see the fp8 weights again)."""
    classes = (nn.Linear, nn.Conv2d)

    def forward_wrapper(self, *args, **kwargs):
        args = [arg.to(target) if isinstance(arg, torch.Tensor) else arg for arg in args]
        kwargs = {k: v.to(target) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
        org_dtype = next((p.dtype for p in self.parameters() if p.dtype != target), target)
        if org_dtype != target:
            self.to(target)
        result = self.org_forward(*args, **kwargs)
        if org_dtype != target:
            self.to(org_dtype)
        return result

    for cls in classes:
        cls.org_forward = cls.forward
        cls.forward = forward_wrapper
    try:
        yield
    finally:
        for cls in classes:
            cls.forward = cls.org_forward
            del cls.org_forward


def computing(how: str):
    return manual_cast(COMPUTE) if how == "manual_cast" else torch.autocast("cpu", dtype=COMPUTE)


def to_fp8(model: nn.Module) -> nn.Module:
    """What the webui's ``load_model_weights`` does with FP8 weight on: Linear/Conv2d (bias included) to fp8."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.to(F8)
    return model


def fp32_twin(model: nn.Module) -> nn.Module:
    """The reference: the same weights (the fp8 values, exactly) in fp32."""
    return copy.deepcopy(model).float()


def raw(model: nn.Module) -> dict[str, torch.Tensor]:
    """Weights as bits (``torch.equal`` has no fp8 kernel on the CPU)."""
    return {k: v.detach().view(torch.uint8).clone() if v.dtype == F8 else v.detach().clone()
            for k, v in model.state_dict().items()}


def assert_bitwise(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    for key, value in raw(model).items():
        assert torch.equal(value, before[key]), key


class TinyUnet(nn.Module):
    """A 3×3 conv then a Linear over the pixels: one delta of each kind."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(8, 16, 3, padding=1)
        self.proj = nn.Linear(16, 16)

    def forward(self, x):
        h = self.conv(x)
        return self.proj(h.flatten(2).transpose(1, 2))


def small_slider() -> SliderNetwork:
    """Factor values around 1e-3: about 2/3 of them are below half fp8 e4m3's smallest step (2⁻⁹) and flush to 0.

    A large α brings the effect up to where an fp16 output resolves it (≈ 0.1 on outputs ≈ 1)."""
    g = torch.Generator().manual_seed(5)
    modules = {
        "conv": LoraModule(torch.randn(4, 8, 3, 3, generator=g) * 1e-3, torch.randn(16, 4, 1, 1, generator=g) * 1e-3, 4.0),
        "proj": LoraModule(torch.randn(4, 16, generator=g) * 1e-3, torch.randn(16, 4, generator=g) * 1e-3, 4.0),
    }
    flushed = torch.cat([t.flatten() for m in modules.values() for t in (m.down, m.up)]).to(F8).float() == 0
    assert flushed.float().mean() > 0.5  # what the test is about
    return SliderNetwork("small", unet=modules)


ALPHA = 4000.0


def effect(model, x, network, alpha, mode="hooks", context=contextlib.nullcontext):
    engine = SliderEngine(model)
    with torch.no_grad(), context():
        plain = model(x).float()
        engine.apply([ActiveSlider(network, alpha)], mode=mode)
        try:
            slid = model(x).float()
        finally:
            engine.clear()
    return slid - plain, engine


def assert_close_effect(actual, expected, rel=2e-2):
    error = float((actual - expected).abs().max())
    scale = float(expected.abs().max())
    assert scale > 0.05, scale
    assert error <= rel * scale, f"effect off by {error / scale:.1%} of its size"


@pytest.mark.parametrize("how", ["manual_cast", "autocast"])
def test_unet_slider_on_fp8_weights_equals_the_fp32_reference(how):
    model = to_fp8(TinyUnet())
    reference = fp32_twin(model)
    network = small_slider()
    x = torch.randn(3, 8, 4, 4, generator=torch.Generator().manual_seed(1)).to(COMPUTE)
    before = raw(model)
    expected, _ = effect(reference, x.float(), network, ALPHA)
    actual, _ = effect(model, x, network, ALPHA, context=lambda: computing(how))
    assert_close_effect(actual, expected)
    assert_bitwise(model, before)

    # Per-row α (hooks' own path): each row as it would be alone.
    alphas = [ALPHA, 0.0, -ALPHA / 2]
    expected, _ = effect(reference, x.float(), network, alphas)
    actual, _ = effect(model, x, network, alphas, context=lambda: computing(how))
    assert torch.equal(actual[1], torch.zeros_like(actual[1]))
    assert_close_effect(actual, expected)


@pytest.mark.parametrize("mode", ["merged", "auto"])
def test_merging_into_fp8_weights_is_refused_and_hooks_are_used(mode, caplog):
    model = to_fp8(TinyUnet())
    reference = fp32_twin(model)
    network = small_slider()
    x = torch.randn(2, 8, 4, 4, generator=torch.Generator().manual_seed(2)).to(COMPUTE)
    before = raw(model)
    expected, _ = effect(reference, x.float(), network, ALPHA, mode=mode)
    with caplog.at_level(logging.WARNING, logger="concept_sliders"):
        engine = SliderEngine(model)
        with torch.no_grad(), manual_cast(COMPUTE):
            plain = model(x).float()
            engine.apply([ActiveSlider(network, ALPHA)], mode=mode)
            assert engine.mode == "hooks"
            assert_bitwise(model, before)  # nothing merged
            slid = model(x).float()
            engine.set_alphas([ALPHA / 2])
            engine.apply([ActiveSlider(network, ALPHA)], mode=mode)  # asked again: said once per engine
            engine.clear()
    assert_close_effect(slid - plain, expected)
    assert_bitwise(model, before)
    said = [r.getMessage() for r in caplog.records if "fp8" in r.getMessage()]
    assert len(said) == 1 and "float8_e4m3fn" in said[0] and "hooks" in said[0] and "merged" in said[0]


def test_weight_merger_refuses_fp8_weights():
    layer = nn.Linear(16, 16).to(F8)
    before = layer.weight.detach().view(torch.uint8).clone()
    module = LoraModule(torch.randn(4, 16) * 1e-3, torch.randn(16, 4) * 1e-3, 4.0)
    merger = WeightMerger()
    with pytest.raises(ValueError, match="fp8|float8"):
        merger.merge({layer.weight: [Contribution(module, 1.0)]})
    assert merger.merged_weights == 0 and torch.equal(layer.weight.view(torch.uint8), before)


def text_effect(model, tokens, network, alpha, text_mode, context=contextlib.nullcontext):
    engine = SliderEngine(nn.Identity(), [model], text_mode=text_mode)
    with torch.no_grad(), context():
        plain = model(tokens).last_hidden_state.float()
        engine.apply([ActiveSlider(network, alpha)])
        try:
            slid = model(tokens).last_hidden_state.float()
        finally:
            engine.clear()
    return slid - plain


@pytest.mark.parametrize("text_mode", ["hooks", "merged"])
def test_text_encoder_slider_on_fp8_weights_equals_the_fp32_reference(text_mode):
    reference = hf_clip()
    model = to_fp8(copy.deepcopy(reference).to(COMPUTE))
    reference = fp32_twin(model)
    tokens = torch.randint(0, 100, (2, 16), generator=torch.Generator().manual_seed(3))
    # Small factors again, and a large α to lift the change above the fp16 outputs' resolution.
    network = text_slider("t", {"mlp.fc1": (WIDTH, 37), "mlp.fc2": (37, WIDTH)}, rank=2, seed=2, children=HF_CHILDREN)
    for module in network.text[0].values():
        module.down.mul_(1e-3 * WIDTH**0.5)
        module.up.mul_(1e-3)
    before = raw(model)
    expected = text_effect(reference, tokens, network, 3000.0, text_mode)
    actual = text_effect(model, tokens, network, 3000.0, text_mode, context=lambda: manual_cast(COMPUTE))
    assert_close_effect(actual, expected, rel=5e-2)  # fp16 all through the encoder
    assert_bitwise(model, before)


def test_the_webui_runtime_applies_hooks_not_merges_on_fp8_weights(caplog):
    from types import SimpleNamespace

    from lib_sliders.apply.job_plan import BatchPlan, PlannedSlider
    from lib_sliders.webui.runtime import Host, JobState, SlidersRuntime

    unet = to_fp8(TinyUnet())
    model = SimpleNamespace(model=SimpleNamespace(diffusion_model=unet), cond_stage_model=None, is_sd1=True)
    # The "merge when it can" setting, and no Lora that could write the weights: merging would be chosen.
    runtime = SlidersRuntime(Host(sd_model=lambda: model, library=lambda: None, apply_mode=lambda: "auto",
                                  lora_may_write_weights=lambda p: False))
    network = small_slider()
    plan = BatchPlan([PlannedSlider("small", network, [ALPHA], 0.0, 1.0, 1.0, 1.0, True)])
    p = SimpleNamespace(sliders_job=JobState([], plan=plan), is_hr_pass=False)
    before = raw(unet)
    with caplog.at_level(logging.WARNING, logger="concept_sliders"):
        runtime.activate(p)
    try:
        assert runtime.active and runtime._engine.mode == "hooks"
        assert_bitwise(unet, before)
    finally:
        runtime.finish(p)
    assert_bitwise(unet, before)
    assert len([r for r in caplog.records if "fp8" in r.getMessage()]) == 1


def test_open_clip_attention_slider_on_fp8_out_proj_equals_the_fp32_reference():
    """OpenCLIP (SD2, SDXL's bigG): q/k/v are rows of the attention's own ``in_proj_weight`` (kept in fp16 by the
    webui), ``out_proj`` is a Linear (fp8): the hook recomputes the attention with both, in the compute dtype."""
    from test_text_hooks import open_clip_case

    model, _, widths = open_clip_case(batch_first=True, causal=True)
    model = to_fp8(model.to(COMPUTE))
    reference = fp32_twin(model)
    x = torch.randn(2, 7, WIDTH, generator=torch.Generator().manual_seed(4))
    network = text_slider("t", widths, rank=2, seed=2, children=HF_CHILDREN)
    for module in network.text[0].values():
        module.down.mul_(1e-3 * module.down.shape[1] ** 0.5)
        module.up.mul_(1e-3)
    before = raw(model)

    def run_effect(m, inputs, context):
        engine = SliderEngine(nn.Identity(), [m], text_mode="hooks")
        with torch.no_grad(), context:
            plain = m(inputs).float()
            engine.apply([ActiveSlider(network, 30000.0)])
            try:
                return m(inputs).float() - plain
            finally:
                engine.clear()

    expected = run_effect(reference, x, contextlib.nullcontext())
    actual = run_effect(model, x.to(COMPUTE), torch.autocast("cpu", dtype=COMPUTE))
    assert_close_effect(actual, expected, rel=5e-2)
    assert_bitwise(model, before)
