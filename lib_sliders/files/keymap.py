"""Module-name mapping between diffusers, LDM/SGM and kohya file names, by string arithmetic alone.

UNet: diffusers (``down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q``) ⇄ LDM/SGM
(``input_blocks.1.1.transformer_blocks.0.attn1.to_q``), the module tree the webui runs. Every mapped path is
checked against the full-size structure of the given arch (``layout``), so a name that the arch lacks raises
``KeyError``; callers use that to tell which architectures a file fits.

Files (kohya): ``lora_unet_`` + module path with ``.``→``_`` (diffusers names for SD1/SD2, SGM names for
SDXL; we read both for every arch), ``lora_te_``/``lora_te1_``/``lora_te2_`` + HF-CLIP path. Undoing the
``.``→``_`` is unambiguous because every multi-word name component comes from a fixed vocabulary.
"""

from __future__ import annotations

import re

from .layout import ARCH_IDS, TEXT_LINEARS, text_layout, unet_layout, unet_norm_paths, up_block_has_attention

UNET_PREFIX = "lora_unet_"
TEXT_PREFIXES = {"lora_te_": 0, "lora_te1_": 0, "lora_te2_": 1}

# Name components that contain an underscore (longest first, so no word is cut short by another it starts
# with). Everything else in a module path is a single word or a number.
_COMPOUND_WORDS = sorted(
    [
        "diffusion_model", "input_blocks", "middle_block", "output_blocks", "in_layers", "out_layers",
        "emb_layers", "skip_connection", "time_embed", "label_emb", "transformer_blocks", "proj_in",
        "proj_out", "to_q", "to_k", "to_v", "to_out", "down_blocks", "up_blocks", "mid_block", "conv_in",
        "conv_out", "conv_norm_out", "conv_shortcut", "time_emb_proj", "time_embedding", "add_embedding",
        "linear_1", "linear_2", "text_model", "self_attn", "q_proj", "k_proj", "v_proj", "out_proj",
    ],
    key=len,
    reverse=True,
)
_COMPOUND = re.compile(r"(?<![^.])(" + "|".join(re.escape(w.replace("_", ".")) for w in _COMPOUND_WORDS) + r")(?![^.])")

_RESNET_TO_LDM = {
    "conv1": "in_layers.2",
    "conv2": "out_layers.3",
    "norm1": "in_layers.0",
    "norm2": "out_layers.0",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
_RESNET_TO_DIFFUSERS = {ldm: diffusers for diffusers, ldm in _RESNET_TO_LDM.items()}
_TOP_TO_LDM = {
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
}
_TOP_TO_DIFFUSERS = {ldm: diffusers for diffusers, ldm in _TOP_TO_LDM.items()}

_ATTENTION_INNER = re.compile(
    r"norm|proj_in|proj_out|transformer_blocks\.\d+\."
    r"(attn[12]\.(to_q|to_k|to_v|to_out\.0)|ff\.net\.0\.proj|ff\.net\.2|norm[123])"
)
_DIFFUSERS_BLOCK = re.compile(r"(down_blocks|up_blocks)\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)")
_DIFFUSERS_MID = re.compile(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)")
_DIFFUSERS_SAMPLER = re.compile(r"(down_blocks|up_blocks)\.(\d+)\.(downsamplers|upsamplers)\.0\.conv")
_LDM_BLOCK = re.compile(r"(input_blocks|output_blocks)\.(\d+)\.(\d+)(?:\.(.+))?")
_LDM_MID = re.compile(r"middle_block\.(\d+)\.(.+)")

_TEXT_PATH = re.compile(r"encoder\.layers\.(\d+)\.(" + "|".join(re.escape(n) for n in TEXT_LINEARS) + ")")


def _check_arch(arch: str) -> None:
    if arch not in ARCH_IDS:
        raise KeyError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCH_IDS)}")


def _check_ldm(path: str, arch: str, original: str) -> str:
    """``path`` if the full-size ``arch`` UNet has that module, else KeyError naming ``original``."""
    if path in unet_layout(arch) or path in unet_norm_paths(arch):
        return path
    raise KeyError(f"{original!r} is not a module of the {arch} UNet")


def _inner_to_ldm(kind: str, inner: str, original: str) -> str:
    if kind == "resnets":
        if inner not in _RESNET_TO_LDM:
            raise KeyError(f"{original!r}: unknown resnet layer {inner!r}")
        return _RESNET_TO_LDM[inner]
    if not _ATTENTION_INNER.fullmatch(inner):
        raise KeyError(f"{original!r}: unknown attention layer {inner!r}")
    return inner


def _unchecked_diffusers_to_ldm(path: str, arch: str) -> str:
    if path in _TOP_TO_LDM:
        return _TOP_TO_LDM[path]
    if match := _DIFFUSERS_BLOCK.fullmatch(path):
        side, b, kind, i, inner = match.groups()
        b, i = int(b), int(i)
        block = f"input_blocks.{1 + 3 * b + i}" if side == "down_blocks" else f"output_blocks.{3 * b + i}"
        return f"{block}.{0 if kind == 'resnets' else 1}.{_inner_to_ldm(kind, inner, path)}"
    if match := _DIFFUSERS_MID.fullmatch(path):
        kind, i, inner = match.groups()
        index = 2 * int(i) if kind == "resnets" else int(i) + 1  # attentions.0 → middle_block.1
        if kind == "attentions" and index != 1:
            raise KeyError(f"{path!r} is not a module of the {arch} UNet")
        return f"middle_block.{index}.{_inner_to_ldm(kind, inner, path)}"
    if match := _DIFFUSERS_SAMPLER.fullmatch(path):
        side, b, sampler = match.groups()
        b = int(b)
        if (side == "down_blocks") != (sampler == "downsamplers"):
            raise KeyError(f"{path!r}: {sampler} in {side}")
        if side == "down_blocks":
            return f"input_blocks.{3 + 3 * b}.0.op"
        # The Upsample follows the block's transformer when it has one (the webui's Lora assumes
        # "b > 0", which is wrong for SDXL's up_blocks.0).
        return f"output_blocks.{3 * b + 2}.{2 if up_block_has_attention(arch, b) else 1}.conv"
    raise KeyError(f"{path!r} is not a diffusers UNet module name")


def diffusers_to_ldm(path: str, arch: str) -> str:
    """The LDM/SGM module path of diffusers UNet module ``path`` (KeyError if ``arch`` has no such module)."""
    _check_arch(arch)
    try:
        ldm = _unchecked_diffusers_to_ldm(path, arch)
    except IndexError:  # up block index past the arch's levels
        raise KeyError(f"{path!r} is not a module of the {arch} UNet") from None
    return _check_ldm(ldm, arch, path)


def ldm_to_diffusers(path: str, arch: str) -> str:
    """The diffusers module path of LDM/SGM UNet module ``path`` (KeyError if ``arch`` has no such module)."""
    _check_arch(arch)
    _check_ldm(path, arch, path)  # from here on the path is known to exist, so the arithmetic is safe
    if path in _TOP_TO_DIFFUSERS:
        return _TOP_TO_DIFFUSERS[path]
    if match := _LDM_MID.fullmatch(path):
        index, inner = int(match.group(1)), match.group(2)
        if index == 1:
            return f"mid_block.attentions.0.{inner}"
        return f"mid_block.resnets.{index // 2}.{_RESNET_TO_DIFFUSERS[inner]}"
    side, n, j, inner = _LDM_BLOCK.fullmatch(path).groups()
    n, j = int(n), int(j)
    if side == "input_blocks":
        b, i = divmod(n - 1, 3)
        if i == 2:
            return f"down_blocks.{b}.downsamplers.0.conv"
    else:
        b, i = divmod(n, 3)
        if inner == "conv":  # the Upsample, after the resnet and any transformer
            return f"up_blocks.{b}.upsamplers.0.conv"
    block = "down_blocks" if side == "input_blocks" else "up_blocks"
    if j == 0:
        return f"{block}.{b}.resnets.{i}.{_RESNET_TO_DIFFUSERS[inner]}"
    return f"{block}.{b}.attentions.{i}.{inner}"


def undot_flat(flat: str) -> str:
    """``down_blocks_0_attentions_0_proj_in`` → ``down_blocks.0.attentions.0.proj_in`` (module name vocabulary)."""
    return _COMPOUND.sub(lambda m: m.group(1).replace(".", "_"), flat.replace("_", "."))


def unet_file_key_to_ldm(flat: str, arch: str) -> str:
    """The LDM module path of a kohya UNet module name, diffusers- or LDM/SGM-named.

    ``flat`` is the part after ``lora_unet_`` (the prefix, or the webui's ``diffusion_model_``, may also be
    left on). KeyError if it names no module of the ``arch`` UNet.
    """
    _check_arch(arch)
    rest = flat
    for prefix in (UNET_PREFIX, "diffusion_model_"):
        rest = rest.removeprefix(prefix)
    path = undot_flat(rest)
    if path.startswith(("input_blocks.", "middle_block.", "output_blocks.", "time_embed.", "label_emb.", "out.")):
        return _check_ldm(path, arch, flat)
    try:
        return diffusers_to_ldm(path, arch)
    except KeyError:
        raise KeyError(f"{flat!r} is not a module of the {arch} UNet") from None


def ldm_to_unet_file_key(ldm_path: str, arch: str) -> str:
    """What kohya writes for LDM module ``ldm_path``: diffusers names for SD1/SD2, SGM names for SDXL."""
    name = _check_ldm(ldm_path, arch, ldm_path) if arch == "sdxl" else ldm_to_diffusers(ldm_path, arch)
    return UNET_PREFIX + name.replace(".", "_")


def _check_text_path(path: str, original: str) -> str:
    if not _TEXT_PATH.fullmatch(path):
        raise KeyError(f"{original!r} is not a text-encoder attention/MLP layer")
    return path


def text_file_key_to_path(flat_full_key: str) -> tuple[int, str]:
    """``lora_te2_text_model_encoder_layers_0_mlp_fc1`` → ``(1, "encoder.layers.0.mlp.fc1")``.

    Encoder 0 is ``lora_te_`` (SD1/SD2) or ``lora_te1_`` (SDXL's CLIP-L), 1 is ``lora_te2_`` (SDXL's bigG);
    the path is the HF-CLIP path inside ``text_model``. Layer counts are not checked here (see ``layout``).
    """
    for prefix, index in TEXT_PREFIXES.items():
        if flat_full_key.startswith(prefix + "text_model_"):
            path = undot_flat(flat_full_key[len(prefix) + len("text_model_") :])
            return index, _check_text_path(path, flat_full_key)
    raise KeyError(f"{flat_full_key!r} is not a kohya text-encoder module name")


def path_to_text_file_key(index: int, path: str, arch: str) -> str:
    """The kohya name of text encoder ``index``'s module ``path``: ``lora_te_…`` or ``lora_te1_``/``lora_te2_…``."""
    _check_arch(arch)
    encoders = text_layout(arch)
    if not 0 <= index < len(encoders) or path not in encoders[index]:
        raise KeyError(f"{path!r} is not a layer of {arch} text encoder {index}")
    prefix = f"lora_te{index + 1}_" if arch == "sdxl" else "lora_te_"
    return prefix + "text_model_" + _check_text_path(path, path).replace(".", "_")


def split_file_key(key: str) -> tuple[str, str]:
    """``lora_unet_x.lora_down.weight`` → ``("lora_unet_x", "lora_down.weight")`` (module names have no dots)."""
    module, dot, param = key.partition(".")
    if not dot or not module or not param:
        raise KeyError(f"{key!r} is not a <module>.<parameter> tensor name")
    return module, param
