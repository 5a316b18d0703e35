"""Apply any number of sliders to a live UNet (and its text encoders), and take them off again.

Two ways to apply UNet deltas:

- **hooks** (default): a forward hook on each target layer adds the packed deltas of every slider
  that touches it (see ``layer_delta``). Each slider may give a *different α per batch row*, and
  sliders can be gated to a range of sampling steps. Nothing in the model is modified: removing the
  hooks leaves no trace.
- **merged**: uniform α folded into the weights (``weight_merge``): zero per-step cost; the
  weights are restored bitwise afterwards.
- **auto**: each slider the cheap way it allows: merged when it has one α for all rows, hooked when
  its α varies per row. Many fixed sliders plus one strip then cost about one hooked slider.

Text-encoder deltas get one α per slider (conditioning is computed once per batch), whatever the UNet
mode. ``text_mode`` picks how: ``"merged"`` folds them into the weights; ``"hooks"`` adds them in forward
hooks and never writes a weight (``text_hooks``) — the webui needs this, as its built-in Lora rewrites
those same weights and would capture a merged delta.

Batch rows (``row_selection``): a sampler calls the UNet with ``R`` rows per step, in one call or in chunks; a
per-row α is a vector of length ``R`` that a row cursor slices for each call. A call that doesn't fit the rows gets
the first row's α, and ``on_rows_mismatch`` hears of it.

Errors inside the model (``error_containment``; ``contain_errors``, the webui's setting): a slider whose delta
raises during a forward pass is turned off instead of failing the generation, the UNet call is run again without
it, and ``on_failure`` hears which sliders.

Weights stored in fp8 (the webui's "FP8 weight" setting) are never merged into: a slider's delta would mostly round
away there. Sliders on such weights go through hooks whatever the mode, their factors in the compute dtype.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..errors import SliderFileError
from ..files.lora import LoraModule, SliderNetwork
from .error_containment import ErrorContainment
from .layer_delta import LayerDelta, is_float8
from .row_selection import RowCursor
from .text_hooks import TextHooks
from .text_targets import text_layer_index
from .weight_merge import Contribution, WeightMerger

logger = logging.getLogger("concept_sliders")

MODES = ("hooks", "merged", "auto")
TEXT_MODES = ("merged", "hooks")


@dataclass
class ActiveSlider:
    """One slider as applied: its network, α (a number, or one number per batch row) and step gate."""

    network: SliderNetwork
    alpha: float | Sequence[float] | torch.Tensor = 1.0
    start: float = 0.0  # fraction of sampling steps before which the slider is off
    stop: float = 1.0  # fraction of sampling steps from which the slider is off again
    unet_multiplier: float = 1.0
    text_multiplier: float = 1.0

    def row_alphas(self) -> torch.Tensor:
        return torch.as_tensor(self.alpha, dtype=torch.float32).reshape(-1) * self.unet_multiplier

    @property
    def uniform_alpha(self) -> float | None:
        alphas = self.row_alphas()
        return float(alphas[0]) if bool((alphas == alphas[0]).all()) else None

    def text_alpha(self) -> float:
        # Conditioning is computed once per batch, so text encoders get one α: the first row's.
        return float(torch.as_tensor(self.alpha, dtype=torch.float32).reshape(-1)[0]) * self.text_multiplier

    def is_on(self, progress: float) -> bool:
        return self.start <= progress < self.stop


class SliderEngine:
    def __init__(self, unet: torch.nn.Module, text_encoders: Sequence[torch.nn.Module] = (),
                 backup_device: torch.device | str | None = None, text_mode: str = "merged"):
        if text_mode not in TEXT_MODES:
            raise ValueError(f"text_mode must be one of {TEXT_MODES}, not {text_mode!r}")
        self.text_mode = text_mode
        self.unet = unet
        self.text_encoders = list(text_encoders)
        self._unet_merger = WeightMerger(backup_device)
        self._text_merger = WeightMerger(backup_device)
        self._text_hooks: TextHooks | None = None
        self._sliders: list[ActiveSlider] = []
        self._hooked: list[ActiveSlider] = []  # applied through hooks (the α table's columns, in order)
        self._merged: list[ActiveSlider] = []  # folded into the weights
        self._deltas: list[LayerDelta] = []
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self.mode = "hooks"
        self._progress = 0.0
        self._row_cursor = RowCursor()  # which α each row of a UNet call gets
        self._coef_cache: dict[int, torch.Tensor] = {}  # per layer delta, for the rows the cursor selected
        self._containment = ErrorContainment(lambda: self._hooked, self._apply_text)
        self._merged_key: tuple | None = None  # what the merged weights currently hold
        self._text_merging = text_mode == "merged"  # text_mode, unless the text weights are stored in fp8
        self._fp8_reported = False

    # Errors raised by a slider's delta inside the model's forward: contained (the slider goes off and
    # on_failure(names, error) hears of it) or raised (the default: training wants to see them).
    @property
    def contain_errors(self) -> bool:
        return self._containment.enabled

    @contain_errors.setter
    def contain_errors(self, value: bool) -> None:
        self._containment.enabled = value

    @property
    def on_failure(self) -> Callable[[list[str], BaseException], None] | None:
        return self._containment.on_failure

    @on_failure.setter
    def on_failure(self, callback: Callable[[list[str], BaseException], None] | None) -> None:
        self._containment.on_failure = callback

    # A UNet call whose rows don't fit the α table: on_rows_mismatch(batch, first_row, rows) (else a log line).
    @property
    def on_rows_mismatch(self) -> Callable[[int, int, int], None] | None:
        return self._row_cursor.on_mismatch

    @on_rows_mismatch.setter
    def on_rows_mismatch(self, callback: Callable[[int, int, int], None] | None) -> None:
        self._row_cursor.on_mismatch = callback

    @property
    def failed(self) -> list[str]:
        """Names of the sliders turned off because their delta raised inside the model (``contain_errors``)."""
        return self._containment.failed

    # ----- validation -------------------------------------------------------------------------
    def validate(self, network: SliderNetwork) -> None:
        """Raise ``SliderFileError`` (naming the file) if ``network`` doesn't fit this model."""
        for path, module in network.unet.items():
            try:
                layer = self.unet.get_submodule(path)
            except AttributeError:
                raise SliderFileError(network.source or network.name, f"the model has no layer {path}") from None
            _check_shape(network, path, layer, module)
        for index, modules in enumerate(network.text):
            if not modules:
                continue
            if index >= len(self.text_encoders):
                raise SliderFileError(network.source or network.name,
                                      f"has weights for text encoder {index + 1}, the model has {len(self.text_encoders)}")
            slots = text_layer_index(self.text_encoders[index])
            missing = sorted(set(modules) - set(slots))
            if missing:
                raise SliderFileError(network.source or network.name,
                                      f"text encoder {index + 1} has no layer {missing[0]} ({len(missing)} missing)")
            for path, module in modules.items():  # here, not inside the text encoder's forward
                slot = slots[path]
                weight = slot.weight if slot.rows is None else slot.weight[slot.rows]
                if (module.out_features, module.in_features) != tuple(weight.shape[:2]) or module.is_conv:
                    raise SliderFileError(network.source or network.name,
                                          f"text encoder {index + 1} layer {path}: shape {module.out_features}×"
                                          f"{module.in_features} doesn't fit the model's {weight.shape[0]}×"
                                          f"{weight.shape[1]} (a slider for another model?)")

    # ----- applying -------------------------------------------------------------------------------
    @property
    def sliders(self) -> list[ActiveSlider]:
        return list(self._sliders)

    def apply(self, sliders: Sequence[ActiveSlider], mode: str = "hooks") -> None:
        """Replace whatever is applied with ``sliders``. Validate each network first (``validate``)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.clear()
        if not sliders:
            return
        networks = [s.network for s in sliders]
        if mode != "hooks" and not self.can_merge(networks):
            mode = "hooks"
        self._text_merging = self.text_mode == "merged" and self.can_merge(networks, unet=False, text=True)
        if mode == "merged":
            not_uniform = [s.network.name for s in sliders if s.uniform_alpha is None]
            if not_uniform:
                raise ValueError(f"merged mode needs one α per slider; per-row α given for {', '.join(not_uniform)}")
        self._sliders = list(sliders)
        self.mode = mode
        merge = {"hooks": lambda s: False, "merged": lambda s: True, "auto": lambda s: s.uniform_alpha is not None}[mode]
        self._merged = [s for s in self._sliders if merge(s)]
        self._hooked = [s for s in self._sliders if not merge(s)]
        self._apply_text()
        if self._hooked:
            self._attach_hooks()
        self.set_step(0, 1)

    def can_merge(self, networks: Sequence[SliderNetwork], unet: bool = True, text: bool = False) -> bool:
        """Whether the deltas of ``networks`` (their UNet part, and with ``text`` their text-encoder part) may be
        merged into the weights they target: not when one of those is stored in fp8. A refusal is said on the
        console, once per engine."""
        stored = None
        for network in networks:
            weights = []
            if unet:
                for path in network.unet:
                    try:
                        weights.append(self.unet.get_submodule(path).weight)
                    except AttributeError:
                        continue  # validate() names it
            if text:
                for index, modules in enumerate(network.text):
                    if modules and index < len(self.text_encoders):
                        slots = text_layer_index(self.text_encoders[index])
                        weights += [slots[path].weight for path in modules if path in slots]
            stored = next((weight.dtype for weight in weights if is_float8(weight.dtype)), None)
            if stored is not None:
                break
        if stored is None:
            return True
        if not self._fp8_reported:
            self._fp8_reported = True
            logger.warning("Concept Sliders: the model's weights are stored in %s (FP8 weight): sliders are added "
                           "through hooks, not merged into the weights, where fp8 would round their deltas away",
                           str(stored).replace("torch.", ""))
        return False

    def set_alphas(self, alphas: Sequence[float | Sequence[float] | torch.Tensor]) -> None:
        """Change α of the applied sliders (same order) without re-packing weights."""
        for slider, alpha in zip(self._sliders, alphas, strict=True):
            slider.alpha = alpha
        hooked = {id(s) for s in self._hooked}
        if self.mode == "auto" and any((s.uniform_alpha is None) != (id(s) in hooked) for s in self._sliders):
            self.apply(self._sliders, mode="auto")  # a slider switched between uniform and per-row α
            return
        if any(s.uniform_alpha is None for s in self._merged):
            raise ValueError("merged mode needs one α per slider; use mode 'hooks' or 'auto' for per-row α")
        self._merge_unet()
        self._update_alpha_table()
        self._apply_text()

    def set_step(self, step: int, total_steps: int) -> None:
        """Call once per sampling step (before the UNet calls of that step): gates and resets rows."""
        was_on = [s.is_on(self._progress) for s in self._hooked]
        self._progress = step / max(total_steps, 1)
        self._row_cursor.cursor = 0
        self._merge_unet()
        if [s.is_on(self._progress) for s in self._hooked] != was_on or step == 0:
            self._update_alpha_table()  # only when a gate opened or closed: coefficients stay cached

    def weights_replaced(self) -> None:
        """The model's weights were reloaded in place (e.g. the webui loading a refiner into the same model
        object): merged deltas went with the old weights, so their backups are stale. Merge again onto the new
        weights; hooks need nothing."""
        self._unet_merger.discard()
        self._text_merger.discard()
        self._merged_key = None
        self._merge_unet()
        self._apply_text()

    def clear(self) -> None:
        """Remove every hook and restore every weight (bitwise)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self._text_hooks is not None:
            self._text_hooks.remove()
            self._text_hooks = None
        self._deltas.clear()
        self._unet_merger.restore()
        self._text_merger.restore()
        self._sliders, self._hooked, self._merged = [], [], []
        self._row_cursor.clear()
        self._containment.clear()
        self._merged_key = None
        self._coef_cache.clear()

    # ----- hooks path -----------------------------------------------------------------------------
    def _attach_hooks(self) -> None:
        per_layer: dict[str, list[tuple[int, LoraModule]]] = {}
        for index, slider in enumerate(self._hooked):
            for path, module in slider.network.unet.items():
                per_layer.setdefault(path, []).append((index, module))
        for path, modules in per_layer.items():
            delta = LayerDelta.pack(self.unet.get_submodule(path), modules)
            self._deltas.append(delta)
            self._handles.append(delta.layer.register_forward_hook(self._layer_hook(delta)))
        self._handles.append(self.unet.register_forward_pre_hook(self._before_unet, with_kwargs=True))
        self._handles.append(self.unet.register_forward_hook(self._after_unet, with_kwargs=True))

    def _update_alpha_table(self) -> None:
        self._row_cursor.set_table(self._hooked, self._progress)
        self._coef_cache.clear()

    def _before_unet(self, module, args, kwargs):
        x = args[0] if args else kwargs["x"]
        self._select_rows(x.shape[0], x.device)
        return None

    def _select_rows(self, batch: int, device: torch.device, report: bool = True) -> None:
        if self._row_cursor.select(batch, device, report):
            self._coef_cache.clear()  # made for other rows

    def _after_unet(self, module, args, kwargs, output):
        call = self._row_cursor.call

        def call_again():
            # A delta raised during this call: its sliders are off now; α without them.
            self._update_alpha_table()
            if call is not None:
                self._select_rows(call[1], (args[0] if args else kwargs["x"]).device, report=False)
            return module.forward(*args, **kwargs)

        output = self._containment.rerun(call_again, output, attempts=len(self._hooked) + 1)
        self._row_cursor.advance(call)
        return output

    def _layer_hook(self, delta: LayerDelta):
        contained = self._containment.watch(delta)
        cursor = self._row_cursor

        def hook(layer, args, output):
            rows = cursor.rows
            if rows is None or cursor.table is None:
                return None
            added = contained.output(self._delta_output, args[0], rows)
            return None if added is None else output + added.to(output.dtype)

        return hook

    def _delta_output(self, delta: LayerDelta, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        if delta.down.device != x.device:
            # The model moved since the deltas were packed (the webui's --medvram moves the UNet in and
            # out of the GPU): follow it, once.
            delta.move_to(x.device)
            self._coef_cache.pop(id(delta), None)
        coef = self._coef_cache.get(id(delta))
        if coef is None:
            coef = self._coef_cache[id(delta)] = delta.coefficients(rows)
        if x.shape[0] != coef.shape[0]:
            if x.shape[0] % coef.shape[0] == 0:
                # Some optimisations (hypertile) fold tiles into the batch, sample-major.
                coef = coef.repeat_interleave(x.shape[0] // coef.shape[0], dim=0)
            else:  # a layer sees rows that aren't whole copies of the call's: one α for all of them
                coef = coef[:1].expand(x.shape[0], -1)
        return delta(x, coef)

    # ----- merged paths ---------------------------------------------------------------------------
    def _merge_unet(self) -> None:
        key = tuple((s.uniform_alpha if s.is_on(self._progress) else None) for s in self._merged)
        if key == self._merged_key:
            return  # step gates only re-merge when a slider turns on or off
        self._merged_key = key
        deltas: dict[torch.Tensor, list[Contribution]] = {}
        for slider in self._merged:
            if not slider.is_on(self._progress):
                continue
            alpha = slider.uniform_alpha
            for path, module in slider.network.unet.items():
                weight = self.unet.get_submodule(path).weight
                deltas.setdefault(weight, []).append(Contribution(module, alpha))
        self._unet_merger.merge(deltas)

    def _apply_text(self) -> None:
        if self._text_merging:
            self._merge_text()
        elif self._text_hooks is not None:
            self._text_hooks.set_alphas([s.text_alpha() for s in self._sliders])
        elif any(s.network.has_text for s in self._sliders):
            self._text_hooks = TextHooks(self.text_encoders, [s.network.text for s in self._sliders],
                                         [s.text_alpha() for s in self._sliders], on_error=self._text_failed)

    def _text_failed(self, indices: list[int], err: BaseException) -> bool:
        """A text hook raised (``contain_errors``): its sliders go off, their UNet part with them."""
        if not self._containment.text_failed([self._sliders[i] for i in indices], err):
            return False
        if self._hooked:
            self._update_alpha_table()
        if self._merged:
            self._merge_unet()
        return True

    def _merge_text(self) -> None:
        deltas: dict[torch.Tensor, list[Contribution]] = {}
        for slider in self._sliders:
            for index, modules in enumerate(slider.network.text):
                if not modules or index >= len(self.text_encoders):
                    continue
                slots = text_layer_index(self.text_encoders[index])
                for path, module in modules.items():
                    slot = slots[path]
                    deltas.setdefault(slot.weight, []).append(Contribution(module, slider.text_alpha(), slot.rows))
        self._text_merger.merge(deltas)


def _check_shape(network: SliderNetwork, path: str, layer: torch.nn.Module, module: LoraModule) -> None:
    where = network.source or network.name
    if isinstance(layer, torch.nn.Conv2d):
        expected_in, expected_out = layer.in_channels, layer.out_channels
        kernel = tuple(module.down.shape[2:]) if module.is_conv else (1, 1)
        if kernel != tuple(layer.kernel_size):
            raise SliderFileError(where, f"layer {path}: kernel {kernel} doesn't fit the model's "
                                         f"{tuple(layer.kernel_size)}")
    elif isinstance(layer, torch.nn.Linear):
        expected_in, expected_out = layer.in_features, layer.out_features
        if module.is_conv and tuple(module.down.shape[2:]) != (1, 1):
            raise SliderFileError(where, f"layer {path}: a conv delta for a linear layer")
    else:
        raise SliderFileError(where, f"layer {path} is a {type(layer).__name__}, not a Linear or Conv2d")
    if (module.in_features, module.out_features) != (expected_in, expected_out):
        raise SliderFileError(where, f"layer {path}: shape {module.out_features}×{module.in_features} doesn't fit the "
                                     f"model's {expected_out}×{expected_in} (a slider for another model?)")
