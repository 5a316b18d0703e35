"""Callbacks extensions register with ``on_*``; the webui runs them with ``*_callback``, each in try/except."""

from __future__ import annotations

import inspect
import os
from collections import namedtuple

from modules import errors

ScriptCallback = namedtuple("ScriptCallback", ["script", "callback", "name"])


class CFGDenoiserParams:
    """What ``on_cfg_denoiser`` callbacks get before each CFG step; they may replace any tensor field."""

    def __init__(self, x, image_cond, sigma, sampling_step, total_sampling_steps, text_cond, text_uncond,
                 denoiser=None):
        self.x = x  # the UNet batch: cond rows of every image, then the uncond rows
        self.image_cond = image_cond
        self.sigma = sigma
        self.sampling_step = sampling_step  # shared.state.sampling_step
        self.total_sampling_steps = total_sampling_steps
        self.text_cond = text_cond
        self.text_uncond = text_uncond
        self.denoiser = denoiser  # the CFGDenoiser (``.p``, ``.step``, ``.total_steps``)


CATEGORIES = ("app_started", "model_loaded", "ui_settings", "before_ui", "cfg_denoiser", "script_unloaded",
              "infotext_pasted", "ui_tabs")
callback_map = {f"callbacks_{category}": [] for category in CATEGORIES}


def add_callback(callbacks, fun, *, name=None, category="unknown", filename=None):
    if filename is None:
        outside = [frame.filename for frame in inspect.stack(0) if frame.filename != __file__]
        filename = outside[0] if outside else "unknown file"
    label = f"{os.path.basename(filename)}/{category}" + (f"/{name}" if name else "")
    callbacks.append(ScriptCallback(filename, fun, label))


def ordered_callbacks(category):
    # The webui sorts by extension metadata and user settings; registration order is enough here.
    return list(callback_map[f"callbacks_{category}"])


def clear_callbacks():
    for callbacks in callback_map.values():
        callbacks.clear()


def remove_callbacks_for_function(callback_func):
    for callbacks in callback_map.values():
        callbacks[:] = [c for c in callbacks if c.callback != callback_func]


def _run(category, *args, reverse=False):
    found = ordered_callbacks(category)
    for c in reversed(found) if reverse else found:
        try:
            c.callback(*args)
        except Exception:
            errors.report(f"Error executing callback {category}_callback for {c.script}", exc_info=True)


def app_started_callback(demo, app):
    _run("app_started", demo, app)


def model_loaded_callback(sd_model):
    _run("model_loaded", sd_model)


def ui_settings_callback():
    _run("ui_settings")


def cfg_denoiser_callback(params: CFGDenoiserParams):
    _run("cfg_denoiser", params)


def infotext_pasted_callback(infotext: str, params: dict):
    _run("infotext_pasted", infotext, params)


def ui_tabs_callback():
    """Each callback returns a list of (gr.Blocks, title, elem_id); the webui adds them as top-level tabs."""
    tabs = []
    for callback in ordered_callbacks("ui_tabs"):
        tabs += callback.callback() or []
    return tabs


def before_ui_callback():
    _run("before_ui", reverse=True)  # the webui runs these last-registered first


def script_unloaded_callback():
    _run("script_unloaded", reverse=True)


def _register(category):
    def on(callback, *, name=None):
        add_callback(callback_map[f"callbacks_{category}"], callback, name=name, category=category)

    on.__name__ = f"on_{category}"
    return on


on_app_started = _register("app_started")
on_model_loaded = _register("model_loaded")
on_ui_settings = _register("ui_settings")
on_before_ui = _register("before_ui")
on_cfg_denoiser = _register("cfg_denoiser")
on_script_unloaded = _register("script_unloaded")
on_infotext_pasted = _register("infotext_pasted")
on_ui_tabs = _register("ui_tabs")
