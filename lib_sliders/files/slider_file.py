"""Reading and writing slider files.

Read: kohya-format ``.safetensors`` and the official trainer's pickled ``.pt``/``.ckpt``/``.bin`` (only
through ``torch.load(weights_only=True)``), with ``lora_down``/``lora_up``/``alpha`` per module, LoCon convs
(a k×k ``down``, or the CP form with ``lora_mid``), or PEFT's ``lora_A``/``lora_B`` on kohya names. UNet names
may be diffusers- or SGM-style; modules end up keyed by the LDM path the webui runs.

Write: ``.safetensors`` with exactly what kohya writes for the arch (diffusers names for SD1/SD2, SGM names for
SDXL, a 0-dim ``.alpha`` per module, no other tensors) and kohya/ModelSpec/our metadata (``metadata.py``),
atomically (a temp file in the same folder, then ``os.replace``).

Every problem with a file is a ``SliderFileError`` naming the file, with a one-line reason.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from safetensors import safe_open

from ..errors import SliderFileError
from .arch import ARCH_LABELS, ARCHES, detect_arch
from .keymap import (
    TEXT_PREFIXES,
    UNET_PREFIX,
    ldm_to_unet_file_key,
    path_to_text_file_key,
    split_file_key,
    text_file_key_to_path,
    unet_file_key_to_ldm,
)
from .layout import text_layout
from .lora import LoraModule, SliderNetwork, fold_cp_mid
from .metadata import DEFAULT_ALPHA_RANGE, DEFAULT_START, add_hashes, build_metadata

PICKLE_SUFFIXES = (".pt", ".ckpt", ".bin")
SUFFIXES = (".safetensors", *PICKLE_SUFFIXES)
LORA_PREFIXES = (UNET_PREFIX, *TEXT_PREFIXES)

# The tensors a LoRA/LoCon module may have (kohya names, PEFT names, LoCon's CP middle).
_DOWN = ("lora_down.weight", "lora_A.weight")
_UP = ("lora_up.weight", "lora_B.weight")
_MID = "lora_mid.weight"
_ALPHA = "alpha"

# Parameter-name prefixes of the LyCORIS types we don't apply, for a precise refusal.
_LYCORIS_TYPES = (
    ("hada_", "LoHa"),
    ("lokr_", "LoKr"),
    ("boft_", "BOFT"),
    ("oft_", "OFT"),
    ("diff", "full (diff)"),
    ("w_norm", "norm"),
    ("b_norm", "norm"),
    ("dora_scale", "DoRA"),
)


def arch_label(arches) -> str:
    """``{"sd1", "sd2"}`` → ``"SD 1.x or SD 2.x"``."""
    labels = [ARCH_LABELS[a] for a in ARCHES if a in arches]
    return " or ".join(labels) if labels else "an unknown model"


# --------------------------------------------------------------------------- reading


def _check_path(path: Path) -> None:
    try:
        if not path.exists():
            raise SliderFileError(path, "file not found")
        if not path.is_file():
            raise SliderFileError(path, "not a file")
        if path.suffix.lower() not in SUFFIXES:
            raise SliderFileError(path, f"unsupported file type {path.suffix or '(none)'!r}; expected {', '.join(SUFFIXES)}")
        if path.stat().st_size == 0:
            raise SliderFileError(path, "file is empty")
    except OSError as error:  # e.g. a folder we may not look into
        raise SliderFileError(path, f"cannot read: {error.strerror or error}") from None


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as file:
            metadata = dict(file.metadata() or {})
            tensors = {key: file.get_tensor(key) for key in file.keys()}
    except OSError as error:
        raise SliderFileError(path, f"cannot read: {error.strerror or error}") from None
    except Exception:  # safetensors raises its own error type (and others) for every kind of damage
        raise SliderFileError(path, "file is truncated or not a safetensors file") from None
    return tensors, metadata


def _read_pickle(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with open(path, "rb") as file:
            magic = file.read(2)
    except OSError as error:
        raise SliderFileError(path, f"cannot read: {error.strerror or error}") from None
    # torch.save writes a zip ("PK"); older torch and plain pickle start with the PROTO opcode.
    if magic != b"PK" and magic[:1] != b"\x80":
        raise SliderFileError(path, "not a PyTorch checkpoint (unknown file format)")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # weights_only names the class it refused ("Unsupported global: ..."); other unpickling errors
        # are damaged or foreign data.
        if "global" in str(error).lower():
            raise SliderFileError(path, "refusing to unpickle objects other than tensors (only weights are loaded)") from None
        raise SliderFileError(path, "file is truncated or not a PyTorch checkpoint") from None
    except OSError as error:
        raise SliderFileError(path, f"cannot read: {error.strerror or error}") from None
    except Exception:
        raise SliderFileError(path, "file is truncated or not a PyTorch checkpoint") from None
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]  # some tools wrap the weights
    if not isinstance(loaded, Mapping):
        raise SliderFileError(path, f"not a LoRA: the file holds a {type(loaded).__name__}, not a state dict")
    tensors = {str(key): value for key, value in loaded.items() if isinstance(value, torch.Tensor)}
    return tensors, {}


def _read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if path.suffix.lower() == ".safetensors":
        return _read_safetensors(path)
    return _read_pickle(path)


def _check_is_lora(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    if any(key.startswith(LORA_PREFIXES) for key in tensors):
        return
    lora_like = next((key for key in tensors if "lora" in key.lower()), None)
    if lora_like is not None:
        raise SliderFileError(path, f"not a kohya-format LoRA: keys like {lora_like!r} (diffusers/PEFT naming) are not supported; expected lora_unet_/lora_te_ keys")
    raise SliderFileError(path, "not a LoRA: no lora_unet_/lora_te_ keys (is this a checkpoint?)")


def _group_by_module(path: Path, tensors: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """``{module key: {parameter name: tensor}}``; refuses tensors outside ``lora_*`` modules."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    foreign = []
    for key, tensor in tensors.items():
        try:
            module, param = split_file_key(key)
        except KeyError:
            module, param = key, ""
        if not module.startswith(LORA_PREFIXES) or not param:
            foreign.append(key)
            continue
        groups.setdefault(module, {})[param] = tensor
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise SliderFileError(path, f"unexpected tensor {foreign[0]!r}{more} (not part of a lora_unet_/lora_te_ module)")
    return groups


def _check_network_type(path: Path, groups: Mapping[str, Mapping[str, torch.Tensor]]) -> None:
    for module, params in groups.items():
        for param in params:
            for prefix, kind in _LYCORIS_TYPES:
                if param.startswith(prefix):
                    raise SliderFileError(path, f"unsupported network type {kind} (only LoRA/LoCon sliders are supported; {module}.{param})")
            if param not in (*_DOWN, *_UP, _MID, _ALPHA):
                raise SliderFileError(path, f"unexpected tensor {module}.{param} (expected lora_down/lora_up/alpha)")


def _pick(path: Path, module: str, params: Mapping[str, torch.Tensor], names: tuple[str, str]) -> torch.Tensor | None:
    present = [name for name in names if name in params]
    if len(present) > 1:
        raise SliderFileError(path, f"module {module} has both {present[0]} and {present[1]}")
    return params[present[0]] if present else None


def _build_module(path: Path, module: str, params: Mapping[str, torch.Tensor]) -> LoraModule:
    down = _pick(path, module, params, _DOWN)
    up = _pick(path, module, params, _UP)
    mid = params.get(_MID)
    if down is None and up is None:
        raise SliderFileError(path, f"module {module} has no lora_down/lora_up weights")
    if down is None or up is None:
        have, lack = ("lora_down", "lora_up") if up is None else ("lora_up", "lora_down")
        raise SliderFileError(path, f"module {module} has {have} but no {lack}")
    for tensor in (down, up, mid):
        if tensor is not None and not tensor.is_floating_point():
            raise SliderFileError(path, f"module {module} has non-float weights ({tensor.dtype})")
    if down.dim() not in (2, 4) or up.dim() != down.dim() or (up.dim() == 4 and tuple(up.shape[2:]) != (1, 1)):
        raise SliderFileError(path, f"module {module} has unsupported shapes: lora_down {tuple(down.shape)}, lora_up {tuple(up.shape)}")
    if down.shape[0] != up.shape[1]:
        raise SliderFileError(path, f"rank mismatch in module {module}: lora_down has rank {down.shape[0]}, lora_up has rank {up.shape[1]}")
    if mid is not None:
        if down.dim() != 4 or tuple(down.shape[2:]) != (1, 1) or mid.dim() != 4 or tuple(mid.shape[:2]) != (up.shape[1], down.shape[0]):
            raise SliderFileError(path, f"module {module} has a lora_mid {tuple(mid.shape)} that doesn't fit lora_down {tuple(down.shape)} / lora_up {tuple(up.shape)}")
        # CP form as one k×k down; folded in float32 so half-precision files don't lose more.
        down = fold_cp_mid(down.float(), mid.float())
        up = up.float()
    rank = down.shape[0]
    alpha_tensor = params.get(_ALPHA)
    if alpha_tensor is None:
        alpha = float(rank)  # kohya/webui convention: no alpha means scale 1
    elif alpha_tensor.numel() != 1 or not torch.isfinite(alpha_tensor.float()).all():
        raise SliderFileError(path, f"module {module} has a bad alpha (shape {tuple(alpha_tensor.shape)})")
    else:
        alpha = float(alpha_tensor.float().item())
    return LoraModule(down=down.detach().contiguous(), up=up.detach().contiguous(), alpha=alpha)


def _known_module(key: str) -> bool:
    """Whether ``key`` names a UNet or text-encoder layer of any supported architecture."""
    if key.startswith(UNET_PREFIX):
        for arch in ARCHES:
            try:
                unet_file_key_to_ldm(key[len(UNET_PREFIX):], arch)
                return True
            except KeyError:
                pass
        return False
    try:
        index, layer = text_file_key_to_path(key)
    except KeyError:
        return False
    return any(index < len(text_layout(arch)) and layer in text_layout(arch)[index] for arch in ARCHES)


def _check_known(path: Path, modules: Mapping[str, LoraModule]) -> None:
    unknown = [key for key in modules if not _known_module(key)]
    if unknown:
        more = f" and {len(unknown) - 1} more" if len(unknown) > 1 else ""
        raise SliderFileError(path, f"unknown module {unknown[0]!r}{more} (not a layer of an SD 1.x, SD 2.x or SDXL UNet/text encoder)")


def _place_modules(path: Path, modules: Mapping[str, LoraModule], arch: str) -> tuple[dict[str, LoraModule], list[dict[str, LoraModule]]]:
    """Key the modules by the model's paths: LDM paths for the UNet, HF-CLIP paths per text encoder."""
    unet: dict[str, LoraModule] = {}
    text: list[dict[str, LoraModule]] = [{} for _ in text_layout(arch)]
    origin: dict[tuple[int, str], str] = {}
    for key, module in modules.items():
        try:
            if key.startswith(UNET_PREFIX):
                slot, target = -1, unet_file_key_to_ldm(key[len(UNET_PREFIX):], arch)
            else:
                slot, target = text_file_key_to_path(key)
        except KeyError:
            raise SliderFileError(path, f"unknown architecture: module {key!r} is not a layer of {ARCH_LABELS[arch]}") from None
        if (slot, target) in origin:  # e.g. one layer under both its diffusers and its SGM name
            raise SliderFileError(path, f"modules {origin[slot, target]!r} and {key!r} are the same layer")
        origin[slot, target] = key
        (unet if slot == -1 else text[slot])[target] = module
    return unet, text


def load_slider(path: str | os.PathLike, *, name: str | None = None) -> SliderNetwork:
    """Read a slider (LoRA) file; its modules keyed by LDM path (UNet) and HF-CLIP path (text encoders)."""
    path = Path(path)
    _check_path(path)
    tensors, metadata = _read_tensors(path)
    _check_is_lora(path, tensors)
    groups = _group_by_module(path, tensors)
    _check_network_type(path, groups)
    modules = {key: _build_module(path, key, params) for key, params in groups.items()}
    _check_known(path, modules)
    arches = detect_arch(modules, metadata)
    if not arches:
        raise SliderFileError(path, "unknown architecture: its modules don't all fit one of SD 1.x, SD 2.x or SDXL")
    placements = [_place_modules(path, modules, arch) for arch in ARCHES if arch in arches]
    unet, text = placements[0]
    # SD1 and SD2 place every layer alike; SDXL differs (its first upsampler follows a transformer). A file
    # that fits both families without telling them apart (no metadata, no full-size shapes) can't be placed.
    if any(other[0].keys() != unet.keys() for other in placements[1:]):
        raise SliderFileError(path, f"unknown architecture: fits {arch_label(arches)}, which place its layers differently")
    return SliderNetwork(name=name or path.stem, unet=unet, text=text, arch=frozenset(arches),
                         metadata=metadata, source=str(path))


def check_compatible(network: SliderNetwork, model_arch: str) -> None:
    """Raise ``SliderFileError`` (naming the file) when ``network`` wasn't made for a ``model_arch`` model."""
    if network.arch and model_arch not in network.arch:
        raise SliderFileError(network.source or network.name,
                              f"made for {arch_label(network.arch)}, but the loaded model is {ARCH_LABELS.get(model_arch, model_arch)}")


# --------------------------------------------------------------------------- writing


def _file_tensors(path: Path, network: SliderNetwork, arch: str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The kohya state dict: ``<name>.lora_down.weight``, ``.lora_up.weight`` and a 0-dim ``.alpha``."""
    named: list[tuple[str, LoraModule]] = []
    try:
        named += [(ldm_to_unet_file_key(layer, arch), module) for layer, module in network.unet.items()]
        for index, encoder in enumerate(network.text):
            named += [(path_to_text_file_key(index, layer, arch), module) for layer, module in encoder.items()]
    except KeyError as error:
        raise SliderFileError(path, f"cannot save for {ARCH_LABELS[arch]}: {error.args[0]}") from None
    tensors = {}
    for key, module in named:
        # copy=True: safetensors refuses tensors that share storage (e.g. slices of one buffer).
        tensors[f"{key}.lora_down.weight"] = module.down.detach().to(device="cpu", dtype=dtype, copy=True).contiguous()
        tensors[f"{key}.lora_up.weight"] = module.up.detach().to(device="cpu", dtype=dtype, copy=True).contiguous()
        # kohya saves alpha in the save dtype too; diffusers and the webui read it with .item().
        tensors[f"{key}.alpha"] = torch.tensor(float(module.alpha), dtype=dtype)
    return tensors


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` all at once: a failed write leaves no file and any old one untouched."""
    temp = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    try:
        with temp:
            temp.write(data)
            temp.flush()
            os.fsync(temp.fileno())
        os.chmod(temp.name, 0o644)  # NamedTemporaryFile makes files private; a model file isn't
        os.replace(temp.name, path)
    except BaseException:
        try:
            os.unlink(temp.name)
        except OSError:
            pass
        raise


def save_slider(
    network: SliderNetwork,
    path: str | os.PathLike,
    *,
    arch: str,
    dtype: torch.dtype = torch.float16,
    title: str | None = None,
    prediction_type: str | None = None,
    alpha_range: tuple[float, float] = DEFAULT_ALPHA_RANGE,
    default_start: float = DEFAULT_START,
    prompts: dict | None = None,
    training: dict | None = None,
    extra_metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> dict[str, str]:
    """Write ``network`` as a kohya-format ``.safetensors`` for ``arch``; returns the header written.

    ``prediction_type`` ("v"/"epsilon") is recorded when known (SD2 v-prediction changes the base-model ids);
    ``extra_metadata`` adds or overrides header keys (``sliders.*``, ``ssmd_*``). Refuses to replace an
    existing file unless ``overwrite``.
    """
    path = Path(path)
    if arch not in ARCHES:
        raise ValueError(f"unknown arch {arch!r}; expected one of {', '.join(ARCHES)}")
    if path.suffix.lower() != ".safetensors":
        raise SliderFileError(path, "sliders are saved as .safetensors; use that extension")
    if not path.parent.is_dir():
        raise SliderFileError(path, f"folder {str(path.parent)!r} does not exist")
    if path.is_dir():
        raise SliderFileError(path, "is a folder")
    if path.exists() and not overwrite:
        raise SliderFileError(path, "already exists (choose another name or allow overwriting)")
    if network.arch and arch not in network.arch:
        raise SliderFileError(path, f"cannot save a slider made for {arch_label(network.arch)} as {ARCH_LABELS[arch]}")
    if not any(True for _ in network.all_modules()):
        raise SliderFileError(path, "nothing to save: the slider has no modules")

    tensors = _file_tensors(path, network, arch, dtype)
    metadata = build_metadata(
        network, arch=arch, title=title or network.name, prediction_type=prediction_type, alpha_range=alpha_range,
        default_start=default_start, prompts=prompts, training=training, extra_metadata=extra_metadata,
    )
    metadata = add_hashes(tensors, metadata)
    data = safetensors.torch.save(tensors, metadata=metadata)
    try:
        _write_atomic(path, data)
    except OSError as error:
        raise SliderFileError(path, f"cannot write: {error.strerror or error}") from error
    return metadata
