"""Which α each row of a UNet call gets: the hooked sliders' per-row α table and a cursor over it.

A sampler calls the UNet with ``R`` rows per step — in the webui, cond rows of every image then uncond rows — in
one call or in consecutive chunks. A per-row α is a vector of length ``R``; the cursor advances by each UNet
call's batch size and ``SliderEngine.set_step`` resets it, so chunked calls read the right slice. Other code may
call the UNet too (an extension's extra pass per step: SAG, regional prompting, context windows…). A call with all
``R`` rows reads the whole table wherever the cursor stands; a call that doesn't fit the rows left gets one α per
slider for all its rows — the first row's, i.e. the batch's first image's (every image's when they share one), the
same choice as when the webui's row layout can't be read — and ``on_mismatch`` hears of it (else one log line).
Nothing raises inside the UNet's forward for it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .engine import ActiveSlider

logger = logging.getLogger("concept_sliders")


class RowCursor:
    """The per-row α table of the hooked sliders and the rows of it the current UNet call reads."""

    def __init__(self) -> None:
        self.table: torch.Tensor | None = None  # [R, k] per-row α of each slider (0 when gated off)
        self.cursor = 0
        self.rows: torch.Tensor | None = None  # [B, k] α of the rows in the current UNet call
        self.call: tuple[int | None, int] | None = None  # (first row or None: fallback, batch) of the UNet call
        # A UNet call whose rows don't fit the table: on_mismatch(batch, first_row, rows) (else a log line).
        self.on_mismatch: Callable[[int, int, int], None] | None = None
        self._mismatch_logged = False
        self._key: tuple | None = None  # (first row or None, batch) ``rows`` is for
        # Device copies of recent α tables, by content: a training loop alternating between a few tables (or
        # sampling steps re-setting the same α) copies each to the GPU once. A host-to-device copy from
        # ordinary memory waits for the GPU to finish its queue, which would stall every UNet call.
        self._device_tables: dict[tuple, torch.Tensor] = {}

    def set_table(self, sliders: Sequence[ActiveSlider], progress: float) -> None:
        """The table's columns: each slider's per-row α, 0 where its step gate is closed at ``progress``."""
        if not sliders:
            self.table = None
            return
        columns = [s.row_alphas() * (1.0 if s.is_on(progress) else 0.0) for s in sliders]
        rows = max(len(c) for c in columns)
        for slider, column in zip(sliders, columns, strict=True):
            if len(column) not in (1, rows):
                raise ValueError(f"slider {slider.network.name}: {len(column)} α values for {rows} rows")
        table = torch.stack([c.expand(rows) for c in columns], dim=1)
        self.table = None if not table.any() else table
        self._key = None

    def select(self, batch: int, device: torch.device, report: bool = True) -> bool:
        """The α rows of a UNet call of ``batch`` rows (see the module docstring); never raises for its size.

        Returns whether ``rows`` changed, i.e. coefficients made from the last ones are stale.
        """
        if self.table is None:
            self.rows = None
            self.call = None
            return False
        total = self.table.shape[0]
        if total == 1 or batch == total:
            first = 0  # one α for every row, or the whole CFG batch in one call
        elif self.cursor + batch <= total:
            first = self.cursor
        else:
            first = None  # an extra call that isn't part of the denoiser's row layout
            if report:
                self._mismatch(batch, total)
        self.call = (first, batch)
        if self._key == (first, batch):
            return False  # coefficients only change with the rows they serve; most steps reuse the last ones
        table = self._device_table(device)
        self._key = (first, batch)
        if total == 1 or first is None:
            self.rows = table[:1].expand(batch, -1)
        else:
            self.rows = table[first:first + batch]
        return True

    def advance(self, call: tuple[int | None, int] | None) -> None:
        """After the UNet ``call`` (``self.call`` when it began): the next chunk starts where its rows ended."""
        if call is not None and call[0] is not None and self.table is not None and self.table.shape[0] > 1:
            self.cursor = (call[0] + call[1]) % self.table.shape[0]

    def clear(self) -> None:
        self.table = None
        self.rows = None
        self._key = None
        self.call = None
        self._device_tables.clear()

    def _mismatch(self, batch: int, total: int) -> None:
        if self.on_mismatch is not None:
            self.on_mismatch(batch, self.cursor, total)
        elif not self._mismatch_logged:
            self._mismatch_logged = True
            logger.warning("Concept Sliders: a UNet call with %d rows doesn't fit the %d rows α was set for (row %d); "
                           "such calls get the first image's α", batch, total, self.cursor)

    def _device_table(self, device: torch.device) -> torch.Tensor:
        table = self.table
        key = (tuple(table.shape), tuple(table.flatten().tolist()), device)
        on_device = self._device_tables.get(key)
        if on_device is None:
            if len(self._device_tables) >= 16:
                self._device_tables.clear()
            on_device = self._device_tables[key] = table.to(device)
        return on_device
