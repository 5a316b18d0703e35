"""Errors inside the model: a slider whose delta raises during a forward pass goes off instead of failing it.

(Text-encoder hooks report theirs through ``text_failed``; ``text_hooks`` reruns the encoder call.)

With ``enabled`` (the engine's ``contain_errors``, the webui's setting) a layer's packed delta that raises is split
per slider to tell which one fails; that slider is turned off (both multipliers 0), the UNet call is run again
without it, so that call's output has none of its effect, and ``on_failure`` hears which sliders. Without it the
error is raised (training wants to see it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from .layer_delta import LayerDelta

if TYPE_CHECKING:
    from .engine import ActiveSlider


class ErrorContainment:
    """Which sliders failed inside the model, and what a failure turns off."""

    def __init__(self, sliders: Callable[[], Sequence[ActiveSlider]], turned_off: Callable[[], None]):
        self.enabled = False
        self.on_failure: Callable[[list[str], BaseException], None] | None = None
        self._sliders = sliders  # the hooked sliders: a packed delta's owners index them
        self._turned_off = turned_off  # after multipliers went to 0: the text-encoder part follows
        self._failed_names: set[str] = set()
        self._broken: set[int] = set()  # ids of layer deltas that raised (never run again)
        self._call_failed = False

    @property
    def failed(self) -> list[str]:
        return sorted(self._failed_names)

    def clear(self) -> None:
        self._failed_names = set()
        self._broken = set()
        self._call_failed = False

    def watch(self, delta: LayerDelta) -> ContainedDelta:
        return ContainedDelta(delta, self)

    def is_broken(self, delta: LayerDelta) -> bool:
        return id(delta) in self._broken

    def rerun(self, call_again: Callable[[], torch.Tensor], output: torch.Tensor, attempts: int) -> torch.Tensor:
        """``output`` of a UNet call, or, when a delta raised during it, that of ``call_again()``: its sliders are
        off by then (the layers before the failing one had already added their part). Each retry follows one more
        slider failing, or ends."""
        for _ in range(attempts):
            if not self._call_failed:
                break
            self._call_failed = False
            output = call_again()
        return output

    def delta_failed(self, delta: LayerDelta, err: BaseException) -> None:
        """A delta raised inside the model: it never runs again and its sliders go off."""
        self._broken.add(id(delta))
        owners = sorted({int(i) for i in delta.owners.tolist()})
        sliders = self._sliders()
        names = []
        for index in owners:
            slider = sliders[index]
            if slider.network.name in self._failed_names:
                continue
            self._failed_names.add(slider.network.name)
            slider.unet_multiplier = 0.0
            slider.text_multiplier = 0.0  # conds of later batches / the hires pass: without it too
            names.append(slider.network.name)
        if not names:
            return  # its sliders were off already: it added nothing
        self._call_failed = True
        self._turned_off()
        if self.on_failure is not None:
            self.on_failure(names, err)

    def text_failed(self, sliders: Sequence[ActiveSlider], err: BaseException) -> bool:
        """A text-encoder hook of ``sliders`` raised: when enabled, they go off (True); else the error is raised."""
        if not self.enabled:
            return False
        names = []
        for slider in sliders:
            slider.unet_multiplier = 0.0
            slider.text_multiplier = 0.0
            if slider.network.name not in self._failed_names:
                self._failed_names.add(slider.network.name)
                names.append(slider.network.name)
        if names and self.on_failure is not None:
            self.on_failure(names, err)
        return True


class ContainedDelta:
    """One layer's packed delta: run whole until it raises, then per slider, so only the failing one goes off."""

    def __init__(self, delta: LayerDelta, containment: ErrorContainment):
        self.delta = delta
        self.parts = [delta]  # the packed delta; split per slider once it raised
        self.containment = containment

    def output(self, compute: Callable[[LayerDelta, torch.Tensor, torch.Tensor], torch.Tensor],
               x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor | None:
        """What the layer adds for input ``x`` (``compute(part, x, rows)`` over the parts that work), or None."""
        containment = self.containment
        if len(self.parts) == 1:  # the usual case
            if containment.is_broken(self.delta):
                return None
            try:
                return compute(self.delta, x, rows)
            except Exception as err:
                if not containment.enabled:
                    raise
                self.parts = split_by_owner(self.delta)  # which of its sliders fails?
                if len(self.parts) == 1:
                    containment.delta_failed(self.delta, err)
                    return None
        total = None
        for part in self.parts:
            if containment.is_broken(part):
                continue
            try:
                value = compute(part, x, rows)
            except Exception as err:
                containment.delta_failed(part, err)
                continue
            total = value if total is None else total + value
        return total


def split_by_owner(delta: LayerDelta) -> list[LayerDelta]:
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
