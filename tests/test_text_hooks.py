"""Text-encoder deltas as forward hooks (``text_mode="hooks"``): same output as merging, no weight ever written,
the current weights honoured, nothing left behind."""

from __future__ import annotations

import pytest
import torch
from test_text_encoders import HF_CHILDREN, LAYERS, WIDTH, hf_clip
from torch import nn

from lib_sliders.apply.engine import ActiveSlider, SliderEngine
from lib_sliders.files.lora import LoraModule, SliderNetwork


class Block(nn.Module):
    """OpenCLIP's ResidualAttentionBlock, in either of its layouts (SD2's ldm: sequence first)."""

    def __init__(self, batch_first: bool):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH)
        self.attn = nn.MultiheadAttention(WIDTH, 4, batch_first=batch_first)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(WIDTH, 4 * WIDTH))
        self.mlp.add_module("gelu", nn.GELU())
        self.mlp.add_module("c_proj", nn.Linear(4 * WIDTH, WIDTH))

    def forward(self, x, attn_mask=None):
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=attn_mask)[0]
        return x + self.mlp(self.ln_2(x))


class OpenClip(nn.Module):
    def __init__(self, batch_first: bool, causal: bool):
        super().__init__()
        torch.manual_seed(1)
        self.batch_first, self.causal = batch_first, causal
        self.transformer = nn.Module()
        self.transformer.resblocks = nn.ModuleList([Block(batch_first) for _ in range(LAYERS)])

    def forward(self, x):  # x: [batch, tokens, width]
        # OpenCLIP's causal mask: -inf above the diagonal.
        mask = torch.full((x.shape[1],) * 2, float("-inf")).triu_(1) if self.causal else None
        x = x if self.batch_first else x.transpose(0, 1)
        for block in self.transformer.resblocks:
            x = block(x, attn_mask=mask)
        return x if self.batch_first else x.transpose(0, 1)


def text_slider(name: str, widths: dict[str, tuple[int, int]], rank: int, seed: int, children=HF_CHILDREN,
                layers=range(LAYERS)) -> SliderNetwork:
    generator = torch.Generator().manual_seed(seed)
    modules = {}
    for layer in layers:
        for child in children:
            features_in, features_out = widths.get(child, (WIDTH, WIDTH))
            modules[f"encoder.layers.{layer}.{child}"] = LoraModule(
                torch.randn(rank, features_in, generator=generator) / features_in**0.5,
                torch.randn(features_out, rank, generator=generator), alpha=rank / 2)
    return SliderNetwork(name=name, text=[modules])


def two_sliders(widths):
    # The second packs onto some of the first's layers, with another rank.
    return (text_slider("a", widths, rank=2, seed=2),
            text_slider("b", widths, rank=3, seed=3, children=("self_attn.q_proj", "self_attn.out_proj", "mlp.fc1",
                                                                "mlp.fc2", "self_attn.v_proj"), layers=[1]))


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_unchanged(model, before):
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def no_hooks(model) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks and not m._forward_hooks_with_kwargs
               for m in model.modules())


def hf_case():
    model = hf_clip()
    tokens = torch.randint(0, 100, (2, 16), generator=torch.Generator().manual_seed(3))
    widths = {"mlp.fc1": (WIDTH, 37), "mlp.fc2": (37, WIDTH)}
    return model, lambda: model(tokens).last_hidden_state, widths


def open_clip_case(batch_first: bool, causal: bool):
    model = OpenClip(batch_first, causal).eval()
    x = torch.randn(2, 7, WIDTH, generator=torch.Generator().manual_seed(4))
    widths = {"mlp.fc1": (WIDTH, 4 * WIDTH), "mlp.fc2": (4 * WIDTH, WIDTH)}
    return model, lambda: model(x), widths


CASES = {"hf": hf_case,
         "open_clip": lambda: open_clip_case(batch_first=True, causal=True),
         "open_clip_seq_first": lambda: open_clip_case(batch_first=False, causal=True),
         "open_clip_no_mask": lambda: open_clip_case(batch_first=True, causal=False)}


def merged_output(model, run, sliders, alphas):
    engine = SliderEngine(nn.Identity(), [model], text_mode="merged")
    engine.apply([ActiveSlider(s, a) for s, a in zip(sliders, alphas, strict=True)])
    try:
        return run()
    finally:
        engine.clear()


def assert_close(actual, expected):
    torch.testing.assert_close(actual, expected, atol=2e-6 * expected.abs().max(), rtol=0)


@pytest.mark.parametrize("case", CASES)
def test_hooks_equal_merged_and_write_no_weight(case):
    model, run, widths = CASES[case]()
    sliders = two_sliders(widths)
    before = snapshot(model)
    engine = SliderEngine(nn.Identity(), [model], text_mode="hooks")
    with torch.no_grad():
        base = run()
        merged = {alphas: merged_output(model, run, sliders, alphas) for alphas in [(1.5, -0.4), (-1.0, 1.0), (0.0, 1.0)]}
        assert_unchanged(model, before)
        for slider in sliders:
            engine.validate(slider)
        engine.apply([ActiveSlider(sliders[0], 1.5), ActiveSlider(sliders[1], -0.8, text_multiplier=0.5)])
        hooked = run()
        assert_unchanged(model, before)
        assert (hooked - base).abs().max() > 1e-2 * base.abs().max(), "the sliders must change the output"
        assert_close(hooked, merged[1.5, -0.4])

        engine.set_alphas([-1.0, 2.0])  # no re-packing: the hooks read the new α
        assert_close(run(), merged[-1.0, 1.0])
        engine.set_alphas([0.0, 0.0])
        assert torch.equal(run(), base), "α 0 leaves the output bitwise untouched"
        engine.set_alphas([0.0, 2.0])  # only the second slider: the first's α 0 on a packed layer
        assert_close(run(), merged[0.0, 1.0])
        assert_unchanged(model, before)

        engine.clear()
        assert no_hooks(model)
        assert torch.equal(run(), base)
        engine.apply([ActiveSlider(sliders[0], 1.0)])
        engine.apply([])
        assert no_hooks(model)
        assert torch.equal(run(), base)
    assert_unchanged(model, before)


@pytest.mark.parametrize("case", CASES)
def test_every_target_alone(case):
    model, run, widths = CASES[case]()
    engine = SliderEngine(nn.Identity(), [model], text_mode="hooks")
    with torch.no_grad():
        base = run()
        for child in HF_CHILDREN:
            slider = text_slider(child, widths, rank=2, seed=5, children=(child,), layers=[0])
            engine.apply([ActiveSlider(slider, 2.0)])
            hooked = run()
            engine.clear()
            assert not torch.equal(hooked, base), child
            assert_close(hooked, merged_output(model, run, [slider], [2.0]))


@pytest.mark.parametrize("case", ["open_clip", "open_clip_seq_first"])
def test_weights_changed_by_someone_else_are_honoured(case):
    model, run, widths = CASES[case]()
    sliders = two_sliders(widths)
    attention = model.transformer.resblocks[1].attn
    other = torch.randn(attention.in_proj_weight.shape, generator=torch.Generator().manual_seed(6)) * 0.05
    engine = SliderEngine(nn.Identity(), [model], text_mode="hooks")
    with torch.no_grad():
        engine.apply([ActiveSlider(sliders[0], 1.0), ActiveSlider(sliders[1], 1.0)])
        hooked = run()
        # Another extension (the webui's Lora) merges its own delta in place between two calls.
        attention.in_proj_weight += other
        attention.out_proj.weight += other[:WIDTH]
        changed_base = snapshot(model)
        hooked_changed = run()
        assert_unchanged(model, changed_base)
        engine.clear()
        assert_close(hooked_changed, merged_output(model, run, sliders, [1.0, 1.0]))
        assert not torch.allclose(hooked_changed, hooked)


def attention_calls(batch_first: bool):
    """(args, kwargs) covering what ``nn.MultiheadAttention.forward`` takes, positional and by keyword."""
    tokens = 5
    generator = torch.Generator().manual_seed(8)
    x, context = torch.randn(2, tokens, WIDTH, generator=generator), torch.randn(2, tokens + 2, WIDTH, generator=generator)
    if not batch_first:
        x, context = x.transpose(0, 1), context.transpose(0, 1)
    padding = torch.zeros(2, tokens, dtype=torch.bool)
    padding[1, -2:] = True
    causal = torch.full((tokens, tokens), float("-inf")).triu_(1)
    unbatched = x[:, 0] if not batch_first else x[0]
    return [((x, x, x), {}),
            ((x, x, x, None, False, causal), {}),
            ((x, x, x), {"need_weights": False, "attn_mask": causal, "is_causal": True}),
            ((x, context, context), {"average_attn_weights": False}),
            ((x, x, x), {"key_padding_mask": padding, "attn_mask": causal.isinf()}),  # boolean masks
            ((unbatched, unbatched, unbatched), {})]


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("bias_kv", [False, True])
def test_attention_call_variants_match_merged(batch_first, bias_kv):
    torch.manual_seed(7)
    attention = nn.MultiheadAttention(WIDTH, 4, batch_first=batch_first, add_bias_kv=bias_kv, add_zero_attn=bias_kv)
    encoder = nn.Module()
    encoder.resblocks = nn.ModuleList([Block(batch_first)])
    encoder.resblocks[0].attn = attention
    generator = torch.Generator().manual_seed(9)
    slider = SliderNetwork("mha", text=[{
        f"encoder.layers.0.self_attn.{part}_proj": LoraModule(torch.randn(2, WIDTH, generator=generator),
                                                              torch.randn(WIDTH, 2, generator=generator), 1.0)
        for part in ("q", "k", "v", "out")}])
    hooks = SliderEngine(nn.Identity(), [encoder], text_mode="hooks")
    merged = SliderEngine(nn.Identity(), [encoder], text_mode="merged")
    for training in (False, True):  # training (dropout 0) leaves MHA's fast path: both paths are compared
        attention.train(training)
        for args, kwargs in attention_calls(batch_first):
            with torch.no_grad():
                base = attention(*args, **kwargs)
                hooks.apply([ActiveSlider(slider, 0.3)])
                got = attention(*args, **kwargs)
                hooks.clear()
                merged.apply([ActiveSlider(slider, 0.3)])
                want = attention(*args, **kwargs)
                merged.clear()
            assert isinstance(got, tuple) and len(got) == 2
            assert not torch.allclose(got[0], base[0])
            assert_close(got[0], want[0])
            if want[1] is None:
                assert got[1] is None
            else:
                assert_close(got[1], want[1])
    assert no_hooks(attention)


def test_text_mode_is_checked():
    with pytest.raises(ValueError, match="text_mode must be one of"):
        SliderEngine(nn.Identity(), [], text_mode="merge")


def test_linear_hook_follows_the_input_device():
    """Forge streams a partly loaded text encoder: a layer's weight stays on the CPU and is cast to the input's device
    per call. The delta must follow the input, not the weight (here the "other device" is ``meta``: no GPU needed)."""
    model, run, widths = CASES["hf"]()
    engine = SliderEngine(nn.Identity(), [model], text_mode="hooks")
    engine.apply([ActiveSlider(text_slider("a", widths, rank=2, seed=3, layers=[0]), 1.5)])
    layer = next(m for name, m in model.named_modules() if name.endswith("layers.0.self_attn.q_proj"))
    (hook,) = layer._forward_hooks.values()
    with torch.no_grad():
        x = torch.randn(2, 5, WIDTH)
        on_cpu = hook(layer, (x,), layer(x))
        on_meta = hook(layer, (x.to("meta"),), layer(x).to("meta"))
        assert on_meta.device.type == "meta" and on_meta.shape == on_cpu.shape
        assert torch.equal(hook(layer, (x,), layer(x)), on_cpu), "back on the CPU: packed there again, same output"
    engine.clear()


@pytest.mark.parametrize("case", ["hf", "open_clip"])
def test_a_text_hook_that_raises_turns_its_slider_off_and_reruns_the_encoder(case):
    """With ``contain_errors`` a slider whose text delta raises goes off, the encoder call is run again without
    it (the layers before the failing one had added their part), and the other sliders keep acting."""
    model, run, widths = CASES[case]()
    good = text_slider("good", widths, rank=2, seed=2, layers=[0])
    broken = text_slider("broken", widths, rank=2, seed=3, layers=[1])
    for module in broken.text[0].values():
        module.down = torch.empty(module.down.shape, device="meta")  # can't be brought to the CPU: raises in the hook
    heard = []
    with torch.no_grad():
        reference = merged_output(model, run, [good], [1.5])
        engine = SliderEngine(nn.Identity(), [model], text_mode="hooks")
        engine.contain_errors = True
        engine.on_failure = lambda names, err: heard.append(names)
        engine.apply([ActiveSlider(good, 1.5), ActiveSlider(broken, 2.0)])
        assert_close(run(), reference)
        assert heard == [["broken"]] and engine.failed == ["broken"]
        assert_close(run(), reference)  # off for good: no second report
        assert heard == [["broken"]]
        engine.clear()
        engine.contain_errors = False
        engine.apply([ActiveSlider(good, 1.5), ActiveSlider(broken, 2.0)])
        with pytest.raises(Exception, match="meta"):
            run()
        engine.clear()
    assert no_hooks(model)
