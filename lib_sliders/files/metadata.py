"""Header metadata of slider files: building it on save, reading our ``sliders.*`` keys on load.

A ``.safetensors`` header holds ``Dict[str, str]``. We write what kohya's sd-scripts writes, so every
LoRA tool recognises the file:

* ``ss_*`` (``train_network.py``): network module, dim, alpha, base model version, output name;
* ``sshs_model_hash`` / ``sshs_legacy_hash`` (``train_util.precalculate_safetensors_hashes``, the
  AddNet hashes the webui shows): computed over the file serialized with **only** the ``ss_*`` keys,
  so user edits of other keys (``ssmd_*``, ``sliders.*``) don't change them;
* ``modelspec.*`` (Stability AI ModelSpec 1.0.1, ``library/sai_model_spec.py``);

plus our own ``sliders.*`` keys. Structured ``sliders.*`` values are JSON; ``sliders.version`` and
``sliders.arch`` are plain strings.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import safetensors.torch
import torch

from .. import __version__
from .lora import LoraModule, SliderNetwork

DEFAULT_ALPHA_RANGE = (-3.0, 3.0)
DEFAULT_START = 0.0

ARCHES = ("sd1", "sd2", "sdxl")

_BASE_MODEL_VERSION = {"sd1": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0"}
_MODELSPEC_ARCH = {"sd1": "stable-diffusion-v1", "sd2": "stable-diffusion-v2-512", "sdxl": "stable-diffusion-xl-v1-base"}
_RESOLUTION = {"sd1": "512x512", "sd2": "512x512", "sdxl": "1024x1024"}
_SGM_IMPLEMENTATION = "https://github.com/Stability-AI/generative-models"

# Keys a conversion carries over from the source file; everything else is regenerated.
KEPT_PREFIXES = ("sliders.", "ssmd_")


@dataclass(frozen=True)
class SliderInfo:
    """What our ``sliders.*`` keys say about using the slider (defaults where missing or malformed)."""

    alpha_range: tuple[float, float] = DEFAULT_ALPHA_RANGE
    default_start: float = DEFAULT_START
    prompts: dict | None = None
    training: dict | None = None
    version: str | None = None


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _parse_json(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _parse_alpha_range(text: str | None) -> tuple[float, float]:
    value = _parse_json(text)
    if isinstance(value, list) and len(value) == 2 and all(_is_number(v) for v in value) and value[0] < value[1]:
        return float(value[0]), float(value[1])
    return DEFAULT_ALPHA_RANGE


def _parse_float(text: str | None, default: float) -> float:
    value = _parse_json(text)
    return float(value) if _is_number(value) else default


def _parse_object(text: str | None) -> dict | None:
    value = _parse_json(text)
    return value if isinstance(value, dict) else None


def slider_info(metadata: Mapping[str, str] | None) -> SliderInfo:
    """Parse the ``sliders.*`` keys of a header; bad or missing values fall back to the defaults."""
    metadata = metadata or {}
    version = metadata.get("sliders.version")
    return SliderInfo(
        alpha_range=_parse_alpha_range(metadata.get("sliders.alpha_range")),
        default_start=_parse_float(metadata.get("sliders.default_start"), DEFAULT_START),
        prompts=_parse_object(metadata.get("sliders.prompts")),
        training=_parse_object(metadata.get("sliders.training")),
        version=version if isinstance(version, str) else None,
    )


def prediction_type_of(metadata: Mapping[str, str] | None) -> str | None:
    """``"v"`` / ``"epsilon"`` when a (source) header says so, else None."""
    metadata = metadata or {}
    declared = metadata.get("modelspec.prediction_type")
    if declared in ("v", "epsilon"):
        return declared
    if metadata.get("ss_base_model_version", "").endswith("_v"):
        return "v"
    return None


def _format_number(value: float) -> str:
    """3.0 → "3", 1.5 → "1.5": for hints people read."""
    return f"{value:g}"


def usage_hint(name: str, alpha_range: tuple[float, float]) -> str:
    low, high = alpha_range
    return f"Use <slider:{name}:α> (α from {_format_number(low)} to {_format_number(high)})"


def _is_locon(module: LoraModule) -> bool:
    """kohya counts k×k convs (LoCon) under conv_dim/conv_alpha; Linear and 1×1 convs under network_dim."""
    return module.is_conv and tuple(module.down.shape[2:]) != (1, 1)


def _dim_and_alpha(modules: list[LoraModule]) -> tuple[int, float]:
    """The largest rank, and the most common alpha (kohya has one of each per module family)."""
    rank = max(m.rank for m in modules)
    alpha = Counter(float(m.alpha) for m in modules).most_common(1)[0][0]
    return rank, alpha


def build_metadata(
    network: SliderNetwork,
    *,
    arch: str,
    title: str,
    prediction_type: str | None = None,
    alpha_range: tuple[float, float] = DEFAULT_ALPHA_RANGE,
    default_start: float = DEFAULT_START,
    prompts: dict | None = None,
    training: dict | None = None,
    extra_metadata: Mapping[str, Any] | None = None,
    date: datetime.datetime | None = None,
) -> dict[str, str]:
    """The header for ``network`` saved for ``arch``, without the hashes (see ``add_hashes``).

    ``extra_metadata`` adds or overrides keys (typically ``sliders.*`` and ``ssmd_*``); values that
    aren't strings are stored as JSON.
    """
    if arch not in ARCHES:
        raise ValueError(f"unknown arch {arch!r}; expected one of {', '.join(ARCHES)}")
    if prediction_type not in (None, "v", "epsilon"):
        raise ValueError(f"prediction_type must be 'v' or 'epsilon', not {prediction_type!r}")
    if not (math.isfinite(alpha_range[0]) and math.isfinite(alpha_range[1]) and alpha_range[0] < alpha_range[1]):
        raise ValueError(f"alpha_range must be (low, high) with low < high, not {alpha_range!r}")
    modules = list(network.all_modules())
    if not modules:
        raise ValueError("a slider needs at least one module")
    v_pred = prediction_type == "v"

    linear = [m for m in modules if not _is_locon(m)]
    conv = [m for m in modules if _is_locon(m)]
    dim, alpha = _dim_and_alpha(linear or conv)
    network_args = None
    if conv:
        conv_dim, conv_alpha = _dim_and_alpha(conv)
        # kohya stores its --network_args as given on the command line: strings.
        network_args = {"conv_dim": str(conv_dim), "conv_alpha": str(float(conv_alpha))}

    base_version = _BASE_MODEL_VERSION[arch] + ("_v" if arch == "sd2" and v_pred else "")
    spec_arch = "stable-diffusion-v2-768-v" if arch == "sd2" and v_pred else _MODELSPEC_ARCH[arch]
    resolution = "768x768" if arch == "sd2" and v_pred else _RESOLUTION[arch]
    date = date or datetime.datetime.now().replace(microsecond=0)

    metadata = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(dim),
        "ss_network_alpha": str(float(alpha)),
        "ss_base_model_version": base_version,
        "ss_v2": str(arch == "sd2"),
        "ss_output_name": title,
        "modelspec.sai_model_spec": "1.0.1",
        "modelspec.architecture": f"{spec_arch}/lora",
        "modelspec.implementation": _SGM_IMPLEMENTATION if arch == "sdxl" else "diffusers",
        "modelspec.title": title,
        "modelspec.resolution": resolution,
        "modelspec.date": date.isoformat(),
        "sliders.version": __version__,
        "sliders.arch": arch,
        "sliders.alpha_range": _json([float(alpha_range[0]), float(alpha_range[1])]),
        "sliders.default_start": _json(float(default_start)),
    }
    if network_args is not None:  # kohya writes it only when --network_args were given
        metadata["ss_network_args"] = _json(network_args)
    if prediction_type is not None:
        metadata["modelspec.prediction_type"] = prediction_type
    if prompts is not None:
        metadata["sliders.prompts"] = _json(prompts)
    if training is not None:
        metadata["sliders.training"] = _json(training)
    for key, value in (extra_metadata or {}).items():
        metadata[str(key)] = value if isinstance(value, str) else _json(value)
    # The hint follows the final range, which extra_metadata may have overridden.
    metadata["modelspec.usage_hint"] = usage_hint(title, slider_info(metadata).alpha_range)
    return metadata


def safetensors_hashes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> tuple[str, str]:
    """kohya's ``(sshs_model_hash, sshs_legacy_hash)`` for ``tensors`` saved with ``metadata``.

    Both hash the file as written with only the ``ss_*`` keys: the model hash covers the bytes after
    the header (the tensor data), the legacy AddNet hash the 64 KiB at offset 1 MiB (empty input for
    files smaller than that, as in kohya).
    """
    ss_only = {key: value for key, value in metadata.items() if key.startswith("ss_")}
    data = safetensors.torch.save(dict(tensors), metadata=ss_only)
    header_size = int.from_bytes(data[:8], "little")
    model_hash = hashlib.sha256(data[8 + header_size:]).hexdigest()
    legacy_hash = hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]
    return model_hash, legacy_hash


def add_hashes(tensors: Mapping[str, torch.Tensor], metadata: dict[str, str]) -> dict[str, str]:
    """``metadata`` plus the ``sshs_*`` hashes and ``modelspec.hash_sha256``.

    ModelSpec's ``hash_sha256`` is "a hash of all tensor content (excluding the header), 0x-prefixed",
    which is exactly the sha256 in ``sshs_model_hash``.
    """
    model_hash, legacy_hash = safetensors_hashes(tensors, metadata)
    return {**metadata, "sshs_model_hash": model_hash, "sshs_legacy_hash": legacy_hash,
            "modelspec.hash_sha256": "0x" + model_hash}
