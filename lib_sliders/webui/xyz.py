"""Axes for the built-in X/Y/Z plot script (``scripts/xyz_grid.py``).

* ``[Sliders] α: <name>`` — one per slider installed at start-up: that slider's α;
* ``[Sliders] name:α`` — values like ``age:-2, age:2, smile:1``: any slider, any α;
* ``[Sliders] slider`` — which slider the two axes below act on (at the default α unless one sets it);
* ``[Sliders] α`` / ``[Sliders] start`` — for the ``[Sliders] slider`` axis's slider, or, without that
  axis, for every slider of the job (prompt tags and accordion rows).

The plot copies the axis list when it builds its UI, so the axes are added when our script is imported
(the plot's script is always imported before extensions'). Re-importing replaces them (Reload UI).
"""

from __future__ import annotations

import logging

from modules import scripts

from ..prompt.prompt_tags import parse_number

logger = logging.getLogger("concept_sliders")
LABEL_PREFIX = "[Sliders] "


def _xyz_module():
    for data in scripts.scripts_data:
        if data.script_class.__module__ == "xyz_grid.py" and hasattr(data.module, "axis_options"):
            return data.module
    return None


def _set(p, key: str, value) -> None:
    # New dicts each time: the plot's per-cell copy of p is shallow.
    p.sliders_override = {**(getattr(p, "sliders_override", None) or {}), key: value}


def _set_alpha(p, name: str, alpha: float) -> None:
    alphas = (getattr(p, "sliders_override", None) or {}).get("alpha", {})
    _set(p, "alpha", {**alphas, name: alpha})


def _alpha_of(name: str):
    def apply(p, x, xs):
        _set_alpha(p, name, float(x))

    return apply


def _apply_name_alpha(p, x, xs):
    _set_alpha(p, *_split_name_alpha(x))


def _split_name_alpha(text: str) -> tuple[str, float]:
    name, sep, alpha_text = str(text).rpartition(":")
    alpha = parse_number(alpha_text)
    if not sep or not name.strip() or alpha is None:
        raise RuntimeError(f"[Sliders] name:α: '{text}' is not name:α (e.g. age:-2)")
    return name.strip(), alpha


def _apply_axis_slider(p, x, xs):
    _set(p, "axis_slider", str(x).strip())


def _apply_axis_alpha(p, x, xs):
    _set(p, "axis_alpha", float(x))


def _apply_axis_start(p, x, xs):
    _set(p, "axis_start", float(x))


def register_axes(library_names, known) -> int:
    """Add our axes to the X/Y/Z plot; returns how many. ``known(name)`` tells whether a slider exists."""
    xyz = _xyz_module()
    if xyz is None:
        logger.info("Concept Sliders: X/Y/Z plot script not found; no axes added")
        return 0

    def confirm_names(p, xs):
        for x in xs:
            if not known(str(x).strip()):
                raise RuntimeError(f"Unknown slider: {x}")

    def confirm_name_alpha(p, xs):
        confirm_names(p, [_split_name_alpha(x)[0] for x in xs])

    axes = [
        xyz.AxisOption(f"{LABEL_PREFIX}name:α", str, _apply_name_alpha, format_value=xyz.format_value,
                       confirm=confirm_name_alpha),
        xyz.AxisOption(f"{LABEL_PREFIX}slider", str, _apply_axis_slider, format_value=xyz.format_value,
                       confirm=confirm_names, choices=lambda: list(library_names())),
        xyz.AxisOption(f"{LABEL_PREFIX}α", float, _apply_axis_alpha),
        xyz.AxisOption(f"{LABEL_PREFIX}start", float, _apply_axis_start),
    ]
    axes += [xyz.AxisOption(f"{LABEL_PREFIX}α: {name}", float, _alpha_of(name)) for name in library_names()]
    # Idempotent across Reload UI: drop our previous axes first.
    xyz.axis_options[:] = [a for a in xyz.axis_options if not a.label.startswith(LABEL_PREFIX)] + axes
    return len(axes)
