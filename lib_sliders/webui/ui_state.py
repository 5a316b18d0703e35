"""What the Sliders accordion's widgets mean, without gradio: the script argument they make, the α range a
row offers, and the rows a pasted infotext fills in."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..prompt.infotext import SLIDERS_KEY, parse_sliders
from ..prompt.prompt_tags import format_number

NO_SLIDER = "None"


def compose_state(enabled: bool, visible_rows: int, names: Sequence[str], alphas: Sequence[float],
                  starts: Sequence[float], strip: tuple[str, float, float] | None = None) -> dict[str, Any]:
    """The script argument (see ``args``) for the accordion's current widget values."""
    sliders: list[dict[str, Any]] = []
    for name, alpha, start in list(zip(names, alphas, starts, strict=True))[:max(0, int(visible_rows or 0))]:
        if name and name != NO_SLIDER:
            sliders.append({"name": name, "alpha": float(alpha or 0.0), "start": float(start or 0.0)})
    if strip is not None:
        name, first, last = strip
        if name and name != NO_SLIDER:
            sliders.append({"name": name, "alpha": f"{format_number(first or 0.0)}..{format_number(last or 0.0)}"})
    return {"enabled": bool(enabled), "sliders": sliders}


def alpha_limits(alpha_range: tuple[float, float] | None, default_max: float) -> tuple[float, float]:
    """The α slider's (minimum, maximum): symmetric around 0, covering the file's recommended range."""
    reach = float(default_max)
    if alpha_range is not None:
        reach = max(abs(alpha_range[0]), abs(alpha_range[1]))
    return -reach, reach


def rows_from_infotext(params: dict[str, Any], max_rows: int) -> list[tuple[str, float, float]] | None:
    """(name, α, start) rows for a pasted infotext, or None when it has no ``Sliders`` field."""
    value = params.get(SLIDERS_KEY)
    if value is None:
        return None
    entries, _problems = parse_sliders(str(value))
    return [(e.name, e.alpha, e.start) for e in entries[:max_rows]]
