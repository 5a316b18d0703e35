"""Extra Networks pages: the base class an extension's card page derives from, and the page registry.

An item dict needs ``name, filename, prompt, local_preview``; ``prompt`` is a JavaScript expression (build
it with ``quote_js``) and ``onclick``, when given, replaces the stock ``cardClicked(...)`` handler. The
double renders no HTML; ``card_onclick`` shows what a card's ``onclick`` attribute would hold.
"""

from __future__ import annotations

import html
import os
import urllib.parse
from pathlib import Path

from modules import extra_networks, shared, ui_extra_networks_user_metadata

extra_pages = []
allowed_dirs = set()
default_allowed_preview_extensions = ["png", "jpg", "jpeg", "webp", "gif"]


def allowed_preview_extensions():
    return {*default_allowed_preview_extensions, shared.opts.samples_format}


def register_page(page):
    """Recommended from an ``on_before_ui`` callback."""
    extra_pages.append(page)
    allowed_dirs.clear()
    allowed_dirs.update(d for page_ in extra_pages for d in page_.allowed_directories_for_previews())


def quote_js(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def initialize():
    extra_pages.clear()


class ExtraNetworksPage:
    def __init__(self, title):
        self.title = title
        self.name = title.lower()
        self.extra_networks_tabname = self.name.replace(" ", "_")
        self.allow_prompt = True
        self.allow_negative_prompt = False
        self.metadata = {}
        self.items = {}

    def refresh(self):
        pass

    def read_user_metadata(self, item, use_cache=True):
        metadata = extra_networks.get_user_metadata(item.get("filename"))
        if metadata.get("description") is not None:
            item["description"] = metadata["description"]
        item["user_metadata"] = metadata

    def link_preview(self, filename):
        quoted = urllib.parse.quote(filename.replace("\\", "/"))
        return f"./sd_extra_networks/thumb?filename={quoted}&mtime={os.path.getmtime(filename)}"

    def search_terms_from_path(self, filename, possible_directories=None):
        absolute = os.path.abspath(filename)
        for folder in possible_directories if possible_directories is not None else self.allowed_directories_for_previews():
            parent = os.path.dirname(os.path.abspath(folder))
            if absolute.startswith(parent):
                return os.path.relpath(absolute, parent)
        return ""

    def create_item(self, name, index=None):
        raise NotImplementedError

    def list_items(self):
        raise NotImplementedError

    def allowed_directories_for_previews(self):
        return []

    def get_sort_keys(self, path):
        stat = os.stat(path)
        return {"date_created": int(stat.st_mtime), "date_modified": int(stat.st_ctime),
                "name": Path(path).name.lower(), "path": str(Path(path)).lower()}

    def find_preview(self, path):
        for ext in sorted(allowed_preview_extensions()):
            for candidate in (f"{path}.{ext}", f"{path}.preview.{ext}"):
                if os.path.exists(candidate):
                    return self.link_preview(candidate)
        return None

    def find_description(self, path):
        for candidate in (f"{path}.txt", f"{path}.description.txt"):
            try:
                with open(candidate, encoding="utf-8", errors="replace") as file:
                    return file.read()
            except OSError:
                continue
        return None

    def create_user_metadata_editor(self, ui, tabname):
        return ui_extra_networks_user_metadata.UserMetadataEditor(ui, tabname, self)

    def refresh_items(self):
        """What the webui does when it builds the page: ``self.items`` = name → item of ``list_items()``."""
        self.items = {item["name"]: item for item in self.list_items()}
        return self.items

    def card_onclick(self, tabname, item):
        onclick = item.get("onclick")
        if onclick is None:
            onclick = html.escape(f"cardClicked('{tabname}', {item['prompt']}, "
                                  f"{item.get('negative_prompt', repr(''))}, "
                                  f"{str(self.allow_negative_prompt).lower()});")
        return onclick
