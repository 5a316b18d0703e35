"""Double of the webui's ``scripts/xyz_grid.py`` (the "X/Y/Z plot" script): its axis list and cell runs.

Extensions find this module through ``modules.scripts.scripts_data`` (``script_class.__module__ ==
"xyz_grid.py"``) and append ``AxisOption``s to ``axis_options`` before the UI is built. A cell is a
SHALLOW copy of ``p`` that each axis's ``apply(pc, x, xs)`` edits, then ``process_images(pc)``.
``run_axis`` is the part of ``Script.run`` that does this for one axis (no grid images here).
"""

from copy import copy

from modules import errors, processing, scripts, shared


def apply_field(field):
    def fun(p, x, xs):
        setattr(p, field, x)

    return fun


def do_nothing(p, x, xs):
    pass


def format_value_add_label(p, opt, x):
    if type(x) is float:
        x = round(x, 8)
    return f"{opt.label}: {x}"


def format_value(p, opt, x):
    if type(x) is float:
        x = round(x, 8)
    return x


def format_nothing(p, opt, x):
    return ""


class AxisOption:
    def __init__(self, label, type, apply, format_value=format_value_add_label, confirm=None, cost=0.0, choices=None,
                 prepare=None):
        self.label = label
        self.type = type
        self.apply = apply
        self.format_value = format_value
        self.confirm = confirm
        self.cost = cost
        self.prepare = prepare
        self.choices = choices


class AxisOptionTxt2Img(AxisOption):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.is_img2img = False


axis_options = [
    AxisOption("Nothing", str, do_nothing, format_value=format_nothing),
    AxisOption("Seed", int, apply_field("seed")),
    AxisOption("Steps", int, apply_field("steps")),
    AxisOption("CFG Scale", float, apply_field("cfg_scale")),
]


def run_axis(p, opt, values):
    """One cell per value of ``opt`` (values as typed text, like the plot's text box): a list of Processed."""
    xs = [opt.type(v) for v in (opt.prepare(values) if opt.prepare else values)]
    if opt.confirm:
        opt.confirm(p, xs)
    results = []
    for x in xs:
        if shared.state.interrupted:
            results.append(processing.Processed(p, [], p.seed, ""))
            continue
        pc = copy(p)
        pc.styles = pc.styles[:]
        opt.apply(pc, x, xs)
        try:
            results.append(processing.process_images(pc))
        except Exception as e:
            errors.display(e, "generating image for xyz plot")
            results.append(processing.Processed(p, [], p.seed, ""))
        results[-1].cell = pc  # double-only: the cell's p, for tests
    return results


class Script(scripts.Script):
    def title(self):
        return "X/Y/Z plot"

    def ui(self, is_img2img):
        self.current_axis_options = [x for x in axis_options if type(x) is AxisOption or not is_img2img]
        return None  # the real script returns its widgets; the double builds none
