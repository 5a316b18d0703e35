"""``SliderLibrary``: the installed sliders by name, from a scan of the slider folders and the Lora folders.

* Slider folders: every ``.safetensors``/``.pt``/``.ckpt``/``.bin`` file (``slider_file.SUFFIXES``), recursively.
* Lora folders: only ``.safetensors`` files whose header has a ``sliders.*`` key (files we wrote); other
  LoRAs belong to the webui's Lora page.
* Hidden files and folders (``.name``) and our own temp files (``*.tmp``) are skipped. A scan reads only
  safetensors JSON headers (and 2 magic bytes of pickles), never tensors; damaged files are left out with
  one logged warning (again only if the file changes).

Names are the file stems, made unique as ``folder_scan`` says. They come from prompts and are only ever looked
up in the table the scan built; they are never joined into a path, so ``../x`` or an absolute path can't reach
a file outside the scanned folders.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG
from typing import Any

import torch

from ..errors import SliderError, SliderFileError
from ..files.arch import arch_from_metadata
from ..files.lora import SliderNetwork
from ..files.metadata import slider_info
from ..files.slider_file import PICKLE_SUFFIXES, SUFFIXES, load_slider
from .folder_scan import FoundFile, unique_names, walk_files
from .headers import check_pickle_magic, read_safetensors_metadata
from .short_hash import compute_short_hash

logger = logging.getLogger(__name__)

SLIDER_KEY_PREFIX = "sliders."

# (path, st_mtime_ns, st_size): what tells us a file changed.
StatKey = tuple[str, int, int]


@dataclass(frozen=True)
class SliderEntry:
    """One slider file found by ``refresh()``.

    metadata: the safetensors header metadata as of the scan (``{}`` for pickles); alias: ``ss_output_name``.
    """

    name: str
    path: str
    mtime: float
    size: int
    metadata: dict[str, str]
    alias: str | None


def _stat_key(path: str) -> StatKey:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        raise SliderFileError(path, "file not found") from None
    except OSError as error:
        raise SliderFileError(path, f"cannot read: {error.strerror or error}") from None
    return path, stat.st_mtime_ns, stat.st_size


class SliderLibrary:
    """The sliders in ``slider_dirs`` (all slider/LoRA files) and ``lora_dirs`` (slider-tagged safetensors).

    Thread-safe: the webui calls it from the UI, API and generation threads. The first query scans if
    ``refresh()`` was never called; later changes on disk show up on the next ``refresh()``, except that
    ``load``/``short_hash`` always notice a changed file (their caches are keyed by mtime and size).
    """

    def __init__(self, slider_dirs: Sequence[str], lora_dirs: Sequence[str] = (), include_lora_sliders: bool = True,
                 cache_size: int = 8) -> None:
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, not {cache_size}")
        self.slider_dirs = [str(d) for d in slider_dirs]
        self.lora_dirs = [str(d) for d in lora_dirs]
        self.include_lora_sliders = include_lora_sliders
        self.cache_size = cache_size
        self._lock = threading.RLock()  # guards every table below
        self._refresh_lock = threading.Lock()  # one scan at a time; queries aren't blocked meanwhile
        self._scanned = False
        self._entries: dict[str, SliderEntry] = {}
        self._aliases: dict[str, SliderEntry] = {}
        self._folded: dict[str, SliderEntry] = {}
        # Per-file scan results, reused while a file is unchanged: its metadata, or None (skip it).
        self._headers: dict[str, tuple[StatKey, dict[str, str] | None]] = {}
        self._networks: OrderedDict[tuple[StatKey, str], SliderNetwork] = OrderedDict()
        self._hashes: dict[StatKey, str] = {}
        self._file_locks: dict[str, threading.Lock] = {}

    # ------------------------------------------------------------------ scan

    def refresh(self) -> None:
        """Rescan the folders. Reads only headers, and only of new or changed files."""
        with self._refresh_lock:
            with self._lock:
                previous = dict(self._headers)
            headers: dict[str, tuple[StatKey, dict[str, str] | None]] = {}
            found: list[FoundFile] = []
            seen: set[str] = set()
            roots = [(d, False) for d in self.slider_dirs]
            if self.include_lora_sliders:
                roots += [(d, True) for d in self.lora_dirs]
            for index, (root, lora_root) in enumerate(roots):
                if not os.path.isdir(root):
                    logger.debug("Concept Sliders: folder %s does not exist", root)
                    continue
                label = os.path.basename(os.path.normpath(root)) or root
                for path, rel in walk_files(os.path.abspath(root)):
                    item = self._scan_file(index, label, path, rel, lora_root, seen, previous, headers)
                    if item is not None:
                        found.append(item)
            found.sort(key=FoundFile.priority)
            entries = [
                SliderEntry(name=name, path=item.path, mtime=item.mtime, size=item.size, metadata=item.metadata,
                            alias=item.metadata.get("ss_output_name") or None)
                for name, item in zip(unique_names(found), found, strict=True)
            ]
            self._install(entries, headers)

    def _scan_file(self, index: int, label: str, path: str, rel: str, lora_root: bool, seen: set[str],
                   previous: dict[str, tuple[StatKey, dict[str, str] | None]],
                   headers: dict[str, tuple[StatKey, dict[str, str] | None]]) -> FoundFile | None:
        suffix = Path(path).suffix.lower()
        if suffix not in ((".safetensors",) if lora_root else SUFFIXES):
            return None
        real = os.path.realpath(path)
        if real in seen:  # a sliders folder inside a Lora folder, a linked file, a folder given twice
            return None
        try:
            stat = os.stat(path)
        except OSError as error:
            logger.warning("Concept Sliders: skipping %s: %s", path, error.strerror or error)
            return None
        if not S_ISREG(stat.st_mode):
            return None
        seen.add(real)
        key: StatKey = (path, stat.st_mtime_ns, stat.st_size)
        cached = previous.get(path)
        if cached is not None and cached[0] == key:
            metadata = cached[1]
        else:
            metadata = self._read_metadata(path, suffix)
            if metadata is not None and lora_root and not any(k.startswith(SLIDER_KEY_PREFIX) for k in metadata):
                metadata = None  # an ordinary LoRA: remember only that it isn't ours
        headers[path] = (key, metadata)
        if metadata is None:
            return None
        return FoundFile(index, label, rel, path, stat.st_mtime, stat.st_size, metadata)

    @staticmethod
    def _read_metadata(path: str, suffix: str) -> dict[str, str] | None:
        """The header metadata, or None (with a warning) when the file is damaged or unreadable."""
        try:
            if suffix in PICKLE_SUFFIXES:
                check_pickle_magic(path)
                return {}
            return read_safetensors_metadata(path)
        except SliderFileError as error:
            logger.warning("Concept Sliders: skipping %s", error)
            return None

    def _install(self, entries: list[SliderEntry], headers: dict) -> None:
        by_name = {entry.name: entry for entry in entries}
        aliases: dict[str, SliderEntry] = {}
        folded: dict[str, SliderEntry] = {}
        for entry in entries:  # priority order: the first alias/folded name wins
            if entry.alias:
                aliases.setdefault(entry.alias, entry)
            folded.setdefault(entry.name.casefold(), entry)
        with self._lock:
            self._entries, self._aliases, self._folded = by_name, aliases, folded
            self._headers = headers
            self._scanned = True
            paths = {entry.path for entry in entries}
            # Forget caches of files that are gone (they would never be hit again).
            for key in [k for k in self._networks if k[0][0] not in paths]:
                del self._networks[key]
            self._hashes = {k: v for k, v in self._hashes.items() if k[0] in paths}
            self._file_locks = {p: lock for p, lock in self._file_locks.items() if p in paths}

    def _ensure_scanned(self) -> None:
        with self._lock:
            scanned = self._scanned
        if not scanned:
            self.refresh()

    # ------------------------------------------------------------------ lookup

    def names(self) -> list[str]:
        """All slider names, sorted case-insensitively."""
        self._ensure_scanned()
        with self._lock:
            return sorted(self._entries, key=lambda name: (name.casefold(), name))

    def entries(self) -> list[SliderEntry]:
        """All entries, in ``names()`` order."""
        self._ensure_scanned()
        with self._lock:
            return [self._entries[name] for name in sorted(self._entries, key=lambda n: (n.casefold(), n))]

    def get(self, name: str) -> SliderEntry | None:
        """The entry called ``name``: by exact name, then by alias (``ss_output_name``), then ignoring case.

        Only entries the scan found are returned; ``name`` is never used as a path.
        """
        if not isinstance(name, str) or not name:
            return None
        self._ensure_scanned()
        with self._lock:
            return self._entries.get(name) or self._aliases.get(name) or self._folded.get(name.casefold())

    def _require(self, name: str) -> SliderEntry:
        entry = self.get(name)
        if entry is None:
            raise SliderError(f"slider {name!r} not found")
        return entry

    # ------------------------------------------------------------------ load and hash

    def _file_lock(self, path: str) -> threading.Lock:
        with self._lock:
            return self._file_locks.setdefault(path, threading.Lock())

    def load(self, name: str) -> SliderNetwork:
        """The slider called ``name``, from an LRU cache while its file is unchanged.

        The returned network is shared with the cache: don't modify it. Raises ``SliderError`` for an unknown
        name and ``SliderFileError`` (naming the file) when the file can't be read.
        """
        entry = self._require(name)
        # The file's current stat, not the scan's: a file rewritten since the last refresh reloads.
        key = (_stat_key(entry.path), entry.name)
        with self._lock:
            network = self._networks.get(key)
            if network is not None:
                self._networks.move_to_end(key)
                return network
        # Only one thread reads a given file; others wait for it and then hit the cache. Other files and
        # lookups aren't blocked meanwhile.
        with self._file_lock(entry.path):
            with self._lock:
                network = self._networks.get(key)
            if network is None:
                # Normal tensors even when asked inside torch.inference_mode() (Forge runs its jobs in it): the
                # cache outlives the job, and training (a slider trained among others) needs tensors autograd takes.
                with torch.inference_mode(False):
                    network = load_slider(entry.path, name=entry.name)
                if _stat_key(entry.path) != key[0]:  # changed while we read it: don't cache a mix
                    return network
                with self._lock:
                    self._remember(key, network)
            return network

    def _remember(self, key: tuple[StatKey, str], network: SliderNetwork) -> None:
        if self.cache_size == 0:
            return
        # Drop older versions of the same file first: they can't be hit again.
        for old in [k for k in self._networks if k[0][0] == key[0][0] and k != key]:
            del self._networks[old]
        self._networks[key] = network
        self._networks.move_to_end(key)
        while len(self._networks) > self.cache_size:
            self._networks.popitem(last=False)

    def short_hash(self, name: str) -> str:
        """The 12-hex short hash A1111 shows for LoRAs: ``sshs_model_hash[:12]``, else computed like kohya/AddNet."""
        entry = self._require(name)
        key = _stat_key(entry.path)
        with self._lock:
            cached = self._hashes.get(key)
        if cached is not None:
            return cached
        with self._file_lock(entry.path):  # hashing a big file once, not once per thread
            with self._lock:
                cached = self._hashes.get(key)
            if cached is None:
                cached = compute_short_hash(entry.path)
                with self._lock:
                    for old in [k for k in self._hashes if k[0] == entry.path]:
                        del self._hashes[old]
                    self._hashes[key] = cached
            return cached

    def name_for_hash(self, short: str) -> str | None:
        """The name of the slider whose ``short_hash`` is ``short`` (any case), or None.

        Hashes already known are tried first; the others are computed (and cached) only when needed.
        """
        wanted = str(short).strip().lower()
        if not wanted:
            return None
        entries = self.entries()
        with self._lock:
            known = {key[0]: value for key, value in self._hashes.items()}
        for entry in sorted(entries, key=lambda e: e.path not in known):
            try:
                if self.short_hash(entry.name) == wanted:
                    return entry.name
            except SliderError:
                continue  # an unreadable file has no hash; the scan already reported it
        return None

    def info(self, name: str) -> dict[str, Any]:
        """What the UI shows about a slider, from its header as of the last refresh."""
        entry = self._require(name)
        metadata = entry.metadata
        parsed = slider_info(metadata)
        description = metadata.get("ssmd_description") or metadata.get("modelspec.description") or None
        return {
            "name": entry.name,
            "alias": entry.alias,
            "path": entry.path,
            "alpha_range": parsed.alpha_range,
            "default_start": parsed.default_start,
            "description": description,
            "arch": arch_from_metadata(metadata),
        }
