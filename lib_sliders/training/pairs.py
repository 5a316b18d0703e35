"""Before/after image pairs for image sliders, matched by file name across two folders.

The official layout keeps the "low" and "high" images of a pair under the same file name in two
folders; we match on the name without its extension (so ``03.png`` pairs with ``03.jpg``), ignoring case.
"""

from __future__ import annotations

import os

from ..errors import SliderError
from .config import ImagePair

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def _images_by_stem(folder: str) -> dict[str, str]:
    if not os.path.isdir(folder):
        raise SliderError(f"{folder}: not a folder")
    found: dict[str, str] = {}
    for entry in sorted(os.listdir(folder)):
        stem, suffix = os.path.splitext(entry)
        if suffix.lower() in IMAGE_SUFFIXES and not entry.startswith("."):
            key = stem.lower()
            if key in found:
                raise SliderError(f"{folder}: two images named {stem!r} ({os.path.basename(found[key])}, {entry})")
            found[key] = os.path.join(folder, entry)
    return found


def match_pairs(before_folder: str, after_folder: str) -> list[ImagePair]:
    """One pair per file name present in both folders; names present in only one are an error that lists them."""
    before, after = _images_by_stem(before_folder), _images_by_stem(after_folder)
    unmatched = sorted(set(before) ^ set(after))
    if unmatched:
        shown = ", ".join(os.path.basename((before | after)[name]) for name in unmatched[:5])
        more = f" and {len(unmatched) - 5} more" if len(unmatched) > 5 else ""
        raise SliderError(f"{before_folder} / {after_folder}: images without a partner: {shown}{more}")
    if not before:
        raise SliderError(f"{before_folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return [ImagePair(before=before[name], after=after[name]) for name in sorted(before)]
