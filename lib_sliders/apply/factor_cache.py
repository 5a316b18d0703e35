"""Slider factors prepared for a model, kept between jobs.

A slider stays loaded in the library's cache from one generation job to the next, and so do the tensors the
engine builds from it for each target layer: its fp16 factors converted to the weight's device and dtype, and the
factors of all sliders on a layer concatenated into one low-rank pair (see ``layer_delta``). Rebuilding those at
every job costs a few hundred tensor copies; here a job with the same sliders finds them ready.

An entry is used only while every source factor it was built from is the same live tensor at the same version: a
factor changed in place (its version moves) or freed (its id may be reused) is built again.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict

import torch

from ..files.lora import LoraModule

KEPT_PACKS = 4096  # layers' packs kept: 150 layers per SD1.5 slider set, so many jobs' worth

# id(factor) → {(device, dtype, version): the factor converted}; an entry goes when its factor does.
_CONVERTED: dict[int, dict[tuple, torch.Tensor]] = {}
# (layer kind, device, dtype, per slider (owner index, scale, factor ids and versions)) → (sources, packed)
_PACKS: OrderedDict[tuple, tuple[list[weakref.ref], tuple[torch.Tensor, ...]]] = OrderedDict()


def _version(tensor: torch.Tensor) -> int:
    """The tensor's in-place version. An inference tensor (a slider first read inside Forge's job, which runs under
    ``torch.inference_mode()``) has no version counter: 0 — it can't be changed in place outside inference mode,
    and nothing changes factors in place inside it."""
    return 0 if tensor.is_inference() else tensor._version


def converted(tensor: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``tensor.to(device, dtype)``, made once per factor version."""
    key = (device, dtype, _version(tensor))
    entry = _CONVERTED.get(id(tensor))
    if entry is None:
        entry = _CONVERTED[id(tensor)] = {}
        weakref.finalize(tensor, _CONVERTED.pop, id(tensor), None)
    found = entry.get(key)
    if found is None:
        entry.clear()  # one copy per factor: the device and dtype of the latest job
        with torch.inference_mode(False):  # kept past the job: usable by training too (see ``packed``)
            found = entry[key] = tensor.to(device=device, dtype=dtype)
    return found


def packed(key_parts: tuple, sources: list[torch.Tensor], build) -> tuple[torch.Tensor, ...]:
    """``build()``'s tensors for these ``sources``, from the cache when they are the same tensors as then."""
    key = (key_parts, tuple((id(t), _version(t)) for t in sources))
    hit = _PACKS.get(key)
    if hit is not None and all(ref() is tensor for ref, tensor in zip(hit[0], sources, strict=True)):
        _PACKS.move_to_end(key)
        return hit[1]
    # Built out of inference mode even inside a Forge job (which runs under torch.inference_mode()): an inference
    # tensor kept here would later break a training graph that packs the same slider (train among it).
    with torch.inference_mode(False):
        result = build()
    if not any(t.requires_grad for t in sources):  # training's factors change every step
        _PACKS[key] = ([weakref.ref(t) for t in sources], result)
        _PACKS.move_to_end(key)
        while len(_PACKS) > KEPT_PACKS:
            _PACKS.popitem(last=False)
    return result


def module_sources(modules: list[tuple[int, LoraModule]]) -> list[torch.Tensor]:
    return [t for _, m in modules for t in (m.down, m.up)]
