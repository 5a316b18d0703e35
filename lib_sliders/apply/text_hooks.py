"""Text-encoder deltas added at forward time: no weight is ever written.

In the webui the built-in Lora lazily backs up and rewrites Linear/MultiheadAttention weights inside
their forward. A delta merged into those weights would be caught in its backup (and kept), and our
restore would wipe its merge. So each target layer gets a forward hook instead:

- a Linear (HF CLIP's q/k/v/out_proj and fc1/fc2, OpenCLIP's ``mlp.c_fc``/``c_proj``) adds the packed
  deltas of its sliders to its output (``LayerDelta``);
- an OpenCLIP ``MultiheadAttention``, whose forward reads ``in_proj_weight`` (q/k/v as row thirds) and
  ``out_proj.weight`` directly, has its output recomputed with ``weight + ΔW``. The weights are read at
  call time, so whatever another extension merged into them stays in.

Conditioning is computed once per batch, so each slider has a single α here.

A hook that raises (an error inside the text encoder's forward) is handed to ``on_error`` with the sliders on that
layer; when it contains the error, those sliders' α go to 0 and the encoder call is run again without them (the
layers before had already added their part), as the UNet hooks do (``error_containment``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ..files.lora import LoraModule
from .layer_delta import LayerDelta, compute_dtype, is_float8
from .text_targets import text_layer_index

_MHA_ARGS = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask", "average_attn_weights",
             "is_causal")
_MHA_DEFAULTS = {"key_padding_mask": None, "need_weights": True, "attn_mask": None, "average_attn_weights": True,
                 "is_causal": False}


class TextHooks:
    """Forward hooks carrying the text-encoder deltas of k sliders; ``remove`` takes them all off."""

    def __init__(self, encoders: Sequence[torch.nn.Module], texts: Sequence[Sequence[dict[str, LoraModule]]],
                 alphas: Sequence[float], on_error: Callable[[list[int], BaseException], bool] | None = None):
        """``texts[i]`` is slider i's modules per encoder (``SliderNetwork.text``), ``alphas[i]`` its α.
        ``on_error(sliders, error)``: True when the error is contained (else it is raised)."""
        self.alphas = [float(a) for a in alphas]
        self.version = 0  # bumped by set_alphas: cached coefficients are recomputed
        self.on_error = on_error
        self._call_failed = False
        linears: dict[torch.nn.Module, list[tuple[int, LoraModule]]] = {}
        attentions: dict[torch.nn.Module, list[tuple[str, slice | None, int, LoraModule]]] = {}
        slots = {}
        for slider, text in enumerate(texts):
            for index, modules in enumerate(text):
                if not modules or index >= len(encoders):
                    continue
                if index not in slots:
                    slots[index] = text_layer_index(encoders[index])
                for path, module in modules.items():
                    slot = slots[index][path]
                    if slot.part is None:
                        linears.setdefault(slot.module, []).append((slider, module))
                    else:
                        attentions.setdefault(slot.module, []).append((slot.part, slot.rows, slider, module))
        self._handles = [layer.register_forward_hook(_LinearHook(self, modules)) for layer, modules in linears.items()]
        self._handles += [attention.register_forward_hook(_AttentionHook(self, parts), with_kwargs=True)
                          for attention, parts in attentions.items()]
        self._handles += [encoders[index].register_forward_hook(self._after_encoder, with_kwargs=True)
                          for index in slots]

    def set_alphas(self, alphas: Sequence[float]) -> None:
        if len(alphas) != len(self.alphas):
            raise ValueError(f"{len(alphas)} α values for {len(self.alphas)} sliders")
        self.alphas = [float(a) for a in alphas]
        self.version += 1

    def contained(self, sliders: Sequence[int], err: BaseException) -> bool:
        """A hook of ``sliders`` raised: True when ``on_error`` contains it (they are off from now on)."""
        sliders = [slider for slider in sliders if self.alphas[slider]]
        if self.on_error is None or not self.on_error(sliders, err):
            return False
        for slider in sliders:
            self.alphas[slider] = 0.0
        self.version += 1
        self._call_failed = True
        return True

    def _after_encoder(self, encoder, args, kwargs, output):
        for _ in range(len(self.alphas) + 1):  # each retry follows one more slider failing, or ends
            if not self._call_failed:
                break
            self._call_failed = False
            output = encoder.forward(*args, **kwargs)
        return output

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


class _LinearHook:
    def __init__(self, hooks: TextHooks, modules: list[tuple[int, LoraModule]]):
        self.hooks, self.modules = hooks, modules
        self.sliders = sorted({slider for slider, _ in modules})
        self.delta: LayerDelta | None = None
        self.packed_for: tuple | None = None  # (device, dtype) of the weight the delta was packed for
        self.coef: torch.Tensor | None = None
        self.coef_version = -1

    def __call__(self, layer: torch.nn.Module, args: tuple, output: torch.Tensor):
        alphas = self.hooks.alphas
        if not any(alphas[slider] for slider in self.sliders):
            return None  # α 0: the output is left exactly as it was
        try:
            return self._output(layer, args[0], output, alphas)
        except Exception as err:
            if not self.hooks.contained(self.sliders, err):
                raise
            return None

    def _output(self, layer: torch.nn.Module, x: torch.Tensor, output: torch.Tensor, alphas: list[float]):
        weight = layer.weight
        if self.packed_for != (x.device, weight.dtype):
            # Packed on first use, and again if the encoder moved (e.g. the webui's --medvram). The input's device
            # rules, not the weight's: Forge streams a partly loaded encoder's layers, weights kept on the CPU and
            # cast to the input's device per call.
            self.delta, self.packed_for, self.coef = LayerDelta.pack(layer, self.modules), (x.device, weight.dtype), None
            if self.delta.down.device != x.device:
                self.delta.move_to(x.device)
        if self.coef is None or self.coef_version != self.hooks.version:
            self.coef = self.delta.coefficients(torch.tensor([alphas], device=x.device))  # one row: all of the batch
            self.coef_version = self.hooks.version
        return output + self.delta(x, self.coef).to(output.dtype)


class _AttentionHook:
    def __init__(self, hooks: TextHooks, parts: list[tuple[str, slice | None, int, LoraModule]]):
        self.hooks = hooks
        self.in_parts = [(rows, slider, module) for part, rows, slider, module in parts if part != "out"]
        self.out_parts = [(None, slider, module) for part, _, slider, module in parts if part == "out"]

    def __call__(self, attention: torch.nn.MultiheadAttention, args: tuple, kwargs: dict, output):
        alphas = self.hooks.alphas
        if not any(alphas[slider] for _, slider, _ in self.in_parts + self.out_parts):
            return None
        call = {**_MHA_DEFAULTS, **dict(zip(_MHA_ARGS, args, strict=False)), **kwargs}
        dtype = compute_dtype(call["query"])
        try:
            in_weight = _plus_deltas(attention.in_proj_weight, self.in_parts, alphas, dtype)
            out_weight = _plus_deltas(attention.out_proj.weight, self.out_parts, alphas, dtype)
            return _attention_forward(attention, in_weight, out_weight, dtype=dtype, **call)
        except Exception as err:
            if not self.hooks.contained(sorted({slider for _, slider, _ in self.in_parts + self.out_parts}), err):
                raise
            return None


def _plus_deltas(weight: torch.Tensor, parts: list[tuple[slice | None, int, LoraModule]], alphas: list[float],
                 dtype: torch.dtype):
    """``weight`` + the parts' deltas (into their rows), summed in fp32 like ``WeightMerger``, in the weight's dtype
    — or in the compute ``dtype`` when the weight is stored in fp8 (the delta would round away in it)."""
    total = None
    for rows, slider, module in parts:
        if alphas[slider]:
            if total is None:
                total = weight.to(torch.float32, copy=True)
            module.add_delta_(total if rows is None else total[rows], alphas[slider])
    if total is None:
        return _computable(weight, dtype)
    return total.to(dtype if is_float8(weight.dtype) else weight.dtype)


def _computable(tensor: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """``tensor`` as the functional call needs it: fp8-stored parameters (the webui's FP8 weight setting also
    stores an attention's ``out_proj``) cast to the compute dtype, others as they are."""
    return tensor.to(dtype) if tensor is not None and is_float8(tensor.dtype) else tensor


def _attention_forward(attention: torch.nn.MultiheadAttention, in_weight: torch.Tensor, out_weight: torch.Tensor,
                       query, key, value, key_padding_mask, need_weights, attn_mask, average_attn_weights, is_causal,
                       dtype: torch.dtype):
    """``nn.MultiheadAttention.forward`` (fused q/k/v, slow path) with the given projection weights.

    The masks need no canonicalising here: ``multi_head_attention_forward`` does it too, and it is idempotent.
    """
    batched = query.dim() == 3
    if attention.batch_first and batched:
        # Keep ``is`` identities: they pick the self-attention projection path, as in the module.
        if key is value:
            if query is key:
                query = key = value = query.transpose(1, 0)
            else:
                query, key = (x.transpose(1, 0) for x in (query, key))
                value = key
        else:
            query, key, value = (x.transpose(1, 0) for x in (query, key, value))
    in_bias, bias_k, bias_v, out_bias = (_computable(t, dtype) for t in (
        attention.in_proj_bias, attention.bias_k, attention.bias_v, attention.out_proj.bias))
    output, weights = F.multi_head_attention_forward(
        query, key, value, attention.embed_dim, attention.num_heads, in_weight, in_bias, bias_k, bias_v,
        attention.add_zero_attn, attention.dropout, out_weight, out_bias, training=attention.training,
        key_padding_mask=key_padding_mask, need_weights=need_weights, attn_mask=attn_mask,
        average_attn_weights=average_attn_weights, is_causal=is_causal)
    if attention.batch_first and batched:
        output = output.transpose(1, 0)
    return output, weights
