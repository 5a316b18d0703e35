"""Scripts: the ``Script`` base class, the loaded script classes, and the runner that calls their hooks.

Every hook gets the script's own slice of the UI values, ``p.script_args[args_from:args_to]``; a hook a
script doesn't override is never called; an exception in one is reported and the job goes on.
"""

from __future__ import annotations

import inspect
import os
import re
import sys
from collections import namedtuple

import gradio as gr
from modules import errors, paths, script_callbacks, script_loading

AlwaysVisible = object()


class PostSampleArgs:
    def __init__(self, samples):
        self.samples = samples


class Script:
    name = None
    section = None
    filename = None
    args_from = None
    args_to = None
    alwayson = False
    is_txt2img = False
    is_img2img = False
    tabname = None
    group = None
    create_group = True
    infotext_fields = None
    paste_field_names = None
    setup_for_ui_only = False
    controls = None

    def title(self):
        raise NotImplementedError

    def ui(self, is_img2img):
        pass

    def show(self, is_img2img):
        return True

    def run(self, p, *args):
        pass

    def setup(self, p, *args):
        pass

    def before_process(self, p, *args):
        pass

    def process(self, p, *args):
        pass

    def before_process_batch(self, p, *args, **kwargs):
        pass  # kwargs: batch_number, prompts, seeds, subseeds

    def after_extra_networks_activate(self, p, *args, **kwargs):
        pass  # kwargs: batch_number, prompts, seeds, subseeds, extra_network_data

    def process_batch(self, p, *args, **kwargs):
        pass  # kwargs: batch_number, prompts, seeds, subseeds

    def post_sample(self, p, ps: PostSampleArgs, *args):
        pass

    def postprocess(self, p, processed, *args):
        pass

    def process_before_every_sampling(self, p, *args, **kwargs):
        pass

    def before_hr(self, p, *args):
        pass

    def elem_id(self, item_id):
        # The tab prefix is only added when the script shows the same way on both tabs.
        tab = f"{'img2img' if self.is_img2img else 'txt2img'}_" if self.show(True) == self.show(False) else ""
        title = re.sub(r"[^a-z_0-9]", "", re.sub(r"\s", "_", self.title().lower()))
        return f"script_{tab}{title}_{item_id}"


ScriptClassData = namedtuple("ScriptClassData", ["script_class", "path", "basedir", "module"])
scripts_data: list[ScriptClassData] = []
current_basedir = paths.script_path


def basedir():
    """The extension folder while its script is being imported; the webui root afterwards."""
    return current_basedir


def load_scripts(script_files):
    """Import ``(basedir, path)`` script files in order, as ``modules.scripts.load_scripts`` does."""
    global current_basedir
    scripts_data.clear()
    script_callbacks.clear_callbacks()
    saved_path = sys.path
    for folder, path in script_files:
        try:
            if folder != paths.script_path:
                sys.path = [folder] + sys.path
            current_basedir = folder
            module = script_loading.load_module(path)
            for value in module.__dict__.values():
                if inspect.isclass(value) and issubclass(value, Script):
                    scripts_data.append(ScriptClassData(value, path, folder, module))
        except Exception:
            errors.report(f"Error loading script: {os.path.basename(path)}", exc_info=True)
        finally:
            sys.path = saved_path
            current_basedir = paths.script_path


def wrap_call(func, filename, funcname, *args, default=None, **kwargs):
    try:
        return func(*args, **kwargs)
    except Exception:
        errors.report(f"Error calling: {filename}/{funcname}", exc_info=True)
    return default


class ScriptRunner:
    def __init__(self):
        self.scripts = []
        self.selectable_scripts = []
        self.alwayson_scripts = []
        self.titles = []
        self.infotext_fields = []
        self.paste_field_names = []
        self.inputs = [None]

    def initialize_scripts(self, is_img2img):
        self.scripts.clear()
        self.alwayson_scripts.clear()
        self.selectable_scripts.clear()
        for data in scripts_data:
            try:
                script = data.script_class()
            except Exception:
                errors.report(f"Error # failed to initialize Script {data.module}: ", exc_info=True)
                continue
            script.filename = data.path
            script.is_txt2img, script.is_img2img = not is_img2img, is_img2img
            script.tabname = "img2img" if is_img2img else "txt2img"
            visibility = script.show(is_img2img)
            if visibility is AlwaysVisible:
                script.alwayson = True
                self.scripts.append(script)
                self.alwayson_scripts.append(script)
            elif visibility:
                self.scripts.append(script)
                self.selectable_scripts.append(script)

    def create_script_ui(self, script):
        script.args_from = script.args_to = len(self.inputs)
        controls = wrap_call(script.ui, script.filename, "ui", script.is_img2img)
        script.controls = controls
        if controls is None:
            return
        script.name = (wrap_call(script.title, script.filename, "title", default=script.filename) or "").lower()
        self.infotext_fields += script.infotext_fields or []
        self.paste_field_names += script.paste_field_names or []
        self.inputs += controls
        script.args_to = len(self.inputs)

    def setup_ui(self):
        """Always-on scripts' UI, then the "Script" dropdown (``inputs[0]``), then the selectable scripts'."""
        self.inputs = [None]
        self.titles = [script.title() for script in self.selectable_scripts]
        for script in self.alwayson_scripts:
            with gr.Group(visible=True) as group:
                self.create_script_ui(script)
            script.group = group
        self.inputs[0] = gr.Dropdown(label="Script", elem_id="script_list", choices=["None", *self.titles],
                                     value="None", type="index")
        for script in self.selectable_scripts:
            with gr.Group(visible=False) as group:
                self.create_script_ui(script)
            script.group = group

    def default_script_args(self):
        """What the API sends for an empty ``alwayson_scripts``: each control's value, script index 0."""
        return [0, *[getattr(control, "value", None) for control in self.inputs[1:]]]

    def script(self, title):
        return next((s for s in self.scripts if s.title().lower() == title.lower()), None)

    def ordered_scripts(self, method_name):
        return [s for s in self.alwayson_scripts
                if getattr(type(s), method_name, None) is not getattr(Script, method_name, None)]

    def _call(self, script, method_name, p, *leading, **kwargs):
        try:
            getattr(script, method_name)(p, *leading, *p.script_args[script.args_from:script.args_to], **kwargs)
        except Exception:
            errors.report(f"Error running {method_name}: {script.filename}", exc_info=True)

    def _each(self, method_name, p, *leading, **kwargs):
        for script in self.ordered_scripts(method_name):
            self._call(script, method_name, p, *leading, **kwargs)

    def setup_scrips(self, p, *, is_ui=True):
        for script in self.ordered_scripts("setup"):
            if is_ui or not script.setup_for_ui_only:
                self._call(script, "setup", p)

    def before_process(self, p):
        self._each("before_process", p)

    def process(self, p):
        self._each("process", p)

    def before_process_batch(self, p, **kwargs):
        self._each("before_process_batch", p, **kwargs)

    def after_extra_networks_activate(self, p, **kwargs):
        self._each("after_extra_networks_activate", p, **kwargs)

    def process_batch(self, p, **kwargs):
        self._each("process_batch", p, **kwargs)

    def post_sample(self, p, ps: PostSampleArgs):
        self._each("post_sample", p, ps)

    def before_hr(self, p):
        self._each("before_hr", p)

    def process_before_every_sampling(self, p, **kwargs):
        self._each("process_before_every_sampling", p, **kwargs)

    def postprocess(self, p, processed):
        self._each("postprocess", p, processed)


scripts_txt2img: ScriptRunner | None = None
