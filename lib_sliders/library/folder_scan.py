"""Walking the slider folders and naming what is found.

The walk skips hidden files and folders (``.name``) and our own temp files (``*.tmp``), follows links but
never visits a folder twice, and yields files in sorted order.

Names (``SliderEntry.name``): the file stem. When several files share a stem (case-insensitively), the
file first in priority order (slider folders before Lora folders, in the order given; then shallower
before deeper; then by relative path, ``.safetensors`` before pickles) keeps the bare stem, and each
other one gets the first free one of:

1. its path relative to its folder root, without the suffix: ``sub/age``;
2. with the suffix, when the same root has that path with another suffix: ``sub/age.pt``;
3. prefixed by the root folder's own name: ``Lora/sub/age`` (then ``Lora/sub/age.pt``);
4. that, numbered: ``Lora/sub/age.pt~2``, ``~3``, ...

So names are stable while the set of files stays the same; adding a file can rename another one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..files.slider_file import SUFFIXES

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FoundFile:
    """A file the walk found, before naming."""

    root_index: int
    root_label: str
    rel: str  # posix path relative to its root, with suffix
    path: str
    mtime: float
    size: int
    metadata: dict[str, str]

    @property
    def rel_stem(self) -> str:
        return self.rel[: -len(Path(self.rel).suffix)]

    @property
    def stem(self) -> str:
        return Path(self.rel).stem

    def priority(self) -> tuple:
        suffix_rank = SUFFIXES.index(Path(self.rel).suffix.lower())
        return (self.root_index, self.rel.count("/"), self.rel_stem.casefold(), suffix_rank, self.rel.casefold(), self.rel)


def _skipped(name: str) -> bool:
    return name.startswith(".") or name.lower().endswith(".tmp")


def walk_files(root: str) -> Iterable[tuple[str, str]]:
    """``(absolute path, posix path relative to root)`` of the visible files under ``root``, sorted."""
    seen_dirs: set[str] = set()

    def on_error(error: OSError) -> None:
        logger.warning("Concept Sliders: cannot list folder %s: %s", error.filename, error.strerror or error)

    for folder, dirs, files in os.walk(root, onerror=on_error, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen_dirs:  # a symlink loop or a folder linked twice
            dirs[:] = []
            continue
        seen_dirs.add(real)
        dirs[:] = sorted(d for d in dirs if not _skipped(d))
        for name in sorted(files):
            if _skipped(name):
                continue
            path = os.path.join(folder, name)
            yield path, Path(os.path.relpath(path, root)).as_posix()


def unique_names(found: Sequence[FoundFile]) -> list[str]:
    """Names for ``found`` (already in priority order), following the rule in the module docstring."""
    per_root = {}
    for item in found:
        key = (item.root_index, item.rel_stem.casefold())
        per_root[key] = per_root.get(key, 0) + 1
    used: set[str] = set()
    names = []
    for item in found:
        candidates = [item.stem, item.rel_stem]
        if per_root[item.root_index, item.rel_stem.casefold()] > 1:
            candidates.append(item.rel)
        candidates += [f"{item.root_label}/{item.rel_stem}", f"{item.root_label}/{item.rel}"]
        name = next((c for c in candidates if c.casefold() not in used), None)
        number = 2
        while name is None or name.casefold() in used:
            name = f"{item.root_label}/{item.rel}~{number}"
            number += 1
        used.add(name.casefold())
        names.append(name)
    return names
