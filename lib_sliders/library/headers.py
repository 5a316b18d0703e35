"""A slider file's header, read without reading its tensors: the safetensors ``__metadata__`` (with the layout
checked, so a truncated download is caught), or the two magic bytes of a pickle (``.pt``/``.ckpt``/``.bin``)."""

from __future__ import annotations

import json
import os

from ..errors import SliderFileError

# A real header (even with kohya's ss_tag_frequency) is far smaller; a bigger one is damage or not safetensors.
MAX_HEADER_SIZE = 100 * 1024 * 1024


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


def check_pickle_magic(path: str) -> None:
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
