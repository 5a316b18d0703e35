"""An image slider's uploaded before/after images: copied to ``<sliders dir>/.training/uploads/<name>/`` and
paired by file stem (``stage_uploads``)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from typing import Any

from ..errors import SliderError
from ..training.config import ImagePair
from ..training.pairs import IMAGE_SUFFIXES, match_pairs
from ..training.slider_names import name_problem
from .train_jobs import STATE_FOLDER, SubmitError

UPLOADS_FOLDER = "uploads"


def uploads_folder(sliders_dir: str, name: str) -> str:
    return os.path.join(sliders_dir, STATE_FOLDER, UPLOADS_FOLDER, name)


def upload_path(item: Any) -> tuple[str, str]:
    """(path on disk, original file name) of a gradio upload (a tempfile wrapper), a dict or a path."""
    if isinstance(item, Mapping):
        path = item.get("name") or item.get("path") or ""
        return str(path), os.path.basename(str(item.get("orig_name") or path))
    if isinstance(item, (str, os.PathLike)):
        return str(item), os.path.basename(str(item))
    path = str(getattr(item, "name", ""))
    return path, os.path.basename(str(getattr(item, "orig_name", None) or path))


def _copy_uploads(files: list, folder: str, side: str) -> None:
    names: dict[str, str] = {}
    sources = []
    for item in files:
        path, original = upload_path(item)
        stem, suffix = os.path.splitext(original)
        if suffix.lower() not in IMAGE_SUFFIXES:
            raise SubmitError([("pairs", f"{side} upload {original!r} is not an image ({', '.join(IMAGE_SUFFIXES)})")])
        if stem.lower() in names:
            raise SubmitError([("pairs", f"two {side} uploads named {stem!r} ({names[stem.lower()]}, {original})")])
        names[stem.lower()] = original
        sources.append((path, original))
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder, exist_ok=True)
    for path, original in sources:
        shutil.copyfile(path, os.path.join(folder, original))


def stage_uploads(sliders_dir: str, name: str, before_files, after_files) -> list[ImagePair]:
    """Copy uploaded before/after images to ``<sliders dir>/.training/uploads/<name>/{before,after}/`` (each
    side replaced as a whole) and pair them by file stem. Nothing uploaded: no pairs, nothing touched."""
    before_files, after_files = list(before_files or []), list(after_files or [])
    if not before_files and not after_files:
        return []
    if not before_files or not after_files:
        missing = "before" if not before_files else "after"
        raise SubmitError([("pairs", f"upload the {missing} images too (pairs match by file name)")])
    name = str(name or "").strip()
    if problem := name_problem(name):
        raise SubmitError([("name", f"{problem} (uploads are kept in a folder of that name)")])
    root = uploads_folder(sliders_dir, name)
    try:
        _copy_uploads(before_files, os.path.join(root, "before"), "before")
        _copy_uploads(after_files, os.path.join(root, "after"), "after")
        return match_pairs(os.path.join(root, "before"), os.path.join(root, "after"))
    except OSError as err:
        raise SubmitError([("pairs", f"couldn't copy the uploads to {root}: {err}")]) from None
    except SliderError as err:
        if isinstance(err, SubmitError):
            raise
        raise SubmitError([("pairs", f"uploaded images: {err}")]) from None
