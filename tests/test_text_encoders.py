"""Text-encoder deltas: merged into HF CLIP layers and into OpenCLIP's fused q/k/v, restored bitwise."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from lib_sliders.apply.engine import ActiveSlider, SliderEngine
from lib_sliders.apply.text_targets import text_layer_index
from lib_sliders.files.lora import LoraModule, SliderNetwork

WIDTH, LAYERS = 32, 2
HF_CHILDREN = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1", "mlp.fc2")


def hf_clip():
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    config = CLIPTextConfig(vocab_size=100, hidden_size=WIDTH, intermediate_size=37, num_hidden_layers=LAYERS,
                            num_attention_heads=4, max_position_embeddings=16, bos_token_id=0,
                            eos_token_id=1, pad_token_id=1)
    return CLIPTextModel(config).eval()


class ResidualAttentionBlock(nn.Module):
    """OpenCLIP's block layout: fused-projection MultiheadAttention ``attn`` and ``mlp.c_fc/c_proj``."""

    def __init__(self, width: int):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, 4, batch_first=True)
        self.mlp = nn.Sequential(OrderedDict(c_fc=nn.Linear(width, 4 * width), gelu=nn.GELU(),
                                             c_proj=nn.Linear(4 * width, width)))

    def forward(self, x):
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class OpenClipText(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.transformer = nn.Module()
        self.transformer.resblocks = nn.Sequential(*[ResidualAttentionBlock(WIDTH) for _ in range(LAYERS)])

    def forward(self, x):
        return self.transformer.resblocks(x)


def random_text_slider(intermediate: dict[str, int]) -> dict[str, LoraModule]:
    generator = torch.Generator().manual_seed(2)
    modules = {}
    for layer in range(LAYERS):
        for child in HF_CHILDREN:
            features_in = intermediate.get(child, WIDTH) if child == "mlp.fc2" else WIDTH
            features_out = intermediate.get(child, WIDTH) if child == "mlp.fc1" else WIDTH
            modules[f"encoder.layers.{layer}.{child}"] = LoraModule(
                torch.randn(2, features_in, generator=generator) / features_in**0.5,
                torch.randn(features_out, 2, generator=generator), alpha=1.0)
    return modules


def test_hf_clip_layers_are_merged_and_restored():
    clip = hf_clip()
    tokens = torch.randint(0, 100, (2, 16), generator=torch.Generator().manual_seed(3))
    modules = random_text_slider({"mlp.fc1": 37, "mlp.fc2": 37})
    assert set(modules) <= set(text_layer_index(clip))
    network = SliderNetwork(name="te", text=[modules])
    snapshot = {k: v.clone() for k, v in clip.state_dict().items()}
    originals = {path: slot.weight.clone() for path, slot in text_layer_index(clip).items()}
    with torch.no_grad():
        base = clip(tokens).last_hidden_state
        engine = SliderEngine(torch.nn.Identity(), text_encoders=[clip])
        engine.validate(network)
        engine.apply([ActiveSlider(network, alpha=0.8, text_multiplier=0.5)])
        slid = clip(tokens).last_hidden_state
        slots = text_layer_index(clip)
        for path, module in modules.items():
            expected = originals[path] + (module.up @ module.down) * module.scale * 0.4
            torch.testing.assert_close(slots[path].weight, expected)
        engine.clear()
        assert torch.equal(clip(tokens).last_hidden_state, base)
    assert not torch.equal(slid, base)
    for key, value in clip.state_dict().items():
        assert torch.equal(value, snapshot[key]), key


def test_open_clip_fused_qkv_get_their_third():
    model = OpenClipText().eval()
    x = torch.randn(2, 5, WIDTH, generator=torch.Generator().manual_seed(4))
    modules = random_text_slider({"mlp.fc1": 4 * WIDTH, "mlp.fc2": 4 * WIDTH})
    network = SliderNetwork(name="te2", text=[{}, modules])
    original = model.transformer.resblocks[1].attn.in_proj_weight.clone()
    engine = SliderEngine(torch.nn.Identity(), text_encoders=[torch.nn.Identity(), model])
    engine.validate(network)
    with torch.no_grad():
        base = model(x)
        engine.apply([ActiveSlider(network, alpha=2.0)])
        fused = model.transformer.resblocks[1].attn.in_proj_weight
        for third, letter in enumerate("qkv"):
            module = modules[f"encoder.layers.1.self_attn.{letter}_proj"]
            rows = slice(third * WIDTH, (third + 1) * WIDTH)
            torch.testing.assert_close(fused[rows], original[rows] + 2.0 * module.scale * (module.up @ module.down))
        assert not torch.equal(model(x), base)
        engine.clear()
        assert torch.equal(model(x), base)
        assert torch.equal(model.transformer.resblocks[1].attn.in_proj_weight, original)


@pytest.mark.parametrize("encoder", ["hf", "open_clip"])
def test_a_text_slider_for_another_width_is_refused_before_the_forward(encoder):
    """Caught by ``validate`` (where the webui reports it and generates without it), not inside the text encoder."""
    from lib_sliders.errors import SliderFileError

    modules = random_text_slider({"mlp.fc1": 37, "mlp.fc2": 37} if encoder == "hf" else {"mlp.fc1": 4 * WIDTH,
                                                                                          "mlp.fc2": 4 * WIDTH})
    path = "encoder.layers.1.self_attn.k_proj"
    modules[path] = LoraModule(torch.randn(2, WIDTH + 8), torch.randn(WIDTH, 2), alpha=1.0)
    model = hf_clip() if encoder == "hf" else OpenClipText().eval()
    engine = SliderEngine(torch.nn.Identity(), text_encoders=[model])
    network = SliderNetwork(name="wide", text=[modules], source="/sliders/wide.safetensors")
    with pytest.raises(SliderFileError, match=rf"wide\.safetensors.*{path}: shape {WIDTH}×{WIDTH + 8} doesn't fit"):
        engine.validate(network)
