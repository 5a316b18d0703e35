"""The card editor ("Edit user metadata"): a popup whose values are kept in ``<file stem>.json``."""

from __future__ import annotations

import html
import json
import os

import gradio as gr


class UserMetadataEditor:
    def __init__(self, ui, tabname, page):
        self.ui = ui
        self.tabname = tabname
        self.page = page
        self.id_part = f"{self.tabname}_{self.page.extra_networks_tabname}_edit_user_metadata"
        self.box = None
        self.edit_name_input = None
        self.button_edit = None
        self.edit_name = None
        self.edit_description = None
        self.edit_notes = None
        self.html_filedata = None
        self.html_preview = None
        self.html_status = None
        self.button_cancel = None
        self.button_replace_preview = None
        self.button_save = None

    def get_user_metadata(self, name):
        item = self.page.items.get(name, {})
        user_metadata = item.get("user_metadata", None)
        if not user_metadata:
            user_metadata = {"description": item.get("description", "")}
            item["user_metadata"] = user_metadata
        return user_metadata

    def create_extra_default_items_in_left_column(self):
        pass

    def create_default_editor_elems(self):
        with gr.Row():
            with gr.Column(scale=2):
                self.edit_name = gr.HTML(elem_classes="extra-network-name")
                self.edit_description = gr.Textbox(label="Description", lines=4)
                self.html_filedata = gr.HTML()
                self.create_extra_default_items_in_left_column()
            with gr.Column(scale=1, min_width=0):
                self.html_preview = gr.HTML()

    def create_default_buttons(self):
        with gr.Row(elem_classes="edit-user-metadata-buttons"):
            self.button_cancel = gr.Button("Cancel")
            self.button_replace_preview = gr.Button("Replace preview", variant="primary")
            self.button_save = gr.Button("Save", variant="primary")
        self.html_status = gr.HTML(elem_classes="edit-user-metadata-status")
        self.button_cancel.click(fn=None, _js="closePopup")

    def get_card_html(self, name):
        return ""  # the card's HTML; the double renders none

    def get_metadata_table(self, name):
        item = self.page.items.get(name, {})
        try:
            stat = os.stat(item["filename"])
        except (KeyError, OSError):
            return []
        return [("Filename: ", os.path.basename(item["filename"])), ("File size: ", f"{stat.st_size} B"),
                ("Hash: ", item.get("shorthash"))]

    def put_values_into_components(self, name):
        """(name HTML, description, file table HTML, card HTML, notes) for the editor's widgets."""
        user_metadata = self.get_user_metadata(name)
        rows = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in self.get_metadata_table(name) if v is not None)
        return (html.escape(name), user_metadata.get("description", ""), f'<table class="file-metadata">{rows}</table>',
                self.get_card_html(name), user_metadata.get("notes", ""))

    def write_user_metadata(self, name, metadata):
        filename = self.page.items.get(name, {}).get("filename")
        with open(os.path.splitext(filename)[0] + ".json", "w", encoding="utf8") as file:
            json.dump(metadata, file, indent=4, ensure_ascii=False)

    def save_user_metadata(self, name, desc, notes):
        user_metadata = self.get_user_metadata(name)
        user_metadata["description"] = desc
        user_metadata["notes"] = notes
        self.write_user_metadata(name, user_metadata)

    def setup_save_handler(self, button, func, components):
        button.click(fn=func, inputs=[self.edit_name_input, *components], outputs=[]).then(
            fn=None, _js="function(name){closePopup(); extraNetworksRefreshSingleCard("
                         + json.dumps(self.page.name) + "," + json.dumps(self.tabname) + ", name);}",
            inputs=[self.edit_name_input], outputs=[])

    def create_editor(self):
        self.create_default_editor_elems()
        self.edit_notes = gr.TextArea(label="Notes", lines=4)
        self.create_default_buttons()
        self.button_edit.click(fn=self.put_values_into_components, inputs=[self.edit_name_input],
                               outputs=[self.edit_name, self.edit_description, self.html_filedata,
                                        self.html_preview, self.edit_notes]
                               ).then(fn=lambda: gr.update(visible=True), inputs=[], outputs=[self.box])
        self.setup_save_handler(self.button_save, self.save_user_metadata, [self.edit_description, self.edit_notes])

    def create_ui(self):
        with gr.Box(visible=False, elem_id=self.id_part, elem_classes="edit-user-metadata") as box:
            self.box = box
            self.edit_name_input = gr.Textbox("Edit user metadata card id", visible=False,
                                              elem_id=f"{self.id_part}_name")
            self.button_edit = gr.Button("Edit user metadata", visible=False, elem_id=f"{self.id_part}_button")
            self.create_editor()
