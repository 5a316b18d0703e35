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

Batch rows. A sampler calls the UNet with ``R`` rows per step — in the webui, cond rows of every
image then uncond rows — in one call or in consecutive chunks. A per-row α is a vector of length
``R``; the engine keeps a row cursor that each UNet call advances by its batch size and that
``set_step`` resets, so chunked calls read the right slice. Other code may call the UNet too (an extension's
extra pass per step: SAG, regional prompting, context windows…). A call with all ``R`` rows reads the whole
table wherever the cursor stands; a call that doesn't fit the rows left gets one α per slider for all its rows
— the first row's, i.e. the batch's first image's (every image's when they share one), the same choice as
when the webui's row layout can't be read — and ``on_rows_mismatch`` hears of it. Nothing raises inside the
UNet's forward for it.

Errors inside the model (``contain_errors``, the webui's setting): a slider whose delta raises during a forward
pass (a layer's packed delta is split per slider to tell which) is turned off (both multipliers 0) instead of
failing the generation; the UNet call is run again without it, so that call's output has none of its effect,
and ``on_failure`` hears which sliders.

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
from .layer_delta import LayerDelta, is_float8
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
        self._alpha_table: torch.Tensor | None = None  # [R, k] per-row α of each slider (0 when gated off)
        self._cursor = 0
        self._rows: torch.Tensor | None = None  # [B, k] α of the rows in the current UNet call
        self._coef_cache: dict[int, torch.Tensor] = {}
        self._rows_key: tuple | None = None  # (first row or None, batch) the cached coefficients are for
        self._call: tuple[int | None, int] | None = None  # (first row or None: fallback, batch) of the UNet call
        # Errors raised by a slider's delta inside the model's forward: contained (the slider goes off and
        # on_failure(names, error) hears of it) or raised (the default: training wants to see them).
        self.contain_errors = False
        self.on_failure: Callable[[list[str], BaseException], None] | None = None
        # A UNet call whose rows don't fit the α table: on_rows_mismatch(batch, first_row, rows) (else a log line).
        self.on_rows_mismatch: Callable[[int, int, int], None] | None = None
        self._mismatch_logged = False
        self._failed_names: set[str] = set()
        self._broken: set[int] = set()  # ids of layer deltas that raised (never run again)
        self._call_failed = False
        # Device copies of recent α tables, by content: a training loop alternating between a few tables (or
        # sampling steps re-setting the same α) copies each to the GPU once. A host-to-device copy from
        # ordinary memory waits for the GPU to finish its queue, which would stall every UNet call.
        self._device_tables: dict[tuple, torch.Tensor] = {}
        self._merged_key: tuple | None = None  # what the merged weights currently hold
        self._text_merging = text_mode == "merged"  # text_mode, unless the text weights are stored in fp8
        self._fp8_reported = False

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
        self._cursor = 0
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
        self._alpha_table = None
        self._rows = None
        self._rows_key = None
        self._call = None
        self._failed_names = set()
        self._broken = set()
        self._call_failed = False
        self._merged_key = None
        self._coef_cache.clear()
        self._device_tables.clear()

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
        if not self._hooked:
            self._alpha_table = None
            return
        columns = [s.row_alphas() * (1.0 if s.is_on(self._progress) else 0.0) for s in self._hooked]
        rows = max(len(c) for c in columns)
        for slider, column in zip(self._hooked, columns, strict=True):
            if len(column) not in (1, rows):
                raise ValueError(f"slider {slider.network.name}: {len(column)} α values for {rows} rows")
        table = torch.stack([c.expand(rows) for c in columns], dim=1)
        self._alpha_table = None if not table.any() else table
        self._rows_key = None
        self._coef_cache.clear()

    @property
    def failed(self) -> list[str]:
        """Names of the sliders turned off because their delta raised inside the model (``contain_errors``)."""
        return sorted(self._failed_names)

    def _before_unet(self, module, args, kwargs):
        x = args[0] if args else kwargs["x"]
        self._select_rows(x.shape[0], x.device)
        return None

    def _select_rows(self, batch: int, device: torch.device, report: bool = True) -> None:
        """The α rows of a UNet call of ``batch`` rows (see the module docstring); never raises for its size."""
        if self._alpha_table is None:
            self._rows = None
            self._call = None
            return
        total = self._alpha_table.shape[0]
        if total == 1 or batch == total:
            first = 0  # one α for every row, or the whole CFG batch in one call
        elif self._cursor + batch <= total:
            first = self._cursor
        else:
            first = None  # an extra call that isn't part of the denoiser's row layout
            if report:
                self._rows_mismatch(batch, total)
        self._call = (first, batch)
        if self._rows_key != (first, batch):
            # Coefficients only change with the rows they serve; most steps reuse the last ones.
            table = self._device_table(device)
            self._rows_key = (first, batch)
            if total == 1 or first is None:
                self._rows = table[:1].expand(batch, -1)
            else:
                self._rows = table[first:first + batch]
            self._coef_cache.clear()

    def _rows_mismatch(self, batch: int, total: int) -> None:
        if self.on_rows_mismatch is not None:
            self.on_rows_mismatch(batch, self._cursor, total)
        elif not self._mismatch_logged:
            self._mismatch_logged = True
            logger.warning("Concept Sliders: a UNet call with %d rows doesn't fit the %d rows α was set for (row %d); "
                           "such calls get the first image's α", batch, total, self._cursor)

    def _device_table(self, device: torch.device) -> torch.Tensor:
        table = self._alpha_table
        key = (tuple(table.shape), tuple(table.flatten().tolist()), device)
        on_device = self._device_tables.get(key)
        if on_device is None:
            if len(self._device_tables) >= 16:
                self._device_tables.clear()
            on_device = self._device_tables[key] = table.to(device)
        return on_device

    def _after_unet(self, module, args, kwargs, output):
        call = self._call
        for _ in range(len(self._hooked) + 1):  # each retry follows one more slider failing, or ends
            if not self._call_failed:
                break
            # A delta raised during this call: its sliders are off now; run the call again without them (the
            # layers before the failing one had already added their part).
            self._call_failed = False
            self._update_alpha_table()
            if call is not None:
                self._select_rows(call[1], (args[0] if args else kwargs["x"]).device, report=False)
            output = module.forward(*args, **kwargs)
        if call is not None and call[0] is not None and self._alpha_table is not None \
                and self._alpha_table.shape[0] > 1:
            self._cursor = (call[0] + call[1]) % self._alpha_table.shape[0]
        return output

    def _layer_hook(self, delta: LayerDelta):
        parts = [delta]  # the packed delta; split per slider once it raised (``contain_errors``)

        def hook(layer, args, output):
            rows = self._rows
            if rows is None or self._alpha_table is None:
                return None
            x = args[0]
            if len(parts) == 1:  # the usual case
                if id(delta) in self._broken:
                    return None
                try:
                    return output + self._delta_output(delta, x, rows).to(output.dtype)
                except Exception as err:
                    if not self.contain_errors:
                        raise
                    parts[:] = _split_by_owner(delta)  # which of its sliders fails?
                    if len(parts) == 1:
                        self._delta_failed(delta, err)
                        return None
            total = None
            for part in parts:
                if id(part) in self._broken:
                    continue
                try:
                    value = self._delta_output(part, x, rows)
                except Exception as err:
                    self._delta_failed(part, err)
                    continue
                total = value if total is None else total + value
            return None if total is None else output + total.to(output.dtype)

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

    def _delta_failed(self, delta: LayerDelta, err: BaseException) -> None:
        """A delta raised inside the model: it never runs again and its sliders go off (see ``contain_errors``)."""
        self._broken.add(id(delta))
        owners = sorted({int(i) for i in delta.owners.tolist()})
        names = []
        for index in owners:
            slider = self._hooked[index]
            if slider.network.name in self._failed_names:
                continue
            self._failed_names.add(slider.network.name)
            slider.unet_multiplier = 0.0
            slider.text_multiplier = 0.0  # conds of later batches / the hires pass: without it too
            names.append(slider.network.name)
        if not names:
            return  # its sliders were off already: it added nothing
        self._call_failed = True
        self._apply_text()
        if self.on_failure is not None:
            self.on_failure(names, err)

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
                                         [s.text_alpha() for s in self._sliders])

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


def _split_by_owner(delta: LayerDelta) -> list[LayerDelta]:
    """One delta per slider of a packed one (slices of its factors), to tell which slider's part raises."""
    owners = delta.owners.tolist()
    if len(set(owners)) < 2:
        return [delta]
    parts = []
    for owner in sorted(set(owners)):
        mask = delta.owners == owner
        parts.append(LayerDelta(layer=delta.layer, down=delta.down[mask], up=delta.up[:, mask],
                                owners=delta.owners[mask], scales=delta.scales[mask]))
    return parts


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
