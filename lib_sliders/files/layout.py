"""The full-size module tree of each supported model, computed from its config (no model is built).

``unet_layout(arch)`` lists every Linear/Conv2d of the LDM/sgm UNet the webui runs, by LDM module path;
``unet_norm_paths(arch)`` the GroupNorm/LayerNorm paths; ``text_layout(arch)`` the Linear layers of each
text encoder by HF-CLIP path. The arithmetic follows ``UNetModel.__init__`` of ldm/sgm (2 res blocks per
level, a Downsample after every level but the last, 3 output blocks per level with an Upsample at the end
of every level but the first), so the names and shapes are exactly the real ones (the tests check them
against the real classes built on the meta device).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

ARCH_IDS = ("sd1", "sd2", "sdxl")
NUM_RES_BLOCKS = 2  # every real SD1/SD2/SDXL UNet


@dataclass(frozen=True)
class ModuleShape:
    """A Linear (``kernel == (1, 1)``) or Conv2d layer's kind and weight shape."""

    kind: str  # "linear" | "conv"
    in_features: int
    out_features: int
    kernel: tuple[int, int] = (1, 1)


@dataclass(frozen=True)
class UnetSpec:
    """The config values that determine a UNet's module names and shapes."""

    model_channels: int
    channel_mult: tuple[int, ...]
    depth: tuple[int, ...]  # transformer blocks per level (0: no attention at that level)
    middle_depth: int
    context_dim: int
    linear_proj: bool  # proj_in/proj_out are Linear (SD2, SDXL) rather than 1×1 convs (SD1)
    adm_in_channels: int | None = None  # SDXL's pooled-text + size vector feeding label_emb


@dataclass(frozen=True)
class TextSpec:
    layers: int
    hidden: int
    mlp: int


UNET_SPECS = {
    "sd1": UnetSpec(320, (1, 2, 4, 4), (1, 1, 1, 0), 1, 768, linear_proj=False),
    "sd2": UnetSpec(320, (1, 2, 4, 4), (1, 1, 1, 0), 1, 1024, linear_proj=True),
    "sdxl": UnetSpec(320, (1, 2, 4), (0, 2, 10), 10, 2048, linear_proj=True, adm_in_channels=2816),
}

CLIP_L = TextSpec(layers=12, hidden=768, mlp=3072)
OPEN_CLIP_H = TextSpec(layers=24, hidden=1024, mlp=4096)
OPEN_CLIP_BIG_G = TextSpec(layers=32, hidden=1280, mlp=5120)
TEXT_SPECS = {"sd1": (CLIP_L,), "sd2": (OPEN_CLIP_H,), "sdxl": (CLIP_L, OPEN_CLIP_BIG_G)}

TEXT_LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1", "mlp.fc2")


def _spec(arch: str) -> UnetSpec:
    try:
        return UNET_SPECS[arch]
    except KeyError:
        raise KeyError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCH_IDS)}") from None


def _linear(n_in: int, n_out: int) -> ModuleShape:
    return ModuleShape("linear", n_in, n_out)


def _conv(n_in: int, n_out: int, k: int = 1) -> ModuleShape:
    return ModuleShape("conv", n_in, n_out, (k, k))


def _resblock(prefix: str, ch_in: int, ch_out: int, emb: int, layers: dict, norms: set) -> None:
    layers[f"{prefix}.in_layers.2"] = _conv(ch_in, ch_out, 3)
    layers[f"{prefix}.emb_layers.1"] = _linear(emb, ch_out)
    layers[f"{prefix}.out_layers.3"] = _conv(ch_out, ch_out, 3)
    if ch_in != ch_out:  # else the skip is an Identity
        layers[f"{prefix}.skip_connection"] = _conv(ch_in, ch_out)
    norms.update({f"{prefix}.in_layers.0", f"{prefix}.out_layers.0"})


def _transformer(prefix: str, ch: int, depth: int, spec: UnetSpec, layers: dict, norms: set) -> None:
    proj = _linear(ch, ch) if spec.linear_proj else _conv(ch, ch)  # inner dim == channels in every SD
    layers[f"{prefix}.proj_in"] = proj
    for k in range(depth):
        block = f"{prefix}.transformer_blocks.{k}"
        for attn, context in (("attn1", ch), ("attn2", spec.context_dim)):
            layers[f"{block}.{attn}.to_q"] = _linear(ch, ch)
            layers[f"{block}.{attn}.to_k"] = _linear(context, ch)
            layers[f"{block}.{attn}.to_v"] = _linear(context, ch)
            layers[f"{block}.{attn}.to_out.0"] = _linear(ch, ch)
        layers[f"{block}.ff.net.0.proj"] = _linear(ch, ch * 8)  # GEGLU: value and gate, 4× each
        layers[f"{block}.ff.net.2"] = _linear(ch * 4, ch)
        norms.update(f"{block}.norm{n}" for n in (1, 2, 3))
    layers[f"{prefix}.proj_out"] = proj
    norms.add(f"{prefix}.norm")


@cache
def _unet_tree(arch: str) -> tuple[dict[str, ModuleShape], frozenset[str]]:
    spec = _spec(arch)
    mc, emb = spec.model_channels, spec.model_channels * 4
    layers: dict[str, ModuleShape] = {}
    norms: set[str] = set()
    layers["time_embed.0"] = _linear(mc, emb)
    layers["time_embed.2"] = _linear(emb, emb)
    if spec.adm_in_channels:
        layers["label_emb.0.0"] = _linear(spec.adm_in_channels, emb)
        layers["label_emb.0.2"] = _linear(emb, emb)

    layers["input_blocks.0.0"] = _conv(4, mc, 3)
    skip_channels = [mc]
    ch, block = mc, 1
    last = len(spec.channel_mult) - 1
    for level, mult in enumerate(spec.channel_mult):
        for _ in range(NUM_RES_BLOCKS):
            _resblock(f"input_blocks.{block}.0", ch, mc * mult, emb, layers, norms)
            ch = mc * mult
            if spec.depth[level]:
                _transformer(f"input_blocks.{block}.1", ch, spec.depth[level], spec, layers, norms)
            skip_channels.append(ch)
            block += 1
        if level != last:
            layers[f"input_blocks.{block}.0.op"] = _conv(ch, ch, 3)
            skip_channels.append(ch)
            block += 1

    _resblock("middle_block.0", ch, ch, emb, layers, norms)
    _transformer("middle_block.1", ch, spec.middle_depth, spec, layers, norms)
    _resblock("middle_block.2", ch, ch, emb, layers, norms)

    block = 0
    for level in reversed(range(len(spec.channel_mult))):
        out = mc * spec.channel_mult[level]
        for i in range(NUM_RES_BLOCKS + 1):
            _resblock(f"output_blocks.{block}.0", ch + skip_channels.pop(), out, emb, layers, norms)
            ch, index = out, 1
            if spec.depth[level]:
                _transformer(f"output_blocks.{block}.1", ch, spec.depth[level], spec, layers, norms)
                index = 2
            if level and i == NUM_RES_BLOCKS:
                layers[f"output_blocks.{block}.{index}.conv"] = _conv(ch, ch, 3)
            block += 1

    norms.add("out.0")
    layers["out.2"] = _conv(mc, 4, 3)
    return layers, frozenset(norms)


def unet_layout(arch: str) -> dict[str, ModuleShape]:
    """Every Linear/Conv2d of the full-size ``arch`` UNet by LDM module path (a shared cached dict: don't mutate)."""
    return _unet_tree(arch)[0]


def unet_norm_paths(arch: str) -> frozenset[str]:
    """The GroupNorm/LayerNorm module paths of the full-size ``arch`` UNet."""
    return _unet_tree(arch)[1]


def up_block_has_attention(arch: str, block: int) -> bool:
    """Whether diffusers' ``up_blocks.{block}`` (LDM level ``levels - 1 - block``) has transformers."""
    spec = _spec(arch)
    return bool(spec.depth[len(spec.channel_mult) - 1 - block])


@cache
def text_layout(arch: str) -> list[dict[str, ModuleShape]]:
    """Per text encoder, its Linear layers by HF-CLIP path inside ``text_model`` (cached: don't mutate)."""
    _spec(arch)
    encoders = []
    for spec in TEXT_SPECS[arch]:
        layers = {}
        for i in range(spec.layers):
            for name in TEXT_LINEARS[:4]:
                layers[f"encoder.layers.{i}.{name}"] = _linear(spec.hidden, spec.hidden)
            layers[f"encoder.layers.{i}.mlp.fc1"] = _linear(spec.hidden, spec.mlp)
            layers[f"encoder.layers.{i}.mlp.fc2"] = _linear(spec.mlp, spec.hidden)
        encoders.append(layers)
    return encoders
