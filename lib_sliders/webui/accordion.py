"""The "Sliders" accordion of txt2img and img2img (gradio 3, as the webui ships it).

Rows of slider + α + start (add/remove rows, reset α per row), a strip row that spreads one slider's α
across the images of the job, a refresh button. The script's only argument is a ``gr.State`` holding the
dict ``args.parse_args`` reads, rebuilt from the widgets on every change; API callers send that dict.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import gradio as gr
from modules.ui_common import refresh_symbol
from modules.ui_components import FormRow, InputAccordion, ToolButton

from ..prompt.infotext import SLIDERS_KEY
from .args import EMPTY_ARGS
from .ui_state import NO_SLIDER, alpha_limits, compose_state, rows_from_infotext

RESET_SYMBOL = "\u21ba"  # ↺


@dataclass
class AccordionUI:
    state: gr.State
    enabled: InputAccordion
    infotext_fields: list = field(default_factory=list)
    paste_field_names: list = field(default_factory=list)


def build(elem_id, names: list[str], slider_info, default_alpha_max: float, max_rows: int,
          refresh_names, note: str | None = None) -> AccordionUI:
    """Create the widgets (inside the script's ``ui()``) and wire them.

    ``elem_id`` is ``Script.elem_id``; ``slider_info(name)`` returns the library's info dict or None;
    ``refresh_names()`` rescans and returns the new name list; ``note``: a line shown first in the accordion
    (why sliders aren't applied on this webui, e.g. on Forge).
    """
    choices = [NO_SLIDER, *names]
    low, high = alpha_limits(None, default_alpha_max)
    with InputAccordion(False, label="Sliders", elem_id=elem_id("enable")) as enabled:
        with enabled.extra():
            refresh = ToolButton(value=refresh_symbol, elem_id=elem_id("refresh"), tooltip="Rescan slider folders")
        if note:
            gr.HTML(value=f"<p>{html.escape(note)}</p>", elem_id=elem_id("host_note"))
        state = gr.State(dict(EMPTY_ARGS))
        count = gr.Number(value=1, precision=0, visible=False, elem_id=elem_id("rows"))
        groups, dropdowns, alphas, starts = [], [], [], []
        for i in range(max_rows):
            with FormRow(visible=i == 0, elem_id=elem_id(f"row_{i}")) as group:
                dropdowns.append(gr.Dropdown(label=f"Slider {i + 1}", choices=choices, value=NO_SLIDER,
                                             elem_id=elem_id(f"name_{i}")))
                alphas.append(gr.Slider(label="α", minimum=low, maximum=high, step=0.05, value=0.0,
                                        elem_id=elem_id(f"alpha_{i}")))
                starts.append(gr.Slider(label="Start", minimum=0.0, maximum=1.0, step=0.05, value=0.0,
                                        elem_id=elem_id(f"start_{i}")))
                reset = ToolButton(value=RESET_SYMBOL, elem_id=elem_id(f"reset_{i}"), tooltip="α back to 0")
                reset.click(fn=lambda: 0.0, inputs=[], outputs=[alphas[i]], show_progress=False)
            groups.append(group)
        with FormRow():
            add = gr.Button("Add slider", size="sm", elem_id=elem_id("add"))
            remove = gr.Button("Remove last", size="sm", elem_id=elem_id("remove"))
        with FormRow():
            strip_name = gr.Dropdown(label="Strip: spread this slider's α across the images of the job",
                                     choices=choices, value=NO_SLIDER, elem_id=elem_id("strip_name"))
            strip_from = gr.Number(label="From α", value=-2.0, elem_id=elem_id("strip_from"))
            strip_to = gr.Number(label="To α", value=2.0, elem_id=elem_id("strip_to"))

    widgets = [enabled, count, *dropdowns, *alphas, *starts, strip_name, strip_from, strip_to]

    def on_change(is_on, visible, *values):
        names_, alphas_, starts_ = (values[k * max_rows:(k + 1) * max_rows] for k in range(3))
        strip = tuple(values[3 * max_rows:])
        return compose_state(is_on, visible, names_, alphas_, starts_, strip)

    for widget in widgets:
        widget.change(fn=on_change, inputs=widgets, outputs=[state], show_progress=False)

    def on_pick(name):
        # A user's pick (not a paste): α range and start from the file's recommendation.
        info = slider_info(name) if name and name != NO_SLIDER else None
        if info is None:
            return gr.update(), gr.update()
        low_, high_ = alpha_limits(info["alpha_range"], default_alpha_max)
        return gr.update(minimum=low_, maximum=high_), gr.update(value=info["default_start"])

    for dropdown, alpha, start in zip(dropdowns, alphas, starts, strict=True):
        dropdown.select(fn=on_pick, inputs=[dropdown], outputs=[alpha, start], show_progress=False)

    def show_rows(visible):
        visible = max(1, min(max_rows, int(visible or 1)))
        return [gr.update(visible=i < visible) for i in range(max_rows)]

    count.change(fn=show_rows, inputs=[count], outputs=groups, show_progress=False)
    add.click(fn=lambda n: min(max_rows, int(n or 1) + 1), inputs=[count], outputs=[count], show_progress=False)

    def remove_last(visible):
        visible = max(1, min(max_rows, int(visible or 1)))
        cleared = [gr.update() for _ in range(max_rows)]
        cleared[visible - 1] = gr.update(value=NO_SLIDER)  # a hidden row must not keep acting
        return [max(1, visible - 1), *cleared]

    remove.click(fn=remove_last, inputs=[count], outputs=[count, *dropdowns], show_progress=False)

    def on_refresh():
        new_choices = [NO_SLIDER, *refresh_names()]
        return [gr.update(choices=new_choices) for _ in range(max_rows + 1)]

    refresh.click(fn=on_refresh, inputs=[], outputs=[*dropdowns, strip_name], show_progress=False)

    infotext_fields = [(enabled, lambda d: SLIDERS_KEY in d)]

    def pasted_count(d):
        rows = rows_from_infotext(d, max_rows)
        return gr.update() if rows is None else max(1, len(rows))

    infotext_fields.append((count, pasted_count))
    for i in range(max_rows):
        infotext_fields += [(dropdowns[i], _paste_part(i, 0, NO_SLIDER, max_rows)),
                            (alphas[i], _paste_part(i, 1, 0.0, max_rows)),
                            (starts[i], _paste_part(i, 2, 0.0, max_rows))]
    return AccordionUI(state, enabled, infotext_fields, [SLIDERS_KEY])


def _paste_part(row: int, part: int, empty, max_rows: int):
    def paste(d):
        rows = rows_from_infotext(d, max_rows)
        if rows is None:
            return gr.update()
        return rows[row][part] if row < len(rows) else empty

    return paste
