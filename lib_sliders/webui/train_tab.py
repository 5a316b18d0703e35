"""The "Concept Sliders" tab's Train page (gradio 3.41, as the webui ships it).

Widgets come from ``train_form.FORM_FIELDS`` in that order; every handler turns the widgets' values into a
dict and leaves the logic to ``train_form_parse``/``train_form_fill``, ``train_uploads``, ``train_messages``
and ``TrainingJobs``. Start and Resume run the job in the handler itself, inside the webui's
``wrap_gradio_gpu_call`` (queue lock, ``shared.state``, the progress task whose id ``slidersStartTraining``
in ``javascript/sliders.js`` puts first among the arguments).
"""

from __future__ import annotations

import contextlib
import html
import os
import tempfile

import gradio as gr
from modules import call_queue, shared
from modules.ui_common import refresh_symbol
from modules.ui_components import ToolButton

from ..errors import SliderError
from . import train_form, train_form_fill, train_form_parse, train_messages, train_uploads
from .train_form import FIELD_NAMES, FIELDS
from .train_jobs import SubmitError, TrainingJobs

ELEM_PREFIX = "sliders_train_"
_JSON_PLACEHOLDERS = {
    "more_prompts": '[{"target": "person", "positive": "person, smiling", "negative": "person, frowning"}]',
    "advanced": '{"max_denoising_steps": 50}',
}


def elem_id(item: str) -> str:
    return ELEM_PREFIX + item


def _widget(name: str, slider_names=()):
    field = FIELDS[name]
    common = {"label": field.label, "info": field.info or None, "elem_id": elem_id(name)}
    if field.kind in ("text", "lines", "json"):
        lines = {"text": 1, "lines": 3, "json": 2}[field.kind]
        placeholder = "one concept per line" if field.kind == "lines" else _JSON_PLACEHOLDERS.get(name)
        return gr.Textbox(value=field.default, lines=lines, placeholder=placeholder, **common)
    if field.kind == "radio":
        return gr.Radio(choices=list(field.choices), value=field.default, **common)
    if field.kind == "dropdown":
        return gr.Dropdown(choices=list(field.choices), value=field.default, **common)
    if field.kind == "sliders":  # names from the slider list; a loaded preset may name others
        return gr.Dropdown(choices=list(slider_names), value=list(field.default), multiselect=True, **common)
    if field.kind in ("number", "int"):
        return gr.Number(value=field.default, precision=0 if field.kind == "int" else None, **common)
    if field.kind == "checkbox":
        return gr.Checkbox(value=field.default, **common)
    raise ValueError(f"unknown form field kind {field.kind!r}")


class TrainTab:
    """The handlers, with the job this page started (for Cancel)."""

    def __init__(self, jobs: TrainingJobs, library):
        self.jobs = jobs
        self.library = library
        self.current = None

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def split(args) -> tuple[dict, list, list]:
        """(form values, before uploads, after uploads) from the inputs ``[*form, before_files, after_files]``."""
        count = len(FIELD_NAMES)
        return dict(zip(FIELD_NAMES, args[:count], strict=True)), args[count], args[count + 1]

    def sliders_dir(self) -> str:
        return self.jobs.host.sliders_dir()

    def running_job(self):
        if self.current is not None and self.current.state in ("queued", "running"):
            return self.current
        return next((job for job in self.jobs.jobs() if job.state == "running"), None)

    # ------------------------------------------------------------------ handlers

    def start(self, task_id, *args):
        return self._train(args, resume=False)

    def resume(self, task_id, *args):
        return self._train(args, resume=True)

    def _train(self, args, resume: bool):
        values, before, after = self.split(args)
        try:
            config, options = train_form_parse.build_request(values, self.sliders_dir(), before, after, resume=resume)
            job = self.jobs.create(config, options)
        except SubmitError as err:
            return gr.update(), "", train_messages.errors_html(err.errors)
        self.current = job
        self.jobs.run(job)  # the gpu-call wrapper holds the queue lock
        return job.preview, "", train_messages.job_html(job)

    def cancel(self):
        job = self.running_job()
        if job is None:
            return "<p>Nothing is training.</p>"
        self.jobs.cancel(job.id)
        shared.state.interrupt()
        return (f"<p>Cancelling <b>{html.escape(job.config.name)}</b>: what it learned so far is saved, "
                "and Resume continues it.</p>")

    def name_hint(self, name):
        name = str(name or "").strip()
        if not name:
            return ""
        exists = os.path.exists(self.jobs.output_path(name))
        try:
            exists = exists or self._library().get(name) is not None
        except Exception:  # noqa: BLE001 — a hint only
            pass
        return train_messages.name_hint_html(name, exists)

    def _library(self):
        return self.library() if callable(self.library) else self.library

    def slider_names(self) -> list[str]:
        try:
            return self._library().names()
        except Exception:  # noqa: BLE001 — an unreadable folder leaves the list empty, training alone still works
            return []

    def refresh_sliders(self, chosen):
        """Rescan the slider folders; names already chosen stay chosen (the job says if one is gone)."""
        with contextlib.suppress(Exception):
            self._library().refresh()
        return self.among_update(chosen)

    def among_update(self, chosen):
        """The multiselect with ``chosen`` picked; names the list hasn't got (a preset's, a removed file's) are
        offered too, so that nothing is dropped silently (the job then names what is missing)."""
        names = self.slider_names()
        chosen = train_form_parse.parse_slider_names(chosen)
        return gr.update(choices=[*names, *(n for n in chosen if n not in names)], value=chosen)

    def save_preset(self, *args):
        values, before, after = self.split(args)
        try:
            uploaded = []
            if train_form.mode_of(values.get("mode")) == "image" and (before or after):
                uploaded = train_uploads.stage_uploads(self.sliders_dir(), values.get("name"), before, after)
            text = train_form_parse.form_to_json(values, uploaded)
        except SubmitError as err:
            return gr.update(), train_messages.errors_html(err.errors, "The preset was not saved:")
        path = os.path.join(tempfile.mkdtemp(prefix="sliders_preset_"), train_form_parse.preset_file_name(values))
        with open(path, "w", encoding="utf-8") as file:
            file.write(text)
        return gr.update(value=path, visible=True), train_messages.notes_html(f"Saved {os.path.basename(path)}.", [])

    def load_preset(self, upload):
        keep = [gr.update() for _ in FIELD_NAMES]
        if upload is None:
            return [*keep, gr.update(), gr.update(), ""]
        path, original = train_uploads.upload_path(upload)
        try:
            form, notes = train_form_fill.import_preset(path)
        except (SliderError, OSError) as err:
            return [*keep, gr.update(), gr.update(), train_messages.errors_html([("file", str(err))], "Not loaded:")]
        updates = [gr.update(value=form[name]) if name in form else gr.update() for name in FIELD_NAMES]
        if form.get("train_among"):
            updates[FIELD_NAMES.index("train_among")] = self.among_update(form["train_among"])
        text_visible, image_visible = train_form.mode_visibility(form["mode"])
        return [*updates, gr.update(visible=text_visible), gr.update(visible=image_visible),
                train_messages.notes_html(f"Loaded {original}.", notes)]


def _mode_groups(mode):
    text_visible, image_visible = train_form.mode_visibility(mode)
    return gr.update(visible=text_visible), gr.update(visible=image_visible)


def create_tab(jobs: TrainingJobs, library, note: str | None = None) -> gr.Blocks:
    """The tab; ``note``: a line shown above the form (why training isn't available on this webui, e.g. Forge)."""
    tab = TrainTab(jobs, library)
    widgets: dict = {}

    def add(*names):
        for name in names:
            widgets[name] = _widget(name, tab.slider_names() if FIELDS[name].kind == "sliders" else ())

    with gr.Blocks(analytics_enabled=False) as blocks:
        with gr.Row(equal_height=False):
            with gr.Column(variant="panel", elem_id=elem_id("form")):
                if note:
                    gr.HTML(value=f"<p>{html.escape(note)}</p>", elem_id=elem_id("host_note"))
                add("name")
                name_hint = gr.HTML(value="", elem_id=elem_id("name_hint"))
                add("mode")
                with gr.Group(visible=True, elem_id=elem_id("text_group")) as text_group:
                    add("target")
                    with gr.Row():
                        add("positive", "negative")
                    add("neutral", "preservation")
                    with gr.Row():
                        add("action", "guidance")
                    with gr.Accordion("More prompts", open=False, elem_id=elem_id("more_prompts_accordion")):
                        add("more_prompts")
                with gr.Group(visible=False, elem_id=elem_id("image_group")) as image_group:
                    with gr.Row():
                        add("before_dir", "after_dir")
                    with gr.Row():
                        before_files = gr.File(label="…or upload before images", file_count="multiple",
                                               file_types=["image"], elem_id=elem_id("before_files"))
                        after_files = gr.File(label="…and after images (same file names)", file_count="multiple",
                                              file_types=["image"], elem_id=elem_id("after_files"))
                    with gr.Row():
                        add("image_prompt", "scales")
                with gr.Accordion("Settings", open=False, elem_id=elem_id("settings")):
                    with gr.Row():
                        add("rank", "alpha", "preset")
                    with gr.Row():
                        add("iterations", "lr")
                    with gr.Row():
                        add("resolution", "batch_size", "seed")
                    with gr.Row():
                        add("precision", "gradient_checkpointing")
                    with gr.Row():
                        add("alpha_low", "alpha_high", "default_start", "estimate_start", "train_from_start")
                    with gr.Row():
                        add("train_among")
                        refresh = ToolButton(value=refresh_symbol, elem_id=elem_id("train_among_refresh"),
                                             tooltip="Rescan slider folders")
                    add("advanced")
                with gr.Accordion("Presets", open=False, elem_id=elem_id("presets")):
                    with gr.Row():
                        save = gr.Button("Save settings as JSON", elem_id=elem_id("preset_save"))
                    download = gr.File(label="Preset", interactive=False, elem_id=elem_id("preset_download"))
                    upload = gr.File(label="Load a preset or import a config (.json, prompts.yaml, ai-toolkit .yaml)",
                                     file_types=[".json", ".yaml", ".yml"], elem_id=elem_id("preset_load"))
                    preset_notes = gr.HTML(value="", elem_id=elem_id("preset_notes"))
                with gr.Row():
                    add("overwrite", "preview")
                with gr.Row():
                    start = gr.Button("Start training", variant="primary", elem_id=elem_id("start"))
                    cancel = gr.Button("Cancel", elem_id=elem_id("cancel"))
                    resume = gr.Button("Resume", elem_id=elem_id("resume"))
                status = gr.HTML(value="", elem_id=elem_id("status"))
            with gr.Column(elem_id=elem_id("output")):
                task_id = gr.Textbox(value="", visible=False, elem_id=elem_id("task_id"))
                gr.HTML(value="", elem_id=elem_id("progressbar"))  # the progress bar goes above this
                gr.HTML(value="", elem_id=elem_id("progress"))  # progress.textinfo, written by the JS
                preview = gr.Image(label="Preview", type="filepath", interactive=False, elem_id=elem_id("preview_image"))
                result = gr.HTML(value="", elem_id=elem_id("result"))

        form = [widgets[name] for name in FIELD_NAMES]
        inputs = [*form, before_files, after_files]
        widgets["mode"].change(fn=_mode_groups, inputs=[widgets["mode"]], outputs=[text_group, image_group],
                               show_progress=False)
        widgets["name"].blur(fn=tab.name_hint, inputs=[widgets["name"]], outputs=[name_hint], show_progress=False)
        for button, handler in ((start, tab.start), (resume, tab.resume)):
            # The wrapper appends its timing to the last output, so that is the result HTML.
            button.click(fn=call_queue.wrap_gradio_gpu_call(handler, extra_outputs=[gr.update(), gr.update()]),
                         _js="slidersStartTraining", inputs=[task_id, *inputs], outputs=[preview, status, result],
                         ).then(fn=None, _js="slidersRefreshCards")  # the new slider's card, on both tabs
        refresh.click(fn=tab.refresh_sliders, inputs=[widgets["train_among"]], outputs=[widgets["train_among"]],
                      show_progress=False)
        cancel.click(fn=tab.cancel, inputs=[], outputs=[status], show_progress=False)
        save.click(fn=tab.save_preset, inputs=inputs, outputs=[download, preset_notes], show_progress=False)
        upload.upload(fn=tab.load_preset, inputs=[upload], outputs=[*form, text_group, image_group, preset_notes],
                      show_progress=False)
    blocks.sliders_train_tab = tab  # for tests and other code that wants the handlers
    return blocks
