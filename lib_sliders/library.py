"""The installed sliders: a scan of the slider folders (and slider-tagged LoRAs in the Lora folders).

Webui-independent; the webui integration makes one ``SliderLibrary`` with the ``--sliders-dir`` folder and
the Lora folders and calls ``refresh()`` when the user asks for it.

* Slider folders: every ``.safetensors``/``.pt``/``.ckpt``/``.bin`` file (``slider_file.SUFFIXES``), recursively.
* Lora folders: only ``.safetensors`` files whose header has a ``sliders.*`` key (files we wrote); other
  LoRAs belong to the webui's Lora page.
* Hidden files and folders (``.name``) and our own temp files (``*.tmp``) are skipped. A scan reads only
  safetensors JSON headers (and 2 magic bytes of pickles), never tensors; damaged files are left out with
  one logged warning (again only if the file changes).

Names (``SliderEntry.name``): the file stem. When several files share a stem (case-insensitively), the
file first in priority order (slider folders before Lora folders, in the order given; then shallower
before deeper; then by relative path, ``.safetensors`` before pickles) keeps the bare stem, and each
other one gets the first free one of:

1. its path relative to its folder root, without the suffix: ``sub/age``;
2. with the suffix, when the same root has that path with another suffix: ``sub/age.pt``;
3. prefixed by the root folder's own name: ``Lora/sub/age`` (then ``Lora/sub/age.pt``);
4. that, numbered: ``Lora/sub/age.pt~2``, ``~3``, ...

So names are stable while the set of files stays the same; adding a file can rename another one.

Names come from prompts and are only ever looked up in the table the scan built; they are never joined
into a path, so ``../x`` or an absolute path can't reach a file outside the scanned folders.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG
from typing import Any

from .errors import SliderError, SliderFileError
from .files.arch import arch_from_metadata
from .files.lora import SliderNetwork
from .files.metadata import slider_info
from .files.slider_file import PICKLE_SUFFIXES, SUFFIXES, load_slider

logger = logging.getLogger(__name__)

# A real header (even with kohya's ss_tag_frequency) is far smaller; a bigger one is damage or not safetensors.
MAX_HEADER_SIZE = 100 * 1024 * 1024
SLIDER_KEY_PREFIX = "sliders."
_CHUNK = 1024 * 1024
_HASH_LENGTH = 12

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


# --------------------------------------------------------------------------- reading headers


def read_safetensors_metadata(path: str | os.PathLike, max_header_size: int = MAX_HEADER_SIZE) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file, reading only its JSON header (the first 8 bytes give its length).

    Checks what safetensors itself checks of the layout (a JSON object, string metadata, tensor data that ends
    exactly at the end of the file), so a truncated download is caught without reading any tensor.
    """
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            prefix = file.read(8)
            if len(prefix) < 8:
                raise SliderFileError(path, "file is too small to be a safetensors file")
            header_size = int.from_bytes(prefix, "little")
            if header_size < 2 or header_size > max_header_size:
                raise SliderFileError(path, f"not a safetensors file (header size {header_size})")
            if 8 + header_size > size:
                raise SliderFileError(path, "file is truncated (header runs past the end)")
            raw = file.read(header_size)
    except OSError as error:
        raise SliderFileError(path, f"cannot read: {error.strerror or error}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise SliderFileError(path, "not a safetensors file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise SliderFileError(path, "not a safetensors file (header is not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise SliderFileError(path, "damaged header: __metadata__ must map strings to strings")
    data_end = 0
    for key, info in header.items():
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
                and 0 <= offsets[0] <= offsets[1]):
            raise SliderFileError(path, f"damaged header: bad entry for tensor {key!r}")
        data_end = max(data_end, offsets[1])
    if data_end != size - 8 - header_size:
        raise SliderFileError(path, "file is truncated or damaged (tensor data doesn't match the file size)")
    return metadata


def _check_pickle_magic(path: str) -> None:
    """Cheap format check for .pt/.ckpt/.bin: torch.save's zip ("PK") or a pickle PROTO opcode."""
    try:
        with open(path, "rb") as file:
            magic = file.read(2)
    except OSError as error:
        raise SliderFileError(path, f"cannot read: {error.strerror or error}") from None
    if not magic:
        raise SliderFileError(path, "file is empty")
    if magic != b"PK" and magic[:1] != b"\x80":
        raise SliderFileError(path, "not a PyTorch checkpoint (unknown file format)")


def _is_safetensors(path: str) -> bool:
    return path.lower().endswith(".safetensors")


def _stat_key(path: str) -> StatKey:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        raise SliderFileError(path, "file not found") from None
    except OSError as error:
        raise SliderFileError(path, f"cannot read: {error.strerror or error}") from None
    return path, stat.st_mtime_ns, stat.st_size


def compute_short_hash(path: str) -> str:
    """What A1111's Lora page shows: ``sshs_model_hash`` or the AddNet hash (sha256 of the bytes after the
    safetensors header; of the whole file for pickles), first 12 hex digits."""
    if _is_safetensors(path):
        model_hash = read_safetensors_metadata(path).get("sshs_model_hash", "").strip().lower()
        if len(model_hash) >= _HASH_LENGTH and all(c in "0123456789abcdef" for c in model_hash):
            return model_hash[:_HASH_LENGTH]
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as file:
            if _is_safetensors(path):
                file.seek(8 + int.from_bytes(file.read(8), "little"))
            for chunk in iter(lambda: file.read(_CHUNK), b""):
                digest.update(chunk)
    except OSError as error:
        raise SliderFileError(path, f"cannot read: {error.strerror or error}") from None
    return digest.hexdigest()[:_HASH_LENGTH]


# --------------------------------------------------------------------------- scanning


@dataclass(frozen=True)
class _Found:
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


def _walk(root: str) -> Iterable[tuple[str, str]]:
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


def _unique_names(found: Sequence[_Found]) -> list[str]:
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


# --------------------------------------------------------------------------- the library


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
            found: list[_Found] = []
            seen: set[str] = set()
            roots = [(d, False) for d in self.slider_dirs]
            if self.include_lora_sliders:
                roots += [(d, True) for d in self.lora_dirs]
            for index, (root, lora_root) in enumerate(roots):
                if not os.path.isdir(root):
                    logger.debug("Concept Sliders: folder %s does not exist", root)
                    continue
                label = os.path.basename(os.path.normpath(root)) or root
                for path, rel in _walk(os.path.abspath(root)):
                    item = self._scan_file(index, label, path, rel, lora_root, seen, previous, headers)
                    if item is not None:
                        found.append(item)
            found.sort(key=_Found.priority)
            entries = [
                SliderEntry(name=name, path=item.path, mtime=item.mtime, size=item.size, metadata=item.metadata,
                            alias=item.metadata.get("ss_output_name") or None)
                for name, item in zip(_unique_names(found), found, strict=True)
            ]
            self._install(entries, headers)

    def _scan_file(self, index: int, label: str, path: str, rel: str, lora_root: bool, seen: set[str],
                   previous: dict[str, tuple[StatKey, dict[str, str] | None]],
                   headers: dict[str, tuple[StatKey, dict[str, str] | None]]) -> _Found | None:
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
        return _Found(index, label, rel, path, stat.st_mtime, stat.st_size, metadata)

    @staticmethod
    def _read_metadata(path: str, suffix: str) -> dict[str, str] | None:
        """The header metadata, or None (with a warning) when the file is damaged or unreadable."""
        try:
            if suffix in PICKLE_SUFFIXES:
                _check_pickle_magic(path)
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
