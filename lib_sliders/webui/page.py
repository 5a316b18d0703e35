"""The "Sliders" tab of the Extra Networks page: one card per installed slider.

A click inserts ``<slider:name:α>`` and a second click removes it, whatever its α (the stock card script's
regex only removes positive weights), through ``slidersCardClicked`` in ``javascript/sliders.js``. The card's
editor edits the description, recommended α range and default start; they are kept in the webui's
``<file>.json`` user metadata (the slider file itself is never rewritten).
"""

from __future__ import annotations

import html
import json
import os

import gradio as gr
from modules import shared, ui_extra_networks, ui_extra_networks_user_metadata

from ..files.metadata import DEFAULT_ALPHA_RANGE
from ..library.slider_library import SliderLibrary
from ..prompt.prompt_tags import format_number
from .user_metadata import ALPHA_RANGE_KEY, DEFAULT_START_KEY, merged_info


class ExtraNetworksPageSliders(ui_extra_networks.ExtraNetworksPage):
    def __init__(self, library, slider_dirs, default_alpha):
        super().__init__("Sliders")
        self._library = library  # callable → SliderLibrary (settings may rebuild it)
        self._slider_dirs = slider_dirs
        self._default_alpha = default_alpha

    @property
    def library(self) -> SliderLibrary:
        return self._library()

    def refresh(self):
        self.library.refresh()

    def create_item(self, name, index=None, enable_filter=True):
        entry = self.library.get(name)
        if entry is None:
            return None
        path, _ = os.path.splitext(entry.path)
        item = {
            "name": name,
            "filename": entry.path,
            "preview": self.find_preview(path),
            "description": self.find_description(path),
            "search_terms": [self.search_terms_from_path(entry.path)],
            "local_preview": f"{path}.{shared.opts.samples_format}",
            "metadata": entry.metadata,
            "sort_keys": {"default": index, **self.get_sort_keys(entry.path)},
        }
        self.read_user_metadata(item)
        info = merged_info(self.library.info(name), item.get("user_metadata") or {})
        if info.get("description") and not item.get("description"):
            item["description"] = info["description"]
        low, high = info["alpha_range"]
        alpha = self._default_alpha()
        item["prompt"] = ui_extra_networks.quote_js(f"<slider:{name}:{format_number(alpha)}>")
        item["search_terms"].append(f"α {format_number(low)}..{format_number(high)}")
        # Our own click handler: the stock one can't remove a tag whose α is negative.
        item["onclick"] = html.escape(
            f"return slidersCardClicked(event, {json.dumps(name)}, {json.dumps(format_number(alpha))})"
        )
        return item

    def list_items(self):
        for index, name in enumerate(list(self.library.names())):
            item = self.create_item(name, index)
            if item is not None:
                yield item

    def allowed_directories_for_previews(self):
        return list(self._slider_dirs())

    def create_user_metadata_editor(self, ui, tabname):
        return SliderUserMetadataEditor(ui, tabname, self)


class SliderUserMetadataEditor(ui_extra_networks_user_metadata.UserMetadataEditor):
    def create_extra_default_items_in_left_column(self):
        with gr.Row():
            self.edit_alpha_low = gr.Number(label="Recommended α from", value=DEFAULT_ALPHA_RANGE[0])
            self.edit_alpha_high = gr.Number(label="Recommended α to", value=DEFAULT_ALPHA_RANGE[1])
            self.edit_default_start = gr.Slider(label="Default start", minimum=0, maximum=1, step=0.05, value=0)

    def create_editor(self):
        self.create_default_editor_elems()
        self.edit_notes = gr.TextArea(label="Notes", lines=4)
        self.create_default_buttons()
        viewed = [self.edit_name, self.edit_description, self.html_filedata, self.html_preview, self.edit_notes,
                  self.edit_alpha_low, self.edit_alpha_high, self.edit_default_start]
        self.button_edit.click(fn=self.put_values_into_components, inputs=[self.edit_name_input], outputs=viewed) \
            .then(fn=lambda: gr.update(visible=True), inputs=[], outputs=[self.box])
        edited = [self.edit_description, self.edit_notes, self.edit_alpha_low, self.edit_alpha_high,
                  self.edit_default_start]
        self.setup_save_handler(self.button_save, self.save_user_metadata, edited)

    def put_values_into_components(self, name):
        values = super().put_values_into_components(name)
        info = merged_info(self.page.library.info(name), self.get_user_metadata(name))
        low, high = info["alpha_range"]
        return [*values[0:5], low, high, info["default_start"]]

    def save_user_metadata(self, name, description, notes, alpha_low, alpha_high, default_start):
        metadata = self.get_user_metadata(name)
        metadata["description"] = description
        metadata["notes"] = notes
        if alpha_low is not None and alpha_high is not None and float(alpha_low) < float(alpha_high):
            metadata[ALPHA_RANGE_KEY] = [float(alpha_low), float(alpha_high)]
        metadata[DEFAULT_START_KEY] = float(default_start)
        self.write_user_metadata(name, metadata)
